"""The TRIM episode loop and the async batch runner, end to end over HTTP against the fake
server: success, regeneration, fallbacks (belief follows the executed action), errors,
bounded concurrency, resume after interruption, progress output."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from fake_server import FakeServer, ScriptedStep

from trim_pomdp.errors import RouterStateError
from trim_pomdp.routing.baselines import ThresholdPolicy
from trim_pomdp.serving import (
    CompletionModel,
    EndpointConfig,
    EpisodeError,
    MathAnswerChecker,
    Problem,
    ProblemFormatError,
    ProgressBar,
    VLLMPRMScorer,
    load_problems,
    read_finished,
    run_batch,
    run_episode,
)


@pytest.fixture
def server():
    with FakeServer(default_score=0.9) as srv:
        yield srv


def endpoints(srv, **kw):
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)

    def c(model):
        return EndpointConfig(base_url=srv.url + "/v1", model=model, **kw)

    return CompletionModel(c("cheap")), CompletionModel(c("strong")), VLLMPRMScorer(c("prm"))


def episode(srv, problem, router, **kw):
    ep_kw = {k: kw.pop(k) for k in list(kw) if k in ("max_steps", "fallback", "label_steps")}
    cheap, strong, prm = endpoints(srv, **kw)

    async def go():
        try:
            return await run_episode(problem, router, cheap, strong, prm,
                                     checker=MathAnswerChecker(), **ep_kw)
        finally:
            for e in (cheap, strong, prm):
                await e.aclose()

    return asyncio.run(go())


def batch(srv, problems, factory, **kw):
    ep_kw = {k: kw.pop(k) for k in list(kw) if k not in ("max_retries", "timeout")}
    cheap, strong, prm = endpoints(srv, **kw)
    ep_kw.setdefault("progress", False)
    ep_kw.setdefault("fsync", False)
    return asyncio.run(run_batch(problems, factory, cheap, strong, prm,
                                 checker=MathAnswerChecker(), **ep_kw))


def script_p1(srv):
    srv.add_solution("cheap", "P1", [
        ScriptedStep("c1", tokens=11, score=0.9),
        ScriptedStep("c2 bad", tokens=12, score=0.1),
        ScriptedStep("c3 so \\boxed{5}", tokens=13, score=0.8),
    ])
    srv.add_solution("strong", "P1", [
        ScriptedStep("s1", tokens=21),
        ScriptedStep("s2 good", tokens=22, score=0.95),
        ScriptedStep("s3 \\boxed{5}", tokens=23),
    ])


class BayesRouter:
    """A small Bayes filter over {good, bad} (belief-tracking, like the POMDP Router).

    predict:  continue keeps the state except good -> bad w.p. 0.2; regenerate -> good w.p. 0.9
    correct:  P(score | good) = 2 score, P(score | bad) = 2 (1 - score)
    decide:   regenerate when P(bad) > 0.5
    """

    T = {"continue": np.array([[0.8, 0.2], [0.0, 1.0]]),
         "regenerate": np.array([[0.9, 0.1], [0.9, 0.1]])}

    def reset(self):
        self.b = np.array([1.0, 0.0])
        self.pending = None
        self.calls = []

    @property
    def belief(self):
        return self.b

    def step(self, score, tokens, is_final):
        if self.pending is not None:
            self.b = self.b @ self.T[self.pending]
        lik = np.array([2 * score, 2 * (1 - score)])
        self.b = self.b * lik / (self.b @ lik)
        self.pending = "regenerate" if self.b[1] > 0.5 else "continue"
        self.calls.append(("step", score, tokens, is_final))
        return self.pending

    def executed(self, action):
        self.calls.append(("executed", action))
        self.pending = action


def test_episode_with_regeneration(server):
    script_p1(server)
    r = episode(server, Problem("a", "P1", "5"), ThresholdPolicy(0.5))
    assert r.status == "done" and r.final_correct is True and r.answer == "5"
    assert [s["text"] for s in r.steps] == ["c1", "s2 good", "c3 so \\boxed{5}"]
    assert [s["writer"] for s in r.steps] == ["cheap", "strong", "cheap"]
    assert [s["decision"] for s in r.steps] == ["continue", "regenerate", "continue"]
    # the strong step's score comes from the next PRM call over the whole prefix
    assert [s["prm_score"] for s in r.steps] == [0.9, 0.95, 0.8]
    assert r.steps[1]["draft_text"] == "c2 bad" and r.steps[1]["draft_prm_score"] == 0.1
    assert [s["tokens"] for s in r.steps] == [11, 22, 13]
    assert (r.cheap_tokens, r.strong_tokens, r.n_regenerations) == (36, 22, 1)
    assert [s["label"] for s in r.steps] == ["correct"] * 3
    assert [s["is_final"] for s in r.steps] == [False, False, True]
    assert set(r.steps[1]["timing_s"]) == {"cheap", "prm", "strong", "router"}
    # the strong model continued from the executed prefix ["c1"]
    (sreq,) = server.requests("completions", "strong")
    assert sreq.body["prompt"].endswith("assistant\nc1\n\n")
    # the third draft was written after the strong step
    assert server.requests("completions", "cheap")[2].body["prompt"].endswith("c1\n\ns2 good\n\n")
    tr = r.to_trace()
    assert set(tr) >= {"id", "problem", "model", "steps", "final_correct"}
    assert tr["model"] == "routed:cheap+strong"
    json.dumps(tr, allow_nan=False)


def test_wrong_answer_leaves_steps_unlabelled(server):
    script_p1(server)
    r = episode(server, Problem("a", "P1", "6"), ThresholdPolicy(0.0))
    assert r.final_correct is False and r.n_regenerations == 0
    assert [s["label"] for s in r.steps] == [None] * 3
    assert r.strong_tokens == 0 and server.requests("completions", "strong") == []


def test_fallback_keep_cheap_and_belief_follows_execution(server):
    script_p1(server)
    server.fail("completions", model="strong", times=None, error=503)
    router = BayesRouter()
    r = episode(server, Problem("a", "P1", "5"), router, max_retries=2)
    assert r.status == "done" and r.n_fallbacks == 1 and r.n_regenerations == 0
    assert [s["text"] for s in r.steps] == ["c1", "c2 bad", "c3 so \\boxed{5}"]
    step2 = r.steps[1]
    assert step2["decision"] == "regenerate" and step2["writer"] == "cheap"
    assert step2["fallback"] == "keep_cheap" and "503" in step2["error"]
    assert len(server.requests("completions", "strong")) == 3  # 1 + 2 retries
    assert ("executed", "continue") in router.calls
    # expected beliefs by hand: the filter predicts step 3 with the executed "continue"
    ref = BayesRouter()
    ref.reset()
    b1 = ref.b * [1.8, 0.2] / (ref.b @ [1.8, 0.2])
    b2 = b1 @ BayesRouter.T["continue"]
    b2 = b2 * [0.2, 1.8] / (b2 @ [0.2, 1.8])
    b3 = b2 @ BayesRouter.T["continue"]
    b3 = b3 * [1.6, 0.4] / (b3 @ [1.6, 0.4])
    b3_if_regenerated = b2 @ BayesRouter.T["regenerate"]
    b3_if_regenerated = b3_if_regenerated * [1.6, 0.4] / (b3_if_regenerated @ [1.6, 0.4])
    got = [s["belief"] for s in r.steps]
    np.testing.assert_allclose(got[0], b1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[1], b2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[2], b3, rtol=0, atol=1e-15)
    assert abs(got[2][0] - b3_if_regenerated[0]) > 0.05


def test_circuit_breaker_fails_fast_once_strong_keeps_failing(server):
    server.add_solution("cheap", "P4", [ScriptedStep(f"c{i}", score=0.1) for i in range(3)]
                        + [ScriptedStep("c3 \\boxed{1}", score=0.1)])
    server.fail("completions", model="strong", times=None, error=503)
    cheap, strong, prm = endpoints(server, max_retries=1)
    strong = CompletionModel(EndpointConfig(base_url=server.url + "/v1", model="strong",
                                            max_retries=1, backoff_base=0.001,
                                            circuit_breaker=2, circuit_cooldown=60.0))

    async def go():
        try:
            return await run_episode(Problem("d", "P4"), ThresholdPolicy(0.5), cheap, strong,
                                     prm)
        finally:
            for e in (cheap, strong, prm):
                await e.aclose()

    r = asyncio.run(go())
    assert r.n_fallbacks == 4 and [s["writer"] for s in r.steps] == ["cheap"] * 4
    # two calls of (1 + 1 retry) requests, then the circuit is open: no more requests
    assert len(server.requests("completions", "strong")) == 4
    assert strong.transport.stats.fast_failures == 2
    assert "circuit open after 2 consecutive failed calls" in r.steps[2]["error"]


def test_fallback_abort(server):
    script_p1(server)
    server.fail("completions", model="strong", times=None, error=500)
    r = episode(server, Problem("a", "P1", "5"), ThresholdPolicy(0.5), max_retries=1,
                fallback="abort")
    assert r.status == "aborted" and r.final_correct is None and r.n_fallbacks == 1
    assert len(r.steps) == 2 and r.steps[1]["executed"] is False
    assert r.steps[1]["fallback"] == "abort" and "500" in r.error
    assert len(server.requests("completions", "cheap")) == 2  # no third draft


def test_strong_finishes_after_final_draft_is_regenerated(server):
    server.add_solution("cheap", "P2", [ScriptedStep("c1 \\boxed{1}", score=0.2)])
    server.add_solution("strong", "P2", [ScriptedStep("s1"), ScriptedStep("s2 \\boxed{2}")])
    router = ThresholdPolicy(0.5)
    r = episode(server, Problem("b", "P2", "2"), router)
    assert [s["text"] for s in r.steps] == ["s1", "s2 \\boxed{2}"]
    assert [s["decision"] for s in r.steps] == ["regenerate", None]
    assert r.final_correct is True
    with pytest.raises(RouterStateError, match="after a final step"):
        router.step(0.5, 1, False)  # the router's episode ended with the final draft
    assert len(server.requests("completions", "cheap")) == 1  # the router's episode had ended


def test_max_steps_cap_makes_last_step_final(server):
    server.n_steps = 10  # synthetic solutions of 10 steps
    calls = []

    class Spy(ThresholdPolicy):
        def step(self, s, tok, fin):
            calls.append(fin)
            return super().step(s, tok, fin)

    r = episode(server, Problem("c", "P3"), Spy(0.0), max_steps=4)
    assert calls == [False, False, False, True]
    assert len(r.steps) == 4 and r.steps[-1]["is_final"] is True
    assert r.final_correct is None  # no reference answer


def test_cheap_failure_raises_with_partial_result(server):
    script_p1(server)
    server.fail("pooling", times=None, error=503)
    with pytest.raises(EpisodeError, match="'a' step 1: PRM: .*failed after 2 attempts") as ei:
        episode(server, Problem("a", "P1", "5"), ThresholdPolicy(0.5), max_retries=1)
    assert ei.value.result.status == "error" and ei.value.result.steps == []
    assert ei.value.result.cheap_tokens == 11  # the draft was paid for


def test_run_episode_argument_errors(server):
    with pytest.raises(ValueError, match="fallback must be one of"):
        episode(server, "P", ThresholdPolicy(0.5), fallback="retry")
    with pytest.raises(ValueError, match="max_steps must be an int in \\[1, 30\\]"):
        episode(server, "P", ThresholdPolicy(0.5), max_steps=31)


# ---- batch -----------------------------------------------------------------------------------


def problems(n):
    return [Problem(f"q{i}", f"Problem number {i}?", "42") for i in range(n)]


def test_batch_bounded_concurrency(server, tmp_path):
    server.latency = {"completions": 0.01, "pooling": 0.005}
    server.n_steps = 3
    out = tmp_path / "t.jsonl"
    made = []
    s = batch(server, problems(12), lambda: made.append(1) or ThresholdPolicy(0.0), out=out,
              concurrency=4)
    assert s.n_done == 12 and s.max_in_flight == 4 and s.accuracy() == 1.0
    assert len(made) == 4  # one router per worker, reset per episode
    total = sum(server.max_in_flight.values())
    assert max(server.max_in_flight.values()) <= 4 and total <= 8
    # every request of an episode is sequential: never more than 4 requests in flight overall
    events = sorted([(r.start, 1) for r in server.log] + [(r.end, -1) for r in server.log])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak <= 4
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(p.id for p in problems(12))
    assert all(len(r["steps"]) == 3 and r["final_correct"] is True for r in recs)


def test_batch_resume_skips_finished_and_repairs_partial_line(server, tmp_path):
    server.n_steps = 2
    out = tmp_path / "t.jsonl"
    ps = problems(6)
    s1 = batch(server, ps[:3], lambda: ThresholdPolicy(0.0), out=out)
    assert s1.n_done == 3
    with out.open("a") as fh:
        fh.write('{"id": "q3", "steps": [')  # a write interrupted mid-line
    n_before = len(server.requests("completions"))
    s2 = batch(server, ps, lambda: ThresholdPolicy(0.0), out=out)
    assert (s2.skipped, s2.n_done) == (3, 3)
    asked = {r.body["prompt"] for r in server.requests("completions")[n_before:]}
    assert all(any(p.text in a for p in ps[3:]) for a in asked)
    assert not any(p.text in a for p in ps[:3] for a in asked)
    lines = out.read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == [p.id for p in ps]
    assert (tmp_path / "t.jsonl.partial").read_text() == '{"id": "q3", "steps": [\n'
    # a third run has nothing left to do
    s3 = batch(server, ps, lambda: ThresholdPolicy(0.0), out=out)
    assert (s3.skipped, len(s3.results)) == (6, 0)


def test_interrupted_batch_resumes_without_redoing(server, tmp_path):
    server.latency = {"completions": 0.02}
    server.n_steps = 3
    out = tmp_path / "t.jsonl"
    ps = problems(10)
    cheap, strong, prm = endpoints(server)

    async def interrupted():
        task = asyncio.ensure_future(run_batch(ps, lambda: ThresholdPolicy(0.0), cheap, strong,
                                               prm, out=out, concurrency=2, progress=False))
        while not out.exists() or len(out.read_text().splitlines()) < 3:
            await asyncio.sleep(0.005)
        task.cancel()  # what Ctrl-C does to asyncio.run
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    first = read_finished(out)
    assert 3 <= len(first) < 10
    n_before = len(server.requests("completions"))
    s = batch(server, ps, lambda: ThresholdPolicy(0.0), out=out, concurrency=3)
    assert s.skipped == len(first) and s.n_done == 10 - len(first)
    # each remaining episode costs exactly 3 drafts: nothing finished was redone
    assert len(server.requests("completions")) - n_before == 3 * (10 - len(first))
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(p.id for p in ps) and len(ids) == len(set(ids))
    # the episodes in flight at the interruption kept their paid-for steps in the side file
    side = [json.loads(x) for x in (tmp_path / "t.jsonl.errors.jsonl").read_text().splitlines()]
    assert 1 <= len(side) <= 2 and {r["status"] for r in side} == {"interrupted"}
    assert not {r["id"] for r in side} & set(first)


def test_batch_errors_go_to_side_file_and_are_retried(server, tmp_path):
    server.n_steps = 2
    out = tmp_path / "t.jsonl"
    server.fail("completions", model="cheap", times=None, error=503)
    s = batch(server, problems(3), lambda: ThresholdPolicy(0.0), out=out, max_retries=0)
    assert len(s.errors) == 3 and s.results == []
    assert not out.exists() or out.read_text() == ""
    errs = [json.loads(x) for x in (tmp_path / "t.jsonl.errors.jsonl").read_text().splitlines()]
    assert [e["status"] for e in errs] == ["error"] * 3 and "503" in errs[0]["error"]
    server.failures.clear()
    s2 = batch(server, problems(3), lambda: ThresholdPolicy(0.0), out=out)
    assert s2.n_done == 3 and s2.skipped == 0


def test_batch_rejects_duplicate_ids(server):
    with pytest.raises(ValueError, match="'q0' appears more than once"):
        batch(server, problems(2) + problems(1), lambda: ThresholdPolicy(0.0))


def test_progress_bar_output(server):
    stream = io.StringIO()
    server.n_steps = 1
    s = batch(server, problems(3), lambda: ThresholdPolicy(0.0), progress=stream)
    assert s.n_done == 3
    text = stream.getvalue()
    assert text.endswith("\n")  # the bar is closed (and kept) when the batch ends
    assert "0/3" in text and "3/3" in text.splitlines()[-1]
    buf = io.StringIO()
    bar = ProgressBar(4, stream=buf, min_interval=0)
    bar.update()
    bar.update(ok=False)
    bar.close()
    assert (bar.done, bar.failed) == (2, 1)
    assert "2/4" in buf.getvalue() and "1 failed" in buf.getvalue()


def test_no_progress_draws_and_imports_nothing():
    code = ("import sys, io; from trim_pomdp.serving.runner import ProgressBar; "
            "b = ProgressBar(3, stream=io.StringIO(), enabled=False); b.update(); b.close(); "
            "print('tqdm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_load_problems(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"problem": "a", "answer": 3}\n\n{"unique_id": "x/1", "question": "b"}\n')
    got = load_problems(p)
    assert got == [Problem("line-1", "a", "3"), Problem("x/1", "b", None)]
    p.write_text('{"problem": "a"}\n{"answer": 1}\n')
    with pytest.raises(ProblemFormatError, match="p.jsonl:2: field 'problem' must be a non-emp"):
        load_problems(p)
    p.write_text('[1]\n')
    with pytest.raises(ProblemFormatError, match="p.jsonl:1: expected a JSON object; got list"):
        load_problems(p)
    p.write_text('{"problem": \n')
    with pytest.raises(ProblemFormatError, match="p.jsonl:1: not valid JSON"):
        load_problems(p)
    p.write_text('{"id": 1, "problem": "a"}\n{"id": 1, "problem": "b"}\n')
    with pytest.raises(ProblemFormatError, match="p.jsonl:2: duplicate id '1'"):
        load_problems(p)


def test_written_traces_load_with_the_trace_reader(server, tmp_path):
    from trim_pomdp.traces.records import load_traces
    from trim_pomdp.traces.table import hidden_state_labels, traces_to_table

    script_p1(server)
    out = tmp_path / "t.jsonl"
    s = batch(server, [Problem("a", "P1", "5"), Problem("b", "P1", "6")],
              lambda: ThresholdPolicy(0.5), out=out)
    assert s.n_done == 2
    traces = {t.id: t for t in load_traces(out)}
    a, b = traces["a"], traces["b"]
    assert (a.final_correct, b.final_correct) == (True, False)
    assert [st.extra["writer"] for st in a.steps] == ["cheap", "strong", "cheap"]
    assert [st.prm_score for st in a.steps] == [0.9, 0.95, 0.8]
    assert a.extra["strong_tokens"] == 22 and a.extra["status"] == "done"
    # outcome labels: the correct episode is all S0, the wrong one unknown
    assert hidden_state_labels(a).tolist() == [0, 0, 0]
    assert hidden_state_labels(b).tolist() == [-1, -1, -1]
    table = traces_to_table([a, b])
    assert table.writer.tolist() == [0, 1, 0, 0, 1, 0]
    assert table.tokens.tolist() == [11, 22, 13, 11, 22, 13]


def test_trace_writer_validates_before_writing(tmp_path):
    from trim_pomdp.errors import TraceFormatError
    from trim_pomdp.serving import TraceWriter

    out = tmp_path / "t.jsonl"
    with TraceWriter(out, fsync=False) as w:
        with pytest.raises(TraceFormatError, match="'steps' is empty"):
            w.write({"id": "x", "model": "m", "steps": [], "final_correct": None})
    assert not out.exists()


def test_episode_with_chat_strong_model(server):
    # a closed strong model behind /v1/chat/completions rewrites a step of a raw-completion
    # cheap model: it sees the executed prefix as its partial solution
    from trim_pomdp.serving import ChatModel

    script_p1(server)
    cheap, _, prm = endpoints(server)
    strong = ChatModel(EndpointConfig(base_url=server.url + "/v1", model="strong"))

    async def go():
        try:
            return await run_episode(Problem("a", "P1", "5"), ThresholdPolicy(0.5), cheap,
                                     strong, prm, checker=MathAnswerChecker())
        finally:
            for e in (cheap, strong, prm):
                await e.aclose()

    r = asyncio.run(go())
    assert [s["text"] for s in r.steps] == ["c1", "s2 good", "c3 so \\boxed{5}"]
    assert r.final_correct is True and r.strong_tokens == 22
    (req,) = server.requests("chat", "strong")
    assert req.body["messages"][2] == {"role": "assistant", "content": "c1"}


# ---- context window overflow ------------------------------------------------------------------
VLLM_OLD = ("This model's maximum context length is 4096 tokens. However, you requested 5120 "
            "tokens (4096 in the messages, 1024 in the completion). Please reduce the length.")
VLLM_NEW = ("The decoder prompt (length 4200) is longer than the maximum model length of 4096. "
            "Make sure that `max_model_len` is no smaller than the number of text tokens.")


@pytest.mark.parametrize("kind, model", [("completions", "cheap"), ("pooling", None)])
@pytest.mark.parametrize("message", [VLLM_OLD, VLLM_NEW])
def test_context_overflow_ends_the_episode_instead_of_failing_it(server, tmp_path, kind, model,
                                                                 message):
    # a 400 saying the prompt no longer fits: retrying (now or on resume) cannot help, so the
    # episode is finished as aborted (no answer, counted wrong) rather than left to be retried
    server.n_steps = 3
    # both episodes' first step goes through; their second request of this kind overflows
    server.fail(kind, model=model, times=None, error=400, message=message, min_step=1)
    out = tmp_path / "t.jsonl"
    s = batch(server, problems(2), lambda: ThresholdPolicy(0.0), out=out)
    assert s.errors == [] and s.n_aborted == 2 and s.accuracy() == 0.0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["status"] for r in recs} == {"aborted"}
    assert all("step 2" in r["error"] and "context length exceeded" in r["error"]
               and "4096" in r["error"] for r in recs)
    assert all(r["final_correct"] is None and len(r["steps"]) == 1 for r in recs)
    # the second draft was written (and paid for) before the PRM refused it
    assert all(r["cheap_tokens"] == (20 if kind == "pooling" else 10) for r in recs)
    n = len(server.log)
    s2 = batch(server, problems(2), lambda: ThresholdPolicy(0.0), out=out)
    assert s2.skipped == 2 and len(server.log) == n  # not retried on resume


@pytest.mark.parametrize("message, skip", [("bad 'stop' value", 1), (VLLM_OLD, 0)])
def test_other_client_errors_still_fail_the_episode(server, tmp_path, message, skip):
    # any other 400, and an overflow before the first step (the problem alone does not fit;
    # a trace needs a step), go to the errors file as before
    server.fail("completions", model="cheap", times=None, error=400, message=message,
                min_step=skip)
    s = batch(server, problems(1), lambda: ThresholdPolicy(0.0), out=tmp_path / "t.jsonl")
    assert len(s.errors) == 1 and s.results == []
    assert len(s.errors[0].steps) == skip


def test_context_exceeded_recognises_server_wordings():
    from trim_pomdp.serving import EndpointError, context_exceeded

    def err(status, text):
        return EndpointError(f"cheap: POST u failed with HTTP {status}: {text}", endpoint="c",
                             url="u", status=status, attempts=1)

    assert context_exceeded(err(400, VLLM_OLD)) and context_exceeded(err(400, VLLM_NEW))
    assert context_exceeded(err(400, '{"error": {"code": "context_length_exceeded"}}'))
    assert not context_exceeded(err(500, VLLM_OLD))  # a 5xx is retried, whatever it says
    assert not context_exceeded(err(400, "invalid stop sequence"))
    assert not context_exceeded(ValueError(VLLM_OLD))
