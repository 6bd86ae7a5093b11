"""Faults that must cost at most one call or one episode, never a batch, a file or the
machine (issues 13, 18, 19): unusable 200 answers, a strong model failing while it finishes
a solution, two runs on one output, an output written for another problem file, a full
disk, damaged trace files.  Endpoint faults run once per HTTP client."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys

import pytest
from fake_server import CORRUPTIONS, FakeServer, ScriptedStep

from trim_pomdp.cli import main
from trim_pomdp.errors import TraceFormatError
from trim_pomdp.routing.baselines import ThresholdPolicy
from trim_pomdp.serving import (
    CallableScorer,
    CompletionModel,
    EndpointConfig,
    GeneratedStep,
    MathAnswerChecker,
    OutputLockedError,
    OutputWriteError,
    Problem,
    ResumeMismatchError,
    TraceWriter,
    VLLMPRMScorer,
    problem_hash,
    read_finished,
    run_batch,
    run_episode,
)
from trim_pomdp.serving.http import HTTP_CLIENTS


@pytest.fixture(params=HTTP_CLIENTS)
def server(request):
    with FakeServer(default_score=0.9, n_steps=3) as srv:
        srv.http_client = request.param
        yield srv


def endpoints(srv, **kw):
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    kw.setdefault("http_client", getattr(srv, "http_client", "aiohttp"))

    def c(model):
        return EndpointConfig(base_url=srv.url + "/v1", model=model, **kw)

    return CompletionModel(c("cheap")), CompletionModel(c("strong")), VLLMPRMScorer(c("prm"))


def batch(srv, problems, factory=lambda: ThresholdPolicy(0.5), *, max_retries=3, **kw):
    cheap, strong, prm = endpoints(srv, max_retries=max_retries)
    kw.setdefault("progress", False)
    kw.setdefault("fsync", False)
    return asyncio.run(run_batch(problems, factory, cheap, strong, prm,
                                 checker=MathAnswerChecker(), **kw))


def problems(n, prefix="Problem"):
    return [Problem(f"q{i}", f"{prefix} {i}?", "42") for i in range(n)]


def write_problems(path, n, *, ids=True, prefix="Problem"):
    with path.open("w") as fh:
        for i in range(n):
            rec = {"problem": f"{prefix} {i}?", "answer": "42"}
            if ids:
                rec["id"] = f"p{i}"
            fh.write(json.dumps(rec) + "\n")


def argv(srv, probs, out, *extra):
    u = srv.url
    return ["route", "--problems", str(probs), "--cheap", f"{u}/v1/cheap",
            "--strong", f"{u}/v1/strong", "--prm", f"{u}/v1/prm", "--out", str(out),
            "--no-progress", "--backoff", "0.001", "--threshold", "0.5",
            "--http-client", getattr(srv, "http_client", "aiohttp"), *extra]


def records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def script_finishing(srv, text, n_strong=4):
    """The cheap model's first draft is final but scores low: TRIM-Thr(0.5) regenerates it,
    and the strong model, whose first step is not final, finishes the solution alone."""
    srv.add_solution("cheap", text, [ScriptedStep(f"{text} so \\boxed{{42}}", score=0.1)])
    srv.add_solution("strong", text, [ScriptedStep(f"{text} S{k}") for k in range(n_strong - 1)]
                     + [ScriptedStep(f"{text} S so \\boxed{{42}}")])


# ---- unusable 200 answers ----------------------------------------------------------------------


def test_truncated_bodies_are_retried_and_counted_in_the_summary(server, tmp_path):
    # issue 13: a proxy cutting 15 % of 200 bodies mid-JSON; each is retried like a 5xx
    server.fail(None, times=None, error="truncate", rate=0.15, seed=1)
    out = tmp_path / "t.jsonl"
    s = batch(server, problems(20), out=out)
    d = s.to_dict()
    n_truncated = sum(r.status == "truncate" for r in server.log)
    assert n_truncated > 10  # ~15 % of ~120 requests
    assert d["bad_responses"] == n_truncated
    assert sum(v["bad_responses"] for v in d["requests"].values()) == n_truncated
    assert set(d["requests"]) == {"cheap", "strong", "prm"}
    # a call fails for good only after 4 cut-off answers in a row (0.15^4 ~ 5e-4 a call,
    # ~6 % an episode here); that episode alone is an error, and the next run redoes it
    assert len(s.errors) <= 2 and s.n_done == 20 - len(s.errors)
    assert d["retries"] == n_truncated - len(s.errors)  # the last cut-off of each is not retried
    for e in s.errors:
        assert "failed after 4 attempts; last: HTTP 200 but returned a body that is not JSON" in (
            e.error)
    s2 = batch(server, problems(20), out=out)
    assert s2.n_done + s2.skipped == 20 and s2.errors == []
    assert sorted(r["id"] for r in records(out)) == sorted(p.id for p in problems(20))


def test_route_summary_counts_retried_unusable_answers(server, tmp_path, capsys):
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 2)
    server.fail("pooling", times=2, error="truncate")
    server.fail("completions", times=1, error=503)
    assert main(argv(server, probs, out)) == 0
    text = capsys.readouterr().out
    assert "requests retried 3 times (2 unusable 200 answers)" in text


def bad_value_failures(srv, rate, seed=0):
    """Each generation or pooling answer carries one bad value with probability ~rate."""
    gen = [k for k, (target, _) in CORRUPTIONS.items() if target == "generate"]
    pool = [k for k, (target, _) in CORRUPTIONS.items() if target == "pooling"]
    for names in (gen, pool):
        for i, name in enumerate(names):
            srv.fail(None, times=None, error=name, rate=rate / len(names), seed=seed + i)


def test_route_with_3_percent_bad_values_finishes_every_problem_in_two_runs(
    server, tmp_path, capsys
):
    # issue 19: one bad value in a 200 (tokens -5 or true, a lone surrogate, no choices, PRM
    # rows short or NaN, ...) stopped the whole batch; now it fails that call, retried
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 40)
    bad_value_failures(server, 0.03)
    runs = []
    for _ in range(2):
        rc = main(argv(server, probs, out, "--retries", "1", "--json"))
        runs.append((rc, json.loads(capsys.readouterr().out)))
        if rc == 0:
            break
    assert runs[-1][0] == 0
    assert sum(rep["bad_responses"] for _, rep in runs) >= 2  # the faults did happen
    assert sum(r.status in CORRUPTIONS for r in server.log) == sum(
        rep["bad_responses"] for _, rep in runs)
    recs = records(out)
    assert sorted(r["id"] for r in recs) == sorted(f"p{i}" for i in range(40))  # once each
    assert all(r["status"] == "done" for r in recs)
    for r in recs:
        for st in r["steps"]:
            assert isinstance(st["tokens"], int) and not isinstance(st["tokens"], bool)
            assert 0 <= st["tokens"] < 1000 and "\ud800" not in st["text"]
            assert st["prm_score"] is None or 0.0 <= st["prm_score"] <= 1.0


def test_a_bad_value_from_a_user_generator_fails_only_its_episode(tmp_path):
    # any StepGenerator's output is checked before it reaches the router or a trace
    class Gen:
        name = "mine"

        async def generate_step(self, problem, steps):
            tokens = -5 if "bad" in problem else 7
            return GeneratedStep("x \\boxed{42}", tokens, True, "stop", 0.0)

        async def aclose(self):
            pass

    ps = [Problem("a", "ok 1"), Problem("b", "bad 2"), Problem("c", "ok 3")]
    out = tmp_path / "t.jsonl"
    s = asyncio.run(run_batch(ps, lambda: ThresholdPolicy(0.0), Gen(), Gen(),
                              CallableScorer(lambda p, st: 0.9), out=out, progress=False,
                              fsync=False))
    assert sorted(r.id for r in s.results) == ["a", "c"]
    assert [e.id for e in s.errors] == ["b"]
    assert "step tokens is -5; expected an integer" in s.errors[0].error


def test_a_record_that_fails_trace_validation_goes_to_the_errors_file(tmp_path):
    # a value no parser caught (here a checker answering "yes" instead of a bool) costs that
    # episode, which is redone on the next run, never the batch
    class Gen:
        name = "g"

        async def generate_step(self, problem, steps):
            return GeneratedStep("\\boxed{1}", 3, True, "stop", 0.0)

        async def aclose(self):
            pass

    def checker(text, ref):
        return "yes" if ref == "weird" else True

    ps = [Problem("a", "1", "1"), Problem("b", "2", "weird"), Problem("c", "3", "1")]
    out = tmp_path / "t.jsonl"
    s = asyncio.run(run_batch(ps, lambda: ThresholdPolicy(0.0), Gen(), Gen(),
                              CallableScorer(lambda p, st: 0.9), out=out, checker=checker,
                              progress=False, fsync=False))
    assert sorted(r.id for r in s.results) == ["a", "c"] and [e.id for e in s.errors] == ["b"]
    assert "not a valid trace" in s.errors[0].error
    assert sorted(r["id"] for r in records(out)) == ["a", "c"]
    errs = records(tmp_path / "t.jsonl.errors.jsonl")
    assert [(e["id"], e["status"]) for e in errs] == [("b", "error")]


# ---- the strong model failing while it finishes a solution ---------------------------------


def test_strong_failure_while_finishing_is_an_episode_error_redone_next_run(server, tmp_path):
    # issue 18: with keep-cheap there is no draft to keep here; the problem goes to the
    # errors file and the next run redoes it (it used to be aborted for good, counted wrong)
    script_finishing(server, "P2")
    server.fail("completions", model="strong", times=None, error=503, min_step=1)
    out = tmp_path / "t.jsonl"
    s = batch(server, [Problem("b", "P2", "42")], out=out, max_retries=1)
    assert s.results == [] and [e.id for e in s.errors] == ["b"]
    assert "strong model failed while finishing the solution" in s.errors[0].error
    assert [st["writer"] for st in s.errors[0].steps] == ["strong"]
    assert not out.exists() or out.read_text() == ""
    server.failures.clear()
    s2 = batch(server, [Problem("b", "P2", "42")], out=out)
    assert s2.n_done == 1 and s2.results[0].final_correct is True
    (rec,) = records(out)
    assert [st["decision"] for st in rec["steps"]] == ["regenerate", None, None, None]


def test_strong_failure_while_finishing_with_abort_fallback_aborts(server, tmp_path):
    # fallback="abort" says what to do when the strong model fails: end the episode
    script_finishing(server, "P2")
    server.fail("completions", model="strong", times=None, error=503, min_step=1)
    s = batch(server, [Problem("b", "P2", "42")], out=tmp_path / "t.jsonl", max_retries=0,
              fallback="abort")
    assert s.errors == [] and s.n_aborted == 1
    assert "strong model failed while finishing" in s.results[0].error


def test_three_routes_with_a_strong_model_failing_15_percent_while_finishing(
    server, tmp_path, capsys
):
    # issue 18's "done when": every problem answered exactly once, none aborted by a fault
    n = 30
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, n)
    for i in range(n):
        script_finishing(server, f"Problem {i}?")
    # every strong call (the regeneration too, where keep-cheap applies) fails 15 % of the
    # time; --retries 1 leaves ~2 % of calls failed for good, so some episodes do fail
    server.fail("completions", model="strong", times=None, error=503, rate=0.15, seed=7)
    reps = []
    for _ in range(3):
        main(argv(server, probs, out, "--retries", "1", "--json"))
        reps.append(json.loads(capsys.readouterr().out))
    assert reps[0]["errors"] >= 1  # the fault path was exercised
    recs = records(out)
    assert sorted(r["id"] for r in recs) == sorted(f"p{i}" for i in range(n))  # exactly once
    assert {r["status"] for r in recs} == {"done"}  # none aborted
    assert reps[-1]["errors"] == 0 and reps[-1]["file_episodes"] == n
    errs = records(tmp_path / "t.jsonl.errors.jsonl")
    assert errs and all("503" in e["error"] for e in errs)
    # an episode in the trace file either had every strong call succeed or ran keep-cheap
    for r in recs:
        for st in r["steps"]:
            assert st["writer"] == "strong" or st.get("fallback") == "keep_cheap"


# ---- two runs on one output ------------------------------------------------------------------


def test_second_route_on_the_same_out_refuses_while_the_first_holds_the_lock(
    server, tmp_path, capsys
):
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 2)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.write('4242\\n'); f.flush();"
         "fcntl.flock(f, fcntl.LOCK_EX); print('READY', flush=True); time.sleep(120)",
         str(out) + ".lock"],
        stdout=subprocess.PIPE, text=True)
    try:
        from proc_utils import LineReader  # a deadline, not a readline that can hang

        LineReader(holder.stdout).wait_for(lambda ln: ln.strip() == "READY")
        assert main(argv(server, probs, out)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert f"{out} is in use by another run (pid 4242)" in err and "t.jsonl.lock" in err
        assert server.log == [] and not out.exists()
    finally:
        from proc_utils import reap

        reap(holder)
    # the holder died without cleaning up: its lock died with it (never stale)
    assert main(argv(server, probs, out)) == 0
    assert len(records(out)) == 2
    assert (tmp_path / "t.jsonl.lock").read_text() == f"{os.getpid()}\n"


def test_concurrent_batches_in_one_process_do_not_both_run(server, tmp_path):
    server.latency = {"completions": 0.05}
    out = tmp_path / "t.jsonl"
    cheap, strong, prm = endpoints(server)
    cheap2, strong2, prm2 = endpoints(server)

    async def go():
        first = asyncio.ensure_future(run_batch(problems(4), lambda: ThresholdPolicy(0.5),
                                                cheap, strong, prm, out=out, progress=False))
        await asyncio.sleep(0.05)
        with pytest.raises(OutputLockedError, match="is in use by another run"):
            await run_batch(problems(4), lambda: ThresholdPolicy(0.5), cheap2, strong2, prm2,
                            out=out, progress=False)
        return await first

    s = asyncio.run(go())
    assert s.n_done == 4 and len(records(out)) == 4


# ---- resume keys on content ------------------------------------------------------------------


def test_a_second_id_less_problem_file_into_the_same_out_is_refused(server, tmp_path, capsys):
    # issue 19: both files get ids line-1..line-N; the second used to be skipped, exit 0
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "t.jsonl"
    write_problems(a, 3, ids=False, prefix="Alpha")
    write_problems(b, 3, ids=False, prefix="Beta")
    assert main(argv(server, a, out)) == 0
    capsys.readouterr()
    recs = records(out)
    assert [r["problem_hash"] for r in recs] == [problem_hash(f"Alpha {i}?", "42")
                                                 for i in range(3)] or sorted(
        r["problem_hash"] for r in recs) == sorted(problem_hash(f"Alpha {i}?", "42")
                                                   for i in range(3))
    n = len(server.log)
    assert main(argv(server, b, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "already holds episodes under the ids of 3 of these 3 problems" in err
    assert f"id 'line-1' ({b}:1): 'Beta 0?', recorded 'Alpha 0?'" in err
    assert len(server.log) == n and len(records(out)) == 3
    # the same file again resumes as before: nothing to do
    assert main(argv(server, a, out)) == 0
    assert "0 episodes this run" in capsys.readouterr().out


def test_a_changed_reference_answer_is_a_mismatch_and_old_records_compare_by_text(tmp_path):
    out = tmp_path / "t.jsonl"
    old = {"id": "q0", "problem": "Problem 0?", "model": "m", "final_correct": True,
           "steps": [{"text": "s", "prm_score": 0.5, "tokens": 1, "label": None}]}
    with TraceWriter(out, fsync=False) as w:
        w.write(old)  # a record from before problem_hash existed
    finished = read_finished(out)
    from trim_pomdp.serving.records import _check_resume

    _check_resume(problems(1), finished, out)  # same text: fine
    with pytest.raises(ResumeMismatchError, match="recorded 'Problem 0\\?'"):
        _check_resume([Problem("q0", "Other?")], finished, out)
    rec = dict(old, problem_hash=problem_hash("Problem 0?", "41"))
    with pytest.raises(ResumeMismatchError, match="other problem text or reference answer"):
        _check_resume(problems(1), {"q0": rec}, out)


# ---- full disk, damaged files ----------------------------------------------------------------


def test_disk_full_during_route_one_line_finished_kept_no_warnings(
    server, tmp_path, capsys, caplog, recwarn, monkeypatch
):
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 12)
    server.latency = {"completions": 0.005}
    real = TraceWriter._write_all
    calls = []

    def full_after_3(fd, data):
        calls.append(fd)
        if len(calls) > 3:
            os.write(fd, data[: len(data) // 2])  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(TraceWriter, "_write_all", staticmethod(full_after_3))
    assert main(argv(server, probs, out, "--concurrency", "2")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"trim-pomdp route: error: cannot write {out}: No space left on device")
    assert "Traceback" not in err and "the 3 episodes finished in this run" in err
    # the three written episodes are intact and nothing half-written is left behind
    assert out.read_bytes().endswith(b"\n") and len(records(out)) == 3
    assert not (tmp_path / "t.jsonl.partial").exists()
    messages = [str(w.message) for w in recwarn] + [caplog.text]
    assert not [m for m in messages if "Unclosed" in m or "never retrieved" in m]
    # space again: the same command finishes the rest
    monkeypatch.setattr(TraceWriter, "_write_all", staticmethod(real))
    assert main(argv(server, probs, out)) == 0
    assert sorted(r["id"] for r in records(out)) == sorted(f"p{i}" for i in range(12))


def test_trace_writer_cuts_a_failed_line_back(tmp_path, monkeypatch):
    out = tmp_path / "t.jsonl"
    rec = {"id": "a", "problem": "p", "model": "m", "final_correct": None,
           "steps": [{"text": "s", "prm_score": 0.5, "tokens": 1, "label": None}]}
    w = TraceWriter(out, fsync=False)
    w.write(rec)
    good = out.read_bytes()

    def short(fd, data):
        os.write(fd, data[:10])
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(TraceWriter, "_write_all", staticmethod(short))
    with pytest.raises(OutputWriteError, match="cannot write .*t.jsonl: Input/output error") as ei:
        w.write(dict(rec, id="b"))
    assert ei.value.errno == errno.EIO and out.read_bytes() == good
    w.close()


def test_lone_surrogate_never_breaks_a_writer(tmp_path):
    rec = {"id": "a", "problem": "p\ud800", "model": "m", "final_correct": None,
           "steps": [{"text": "s", "prm_score": 0.5, "tokens": 1, "label": None}]}
    with TraceWriter(tmp_path / "t.jsonl", fsync=False) as w, pytest.raises(
            TraceFormatError, match="lone surrogate"):
        w.write(rec)
    with TraceWriter(tmp_path / "e.jsonl", fsync=False, validate=False) as w:
        w.write(rec)  # the errors file keeps it, escaped
    assert json.loads((tmp_path / "e.jsonl").read_text())["problem"] == "p\ud800"


@pytest.mark.parametrize(
    "line, match",
    [
        (b'{"id": "x", "problem": "\xff\xfe"}', r"t.jsonl:2: not valid UTF-8 \(byte 24 of the "
                                                r"line is 0xff\)"),
        (b'{"id": "x", ', r"t.jsonl:2: not valid JSON"),
        (b"[" * 100_000, r"t.jsonl:2: not valid JSON \(RecursionError\)"),
        (b'{"id": 5}', r"t.jsonl:2: expected a trace object with a string 'id'"),
    ],
)
def test_damaged_trace_file_stops_resume_naming_file_and_line(tmp_path, capsys, line, match):
    out = tmp_path / "t.jsonl"
    out.write_bytes(b'{"id": "p0"}\n' + line + b"\n")
    with pytest.raises(TraceFormatError, match=match):
        read_finished(out)
    probs = tmp_path / "p.jsonl"
    write_problems(probs, 1)
    rc = main(["route", "--problems", str(probs), "--cheap", "http://127.0.0.1:9/v1/c",
               "--strong", "http://127.0.0.1:9/v1/s", "--prm", "http://127.0.0.1:9/v1/p",
               "--out", str(out), "--threshold", "0.5", "--no-progress"])
    err = capsys.readouterr().err.strip()
    # a damaged input file is bad input: exit status 2 (as every bad input)
    assert rc == 2 and err.count("\n") == 0 and "repair or remove that line" in err
    assert f"{out}:2:" in err


def test_episode_error_messages_stay_small(server, tmp_path):
    # a 2 MB error body must not become a 2 MB line in the errors file
    server.fail("completions", model="cheap", times=None, error=500, message="E" * 2_000_000)
    out = tmp_path / "t.jsonl"
    s = batch(server, problems(1), out=out, max_retries=0)
    assert len(s.errors) == 1
    line = (tmp_path / "t.jsonl.errors.jsonl").read_bytes()
    assert len(line) < 5000


def test_run_episode_signature_is_unchanged_for_other_callers(server):
    # trim-pomdp serve (another module) calls run_episode positionally like this
    cheap, strong, prm = endpoints(server)

    async def go():
        try:
            return await run_episode(Problem("a", "Q?", "42"), ThresholdPolicy(0.5), cheap,
                                     strong, prm, 30, checker=MathAnswerChecker())
        finally:
            for e in (cheap, strong, prm):
                await e.aclose()

    r = asyncio.run(go())
    assert r.status == "done" and r.to_trace()["problem_hash"] == problem_hash("Q?", "42")
