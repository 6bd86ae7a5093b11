r"""The TRIM loop against real endpoints: one episode, and a resumable async batch.

Per step ``t = 1, 2, ...`` of an episode:

1. the cheap model drafts the next step (``cheap.generate_step``);
2. the PRM scores the prefix ending with the draft; the draft's score is the last entry;
3. the router decides ``router.step(score, draft_tokens, is_final)`` ->
   ``"continue"`` (keep the draft) or ``"regenerate"`` (the strong model rewrites this step
   from the same prefix);
4. the executed step is appended; the episode ends after a final step or at ``max_steps``
   (step ``max_steps`` is always reported to the router as final).

Failures.  Each request is retried with backoff (see :class:`EndpointConfig`).  When the
strong model still fails, ``fallback="keep_cheap"`` keeps the draft (and calls
``router.executed("continue")`` so a belief-tracking router filters with the action that was
actually executed), ``fallback="abort"`` ends the episode with ``status="aborted"``; either way
the step records ``"fallback"`` and the error.  A cheap-model or PRM failure ends the episode
with :class:`EpisodeError` (the partial episode is attached and, in a batch, written to the
``.errors.jsonl`` side file; the problem is retried on resume).

When the cheap draft was final and is regenerated but the strong step is not final, the strong
model finishes the solution on its own (steps with ``"decision": null``): the router's episode
ended with that final step, so it has nothing more to decide.

Traces use the JSONL format of :mod:`trim_pomdp.traces` (one episode per line, appended and
flushed when the episode ends, so an interrupted batch loses at most the episodes in flight).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from trim_pomdp.errors import TrimPomdpError
from trim_pomdp.serving.endpoints import EndpointError, ResponseFormatError, StepGenerator
from trim_pomdp.serving.prm import StepScorer

__all__ = [
    "BatchSummary",
    "EpisodeError",
    "EpisodeResult",
    "Problem",
    "ProblemFormatError",
    "ProgressBar",
    "TraceWriter",
    "load_problems",
    "read_finished",
    "run_batch",
    "run_episode",
]

MAX_STEPS = 30
FALLBACKS = ("keep_cheap", "abort")
LABEL_MODES = ("outcome", "none")


class RouterLike(Protocol):
    def reset(self) -> None: ...

    def step(self, prm_score: float, tokens: int, is_final: bool) -> str: ...

    def executed(self, action: str) -> None: ...


class ProblemFormatError(TrimPomdpError, ValueError):
    """A problem file is malformed; the message names the file and line."""


class EpisodeError(TrimPomdpError, RuntimeError):
    """An episode could not finish (cheap model or PRM failed after its retries).

    Attributes
    ----------
    result : EpisodeResult
        The partial episode (``status == "error"``), steps so far included.
    """

    def __init__(self, message: str, result: EpisodeResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Problem:
    """One problem: ``id`` (unique in a batch), ``text``, optional reference ``answer``."""

    id: str
    text: str
    answer: str | None = None


@dataclass
class EpisodeResult:
    """Everything one episode produced.  ``to_trace()`` gives the JSONL record."""

    id: str
    problem: str
    model: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    status: str = "done"  # "done" | "aborted" | "error" | "interrupted"
    final_correct: bool | None = None
    answer: str | None = None
    reference: str | None = None
    cheap_tokens: int = 0
    strong_tokens: int = 0
    n_regenerations: int = 0
    n_fallbacks: int = 0
    wall_s: float = 0.0
    router_s: float = 0.0
    error: str | None = None

    @property
    def text(self) -> str:
        """The solution as executed: steps joined by blank lines."""
        return "\n\n".join(s["text"] for s in self.steps)

    def as_trace(self) -> Any:
        """This episode as a validated :class:`trim_pomdp.traces.Trace` (extras kept)."""
        from trim_pomdp.traces import trace_from_dict

        return trace_from_dict(self.to_trace(), f"episode {self.id!r}")

    def to_trace(self) -> dict[str, Any]:
        """The trace-format record: ``id, problem, model, steps, final_correct`` + extras."""
        return {
            "id": self.id,
            "problem": self.problem,
            "model": self.model,
            "steps": self.steps,
            "final_correct": self.final_correct,
            "status": self.status,
            "answer": self.answer,
            "reference": self.reference,
            "cheap_tokens": self.cheap_tokens,
            "strong_tokens": self.strong_tokens,
            "n_regenerations": self.n_regenerations,
            "n_fallbacks": self.n_fallbacks,
            "wall_s": round(self.wall_s, 6),
            "router_s": round(self.router_s, 9),
            "error": self.error,
        }


def _belief(router: Any) -> list[float] | None:
    b = getattr(router, "belief", None)
    if b is None:
        return None
    return [float(x) for x in b]


async def run_episode(
    problem: Problem | str,
    router: RouterLike,
    cheap: StepGenerator,
    strong: StepGenerator,
    prm: StepScorer,
    max_steps: int = MAX_STEPS,
    *,
    checker: Callable[[str, str | None], bool | None] | None = None,
    fallback: str = "keep_cheap",
    label_steps: str = "outcome",
    on_cancel: Callable[[EpisodeResult], None] | None = None,
) -> EpisodeResult:
    """Run the TRIM loop on one problem (coroutine).

    Parameters
    ----------
    problem : Problem or str
        A plain string gets ``id = "0"`` and no reference answer.
    router : object with ``reset()``, ``step(prm_score, tokens, is_final) -> str``,
        ``executed(action)`` and optionally ``belief``; reset here before the first step.
    cheap, strong : StepGenerator
        E.g. :class:`CompletionModel` / :class:`ChatModel`.
    prm : StepScorer
        E.g. :class:`VLLMPRMScorer` / :class:`CallableScorer`.
    max_steps : int
        Step cap (30 in TRIM); step ``max_steps`` is final.
    checker : callable, optional
        ``checker(solution_text, reference) -> bool | None`` setting ``final_correct``
        (e.g. :class:`MathAnswerChecker`); without one ``final_correct`` is None.
    fallback : {"keep_cheap", "abort"}
        What to do when the strong model fails after its retries.
    label_steps : {"outcome", "none"}
        ``"outcome"``: when the final answer is correct every step is labelled ``"correct"``
        (outcome supervision; a wrong answer does not say which step was wrong, so its steps
        stay unlabelled); ``"none"``: no step labels.
    on_cancel : callable, optional
        Called with the partial result (``status="interrupted"``) if the episode is cancelled
        (e.g. Ctrl-C), before the cancellation propagates; the batch runner uses it to keep
        the steps already paid for.

    Returns
    -------
    EpisodeResult

    Raises
    ------
    EpisodeError
        The cheap model or the PRM failed after its retries (partial result attached).
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}; got {fallback!r}")
    if label_steps not in LABEL_MODES:
        raise ValueError(f"label_steps must be one of {LABEL_MODES}; got {label_steps!r}")
    if not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be an int in [1, {MAX_STEPS}]; got {max_steps!r}")
    if isinstance(problem, str):
        problem = Problem(id="0", text=problem)
    res = EpisodeResult(
        id=problem.id,
        problem=problem.text,
        model=f"routed:{cheap.name}+{strong.name}",
        reference=problem.answer,
    )
    t_start = time.perf_counter()
    perf = time.perf_counter
    router.reset()
    texts: list[str] = []  # executed steps: the prefix every model continues
    steps = res.steps
    try:
        t = 0
        done = False
        while not done and t < max_steps:
            t += 1
            timing: dict[str, float] = {}
            try:
                draft = await cheap.generate_step(problem.text, texts)
            except (EndpointError, ResponseFormatError) as exc:
                raise EpisodeError(
                    f"problem {problem.id!r} step {t}: cheap model: {exc}", res
                ) from exc
            timing["cheap"] = draft.latency_s
            res.cheap_tokens += draft.tokens
            t0 = perf()
            try:
                scores = await prm.score(problem.text, texts + [draft.text])
            except (EndpointError, ResponseFormatError) as exc:
                raise EpisodeError(f"problem {problem.id!r} step {t}: PRM: {exc}", res) from exc
            timing["prm"] = perf() - t0
            score = scores[-1]
            # A step-reward model re-scores the whole prefix: fill in scores of strong steps,
            # which were executed without being scored.
            if len(scores) == len(texts) + 1:
                for rec, sc in zip(steps, scores, strict=False):  # one fewer step than scores
                    if rec["prm_score"] is None:
                        rec["prm_score"] = sc
            is_final = draft.is_final or t == max_steps

            t0 = perf()
            decision = router.step(score, draft.tokens, is_final)
            belief = _belief(router)
            router_dt = perf() - t0
            if decision not in ("continue", "regenerate"):
                raise ValueError(
                    f"router.step returned {decision!r}; expected 'continue' or 'regenerate'"
                )
            rec: dict[str, Any] = {
                "text": draft.text,
                "prm_score": score,
                "tokens": draft.tokens,
                "label": None,
                "writer": "cheap",
                "decision": decision,
                "belief": belief,
                "cheap_tokens": draft.tokens,
                "strong_tokens": 0,
                "is_final": is_final,
                "timing_s": timing,
            }
            if draft.tokens_estimated:
                rec["tokens_estimated"] = True
            strong_unfinished = False
            if decision == "regenerate":
                try:
                    s = await strong.generate_step(problem.text, texts)
                except (EndpointError, ResponseFormatError) as exc:
                    res.n_fallbacks += 1
                    rec["fallback"] = fallback
                    rec["error"] = str(exc)
                    if fallback == "abort":
                        rec["executed"] = False
                        steps.append(rec)
                        res.status = "aborted"
                        res.error = str(exc)
                        break
                    t1 = perf()
                    router.executed("continue")  # the belief follows what was executed
                    router_dt += perf() - t1
                else:
                    res.n_regenerations += 1
                    res.strong_tokens += s.tokens
                    timing["strong"] = s.latency_s
                    rec.update(
                        text=s.text,
                        prm_score=None,
                        tokens=s.tokens,
                        writer="strong",
                        strong_tokens=s.tokens,
                        draft_text=draft.text,
                        draft_prm_score=score,
                        is_final=s.is_final or t == max_steps,
                    )
                    if s.tokens_estimated:
                        rec["tokens_estimated"] = True
                    strong_unfinished = is_final and not s.is_final
            timing["router"] = router_dt
            res.router_s += router_dt
            steps.append(rec)
            texts.append(rec["text"])
            done = rec["is_final"] or strong_unfinished
            if strong_unfinished:
                # the router's episode is over (it saw a final draft); the strong model
                # finishes the solution it started rewriting
                while t < max_steps:
                    t += 1
                    try:
                        s = await strong.generate_step(problem.text, texts)
                    except (EndpointError, ResponseFormatError) as exc:
                        res.n_fallbacks += 1
                        res.status = "aborted"
                        res.error = f"strong model failed while finishing: {exc}"
                        break
                    res.strong_tokens += s.tokens
                    steps.append(
                        {
                            "text": s.text,
                            "prm_score": None,
                            "tokens": s.tokens,
                            "label": None,
                            "writer": "strong",
                            "decision": None,
                            "belief": None,
                            "cheap_tokens": 0,
                            "strong_tokens": s.tokens,
                            "is_final": s.is_final or t == max_steps,
                            "timing_s": {"strong": s.latency_s},
                        }
                    )
                    texts.append(s.text)
                    if s.is_final:
                        break
    except EpisodeError as exc:
        res.status = "error"
        res.error = str(exc)
        res.wall_s = time.perf_counter() - t_start
        raise
    except asyncio.CancelledError:
        res.status = "interrupted"
        res.error = "cancelled"
        res.wall_s = time.perf_counter() - t_start
        if on_cancel is not None:
            on_cancel(res)
        raise
    if res.status == "done" and checker is not None:
        res.final_correct = checker(res.text, problem.answer)
    if steps:
        from trim_pomdp.serving.checker import extract_boxed

        res.answer = extract_boxed(steps[-1]["text"]) or extract_boxed(res.text)
    if label_steps == "outcome" and res.final_correct is True:
        for rec in steps:
            rec["label"] = "correct"
    res.wall_s = time.perf_counter() - t_start
    return res


# --------------------------------------------------------------------------------------------
# problems, trace files, resume


def load_problems(path: str | os.PathLike[str]) -> list[Problem]:
    """Read a JSONL problem set: one object per line with ``problem`` (or ``question``), an
    optional ``id`` (or ``unique_id``; default ``"line-N"``) and optional ``answer``.

    Raises :class:`ProblemFormatError` naming the file and line for malformed lines or
    duplicate ids.
    """
    path = Path(path)
    out: list[Problem] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemFormatError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ProblemFormatError(
                    f"{path}:{n}: expected a JSON object; got {type(obj).__name__}"
                )
            text = obj.get("problem", obj.get("question"))
            if not isinstance(text, str) or not text.strip():
                raise ProblemFormatError(f"{path}:{n}: field 'problem' must be a non-empty string")
            pid = obj.get("id", obj.get("unique_id", f"line-{n}"))
            pid = str(pid)
            if pid in seen:
                raise ProblemFormatError(f"{path}:{n}: duplicate id {pid!r}")
            seen.add(pid)
            ans = obj.get("answer")
            out.append(Problem(id=pid, text=text, answer=None if ans is None else str(ans)))
    return out


def read_finished(path: str | os.PathLike[str], *, repair: bool = True) -> dict[str, dict]:
    """Episodes already written to a trace file: ``{id: record}`` (last record per id wins).

    A last line without its newline is the remnant of an interrupted write.  With
    ``repair=True`` it is moved to ``<path>.partial`` (kept, never deleted) and the file is
    truncated after the last complete line, so appending resumes on a clean line boundary.
    A malformed complete line raises ValueError naming the line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data) and repair:
        with open(str(path) + ".partial", "ab") as fh:
            fh.write(data[cut:] + b"\n")
        with path.open("r+b") as fh:
            fh.truncate(cut)
    out: dict[str, dict] = {}
    for n, line in enumerate(data[:cut].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or "id" not in obj:
            raise ValueError(f"{path}:{n}: expected a trace object with an 'id'")
        out[str(obj["id"])] = obj
    return out


class TraceWriter:
    """Append-only JSONL writer: one line per episode, flushed (and fsync'ed) per write.

    With ``validate=True`` every record is checked by :func:`trim_pomdp.traces.trace_from_dict`
    (raising :class:`TraceFormatError` before anything is written) and written in the canonical
    form of :func:`trim_pomdp.traces.trace_to_dict`, so the file loads with
    :func:`trim_pomdp.traces.load_traces` and feeds ``trim-pomdp fit``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = True, validate: bool = True
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.validate = validate
        self._fh: IO[str] | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        if self.validate:
            from trim_pomdp.traces import trace_from_dict, trace_to_dict

            record = trace_to_dict(trace_from_dict(dict(record), f"trace {record.get('id')!r}"))
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# progress


class ProgressBar:
    """A dependency-free progress bar on stderr (redrawn at most every ``min_interval`` s)."""

    def __init__(
        self,
        total: int,
        *,
        stream: IO[str] | None = None,
        width: int = 30,
        min_interval: float = 0.1,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.enabled = enabled
        self.done = 0
        self.failed = 0
        self.start = time.perf_counter()
        self._last = -math.inf

    def update(self, *, ok: bool = True, force: bool = False) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        self.render(force=force or self.done == self.total)

    def render(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = f"{eta:5.0f}s" if math.isfinite(eta) else "    ?"
        failed = f" {self.failed} failed" if self.failed else ""
        self.stream.write(
            f"\r[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total}"
            f"{failed} {rate:5.2f} ep/s ETA {eta_s}"
        )
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


# --------------------------------------------------------------------------------------------
# batch


@dataclass
class BatchSummary:
    """What a batch did (``results`` holds this run's episodes; skipped ones are only counted)."""

    results: list[EpisodeResult]
    skipped: int
    errors: list[EpisodeResult]
    wall_s: float
    max_in_flight: int

    @property
    def n_done(self) -> int:
        return sum(r.status == "done" for r in self.results)

    @property
    def n_aborted(self) -> int:
        return sum(r.status == "aborted" for r in self.results)

    def accuracy(self) -> float | None:
        """Fraction correct among this run's finished (done + aborted) episodes with a label;
        aborted episodes count as wrong."""
        labelled = [r for r in self.results if r.final_correct is not None or r.status == "aborted"]
        if not labelled:
            return None
        return sum(r.final_correct is True for r in labelled) / len(labelled)

    def to_dict(self) -> dict[str, Any]:
        return {
            "episodes": len(self.results),
            "done": self.n_done,
            "aborted": self.n_aborted,
            "errors": len(self.errors),
            "skipped": self.skipped,
            "accuracy": self.accuracy(),
            "cheap_tokens": sum(r.cheap_tokens for r in self.results),
            "strong_tokens": sum(r.strong_tokens for r in self.results),
            "regenerations": sum(r.n_regenerations for r in self.results),
            "fallbacks": sum(r.n_fallbacks for r in self.results),
            "wall_s": self.wall_s,
            "max_in_flight": self.max_in_flight,
        }


async def run_batch(
    problems: Iterable[Problem],
    router_factory: Callable[[], RouterLike],
    cheap: StepGenerator,
    strong: StepGenerator,
    prm: StepScorer,
    *,
    out: str | os.PathLike[str] | None = None,
    concurrency: int = 16,
    max_steps: int = MAX_STEPS,
    checker: Callable[[str, str | None], bool | None] | None = None,
    fallback: str = "keep_cheap",
    label_steps: str = "outcome",
    resume: bool = True,
    progress: bool | IO[str] = True,
    fsync: bool = True,
    close: bool = True,
    processes: int = 1,
) -> BatchSummary:
    """Run many episodes with at most ``concurrency`` in flight (coroutine).

    Routers are stateful: each of the ``concurrency`` workers makes its own with
    ``router_factory()`` (once; a POMDP Router is not free to build) and ``run_episode``
    resets it before each episode.
    Finished episodes (``done`` and ``aborted``) are appended to ``out`` as they end; episodes
    that fail (:class:`EpisodeError`) or are cancelled mid-way (Ctrl-C) go to
    ``<out>.errors.jsonl`` with their partial steps (``status`` "error" / "interrupted").
    With ``resume=True`` problems whose id is already in ``out`` are skipped (see
    :func:`read_finished`), so an interrupted batch continues where it stopped.
    ``progress``: True draws on stderr, a stream draws there, False draws nothing.
    ``close``: close the endpoints' connection pools at the end.

    ``processes``: run the episodes in this many forked worker processes (default 1: all in
    this event loop).  One event loop spends ~0.2-0.3 ms of CPU per request (HTTP client,
    JSON, runner), so it saturates one core at a few thousand requests per second; with
    fast models and many episodes in flight, more processes keep the wall time at what the
    model latencies allow.  The problems are dealt round-robin to the workers, and so is
    ``concurrency``.  This process keeps the trace files, the progress bar and
    the summary: the workers send each episode back as it ends, and nothing else writes
    ``out``.  Each worker makes its own routers with ``router_factory`` and uses its own
    copy of ``cheap``, ``strong`` and ``prm`` (fresh connection pools; request counters are
    added back into this process's objects at the end; circuit breakers are per worker).
    Needs the ``fork`` start method (Linux, macOS); endpoint objects of your own must not
    hold open connections when the batch starts.  Ctrl-C stops every worker; the episodes
    in flight are written to the errors file as in a single process.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1; got {concurrency!r}")
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"processes must be an int >= 1; got {processes!r}")
    if processes > 1:
        import multiprocessing

        if "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError(
                "processes > 1 needs the 'fork' start method, which this platform lacks; "
                "use processes=1"
            )
    problems = list(problems)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"problem ids must be unique; {dup!r} appears more than once")
    finished: dict[str, dict] = {}
    if out is not None and resume:
        finished = read_finished(out)
    todo = [p for p in problems if p.id not in finished]
    skipped = len(problems) - len(todo)
    writer = TraceWriter(out, fsync=fsync) if out is not None else None
    err_writer = (
        TraceWriter(str(out) + ".errors.jsonl", fsync=fsync, validate=False)
        if out is not None
        else None
    )
    bar = ProgressBar(
        len(todo),
        stream=progress if not isinstance(progress, bool) else None,
        enabled=progress is not False,
    )
    sink = _BatchSink(writer, err_writer, bar)
    episode_kw = dict(
        max_steps=max_steps, checker=checker, fallback=fallback, label_steps=label_steps
    )
    endpoints = (cheap, strong, prm)
    t0 = time.perf_counter()
    try:
        bar.render(force=True)
        n_proc = min(processes, concurrency, len(todo))
        if n_proc > 1:
            await _drive_processes(todo, router_factory, endpoints, concurrency, episode_kw,
                                   sink, n_proc)
        else:
            await _drive(todo, router_factory, endpoints, concurrency, episode_kw, sink)
    finally:
        if writer is not None:
            writer.close()
        if err_writer is not None:
            err_writer.close()
        if close:
            for ep in _unique(endpoints):
                await ep.aclose()
    return BatchSummary(
        results=sink.results,
        skipped=skipped,
        errors=sink.errors,
        wall_s=time.perf_counter() - t0,
        max_in_flight=sink.max_in_flight,
    )


class _BatchSink:
    """Where a batch's episodes go as they start and end: the trace files, the progress bar,
    the summary's lists.  Lives in the process that owns ``out`` (with ``processes > 1``
    the workers' episodes arrive here through pipes)."""

    def __init__(
        self, writer: TraceWriter | None, err_writer: TraceWriter | None, bar: ProgressBar
    ) -> None:
        self.writer = writer
        self.err_writer = err_writer
        self.bar = bar
        self.results: list[EpisodeResult] = []
        self.errors: list[EpisodeResult] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def stopped(self) -> None:
        self.in_flight -= 1

    def finished(self, r: EpisodeResult) -> None:
        self.results.append(r)
        if self.writer is not None:
            self.writer.write(r.to_trace())
        self.bar.update(ok=True)

    def failed(self, r: EpisodeResult) -> None:
        self.errors.append(r)
        if self.err_writer is not None:
            self.err_writer.write(r.to_trace())
        self.bar.update(ok=False)

    def interrupted(self, r: EpisodeResult) -> None:
        """A cancelled episode: keep the steps already paid for."""
        if self.err_writer is not None:
            self.err_writer.write(r.to_trace())


async def _drive(
    todo: Sequence[Problem],
    router_factory: Callable[[], RouterLike],
    endpoints: tuple[StepGenerator, StepGenerator, StepScorer],
    concurrency: int,
    episode_kw: Mapping[str, Any],
    sink: Any,
) -> None:
    """Run ``todo`` in this event loop with ``concurrency`` workers, reporting to ``sink``."""
    cheap, strong, prm = endpoints
    queue: asyncio.Queue[Problem] = asyncio.Queue()
    for p in todo:
        queue.put_nowait(p)

    async def worker() -> None:
        router = None
        while True:
            try:
                p = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            sink.started()
            try:
                if router is None:
                    router = router_factory()
                try:
                    r = await run_episode(
                        p, router, cheap, strong, prm, episode_kw["max_steps"],
                        checker=episode_kw["checker"], fallback=episode_kw["fallback"],
                        label_steps=episode_kw["label_steps"], on_cancel=sink.interrupted,
                    )
                except EpisodeError as exc:
                    sink.failed(exc.result)
                else:
                    sink.finished(r)
            finally:
                sink.stopped()

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise


# ---- worker processes -----------------------------------------------------------------------
# Protocol, child -> parent, one pickled tuple per message over a one-way pipe:
#   ("start",) an episode began; ("done" | "error" | "partial", EpisodeResult) it ended;
#   ("end", [RequestStats | None, ...]) the worker finished (or was interrupted) cleanly;
#   ("raise", exception, traceback text) the worker failed with an unexpected exception.
# The parent unpickles only what its own forked workers wrote.

_INHERITED: list[Any] = []  # a worker's copies of the parent's connection pools (see below)


class _PipeSink:
    """The worker side of :class:`_BatchSink`: every event goes down the pipe."""

    def __init__(self, conn: Any) -> None:
        self.send = conn.send

    def started(self) -> None:
        self.send(("start",))

    def stopped(self) -> None:
        pass  # the parent counts an episode as stopped when its result arrives

    def finished(self, r: EpisodeResult) -> None:
        self.send(("done", r))

    def failed(self, r: EpisodeResult) -> None:
        self.send(("error", r))

    def interrupted(self, r: EpisodeResult) -> None:
        self.send(("partial", r))


def _transport_stats(endpoints: Sequence[Any]) -> list[Any]:
    return [getattr(getattr(ep, "transport", None), "stats", None) for ep in endpoints]


def _worker_main(
    conn: Any,
    shard: Sequence[Problem],
    router_factory: Callable[[], RouterLike],
    endpoints: tuple[StepGenerator, StepGenerator, StepScorer],
    concurrency: int,
    episode_kw: Mapping[str, Any],
) -> None:
    """Entry point of a forked worker process."""
    import signal
    import traceback

    from trim_pomdp.serving.endpoints import JsonTransport, RequestStats

    # The parent forked from inside its event loop, so its SIGINT handler (asyncio.run's,
    # bound to the parent's loop) came along.  Workers ignore SIGINT: Ctrl-C in a terminal
    # reaches the whole process group, and the parent, which owns the trace files, decides;
    # it stops a worker with SIGTERM, which cancels the worker's episodes exactly once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    unique = _unique(endpoints)
    for ep in unique:
        t = getattr(ep, "transport", None)
        if isinstance(t, JsonTransport):
            # Connections the parent had open are shared sockets now: never use or close
            # them here (closing could send on the parent's connections); keep them
            # referenced so no finaliser runs before os._exit, and start from a fresh pool.
            _INHERITED.append(t._backend)
            t._backend, t._loop = None, None
            t.stats = RequestStats()
    sink = _PipeSink(conn)

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        stopping = []

        def stop() -> None:
            if not stopping:  # a second cancel could cut short the cancelled episodes' cleanup
                stopping.append(True)
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            await _drive(shard, router_factory, endpoints, concurrency, episode_kw, sink)
        finally:
            for ep in unique:
                await ep.aclose()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass  # stopped by the parent: the episodes in flight were sent as "partial"
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which re-raises
        tb = traceback.format_exc()
        try:
            conn.send(("raise", exc, tb))
        except Exception:  # noqa: BLE001 - the exception itself does not pickle
            conn.send(("raise", RuntimeError(f"{type(exc).__name__}: {exc}"), tb))
        conn.close()
        return
    conn.send(("end", _transport_stats(unique)))
    conn.close()


async def _drive_processes(
    todo: Sequence[Problem],
    router_factory: Callable[[], RouterLike],
    endpoints: tuple[StepGenerator, StepGenerator, StepScorer],
    concurrency: int,
    episode_kw: Mapping[str, Any],
    sink: _BatchSink,
    n_proc: int,
) -> None:
    """Fork ``n_proc`` workers, deal them the problems, and feed their episodes to ``sink``."""
    import multiprocessing
    from multiprocessing.connection import wait

    from trim_pomdp.serving.endpoints import JsonTransport, _import_client

    ctx = multiprocessing.get_context("fork")
    loop = asyncio.get_running_loop()
    unique = _unique(endpoints)
    for ep in unique:
        t = getattr(ep, "transport", None)
        if isinstance(t, JsonTransport):
            _import_client(t.config.http_client)  # once here, not once per worker
    workers: list[tuple[Any, Any]] = []  # (process, read end of its pipe)
    for i in range(n_proc):
        shard = todo[i::n_proc]
        conc = concurrency // n_proc + (i < concurrency % n_proc)
        r, w = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main,
            args=(w, shard, router_factory, endpoints, conc, episode_kw),
            name=f"trim-pomdp-route-{i}",
            daemon=True,
        )
        proc.start()
        w.close()  # the parent's copy: EOF on r then means the worker has gone
        workers.append((proc, r))

    open_conns = {r: proc for proc, r in workers}
    clean: set[Any] = set()  # workers that sent "end"
    failure: list[BaseException] = []
    all_closed = loop.create_future()

    def handle(conn: Any, msg: tuple) -> None:
        kind = msg[0]
        if kind == "start":
            sink.started()
        elif kind in ("done", "error", "partial"):
            sink.stopped()
            {"done": sink.finished, "error": sink.failed, "partial": sink.interrupted}[kind](
                msg[1]
            )
        elif kind == "end":
            clean.add(conn)
            for ep, st in zip(unique, msg[1], strict=True):
                _add_stats(ep, st)
        elif kind == "raise":
            exc = msg[1]
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"(raised in route worker {open_conns[conn].name}:)\n{msg[2]}")
            failure.append(exc)

    def drain(conn: Any) -> bool:
        """Read what ``conn`` has; False once it is at EOF."""
        try:
            while conn.poll():
                handle(conn, conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def on_readable(conn: Any) -> None:
        try:
            alive = drain(conn)
        except BaseException as exc:  # e.g. a trace that fails validation: stop the batch
            failure.append(exc)
            alive = False
        if failure:
            _interrupt(workers)
        if not alive:
            loop.remove_reader(conn.fileno())
            proc = open_conns.pop(conn)
            proc.join(5)
            if conn not in clean and not failure and proc.exitcode not in (0, None):
                failure.append(RuntimeError(
                    f"route worker {proc.name} (pid {proc.pid}) died with exit code "
                    f"{proc.exitcode}; its unfinished episodes were not written and run "
                    "again on resume"))
                _interrupt(workers)
            conn.close()
            if not open_conns and not all_closed.done():
                all_closed.set_result(None)

    for _, r in workers:
        loop.add_reader(r.fileno(), on_readable, r)
    try:
        await all_closed
    except BaseException:
        # cancelled (Ctrl-C in this process, or a task cancelled by the caller): stop the
        # workers, then collect what they send back (interrupted episodes) before raising
        for conn in list(open_conns):
            loop.remove_reader(conn.fileno())
        _interrupt(workers)
        deadline = time.monotonic() + 30.0
        while open_conns and time.monotonic() < deadline:
            for conn in wait(list(open_conns), timeout=max(0.0, deadline - time.monotonic())):
                try:
                    alive = drain(conn)
                except BaseException:  # noqa: BLE001 - already stopping; keep collecting
                    alive = False
                if not alive:
                    open_conns.pop(conn).join(5)
                    conn.close()
        for proc, _ in workers:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        raise
    finally:
        for proc, _ in workers:
            proc.join(5)
    if failure:
        raise failure[0]


def _interrupt(workers: Sequence[tuple[Any, Any]]) -> None:
    """Ask every live worker to stop (SIGTERM: it cancels its episodes, which are sent back
    as "partial", and exits).  Safe to repeat: a worker acts on the first one only."""
    for proc, _ in workers:
        if proc.is_alive():
            proc.terminate()


def _add_stats(endpoint: Any, stats: Any) -> None:
    mine = getattr(getattr(endpoint, "transport", None), "stats", None)
    if mine is None or stats is None:
        return
    for name in ("requests", "retries", "failures", "fast_failures", "seconds"):
        setattr(mine, name, getattr(mine, name) + getattr(stats, name))


def _unique(objs: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for o in objs:
        if all(o is not x for x in out):
            out.append(o)
    return out
