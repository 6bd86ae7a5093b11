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
``.errors.jsonl`` side file; the problem is retried on resume).  Except when the server says
the request no longer fits the model's context window (HTTP 400, :func:`context_exceeded`):
retrying could never help, so the episode ends with ``status="aborted"`` (no answer; counted
as wrong) and is written with the finished ones; if that happens before any step was executed
(the problem alone does not fit) it is an :class:`EpisodeError` like the others, since a trace
needs at least one step.

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
import re
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
    "context_exceeded",
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


# How servers word "the prompt plus max_tokens do not fit": vLLM ("This model's maximum
# context length is 4096 tokens...", "...longer than the maximum model length of 4096...
# `max_model_len`...") and OpenAI (code "context_length_exceeded").
_CONTEXT_EXCEEDED = re.compile(
    r"maximum context length|context_length_exceeded|maximum model length|max_model_len",
    re.IGNORECASE,
)


def context_exceeded(exc: BaseException) -> bool:
    """True when ``exc`` is a server's HTTP 400 saying the request does not fit the model's
    context window (retrying cannot help: the solution so far is too long)."""
    return (
        isinstance(exc, EndpointError)
        and exc.status == 400
        and _CONTEXT_EXCEEDED.search(str(exc)) is not None
    )


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
    on_step: Callable[[dict[str, Any]], None] | None = None,
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
    on_step : callable, optional
        Called with each executed step's record (the dict that goes into ``steps``) as soon
        as the step is executed, before the next request is made; the server streams steps
        with it.  A step that is not executed (``fallback="abort"``) is not reported.  It
        runs on the event loop: it must not block (e.g. put the step on a queue).

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
                if steps and context_exceeded(exc):
                    res.status = "aborted"
                    res.error = f"step {t}: cheap model: context length exceeded: {exc}"
                    break
                raise EpisodeError(
                    f"problem {problem.id!r} step {t}: cheap model: {exc}", res
                ) from exc
            timing["cheap"] = draft.latency_s
            res.cheap_tokens += draft.tokens
            t0 = perf()
            try:
                scores = await prm.score(problem.text, texts + [draft.text])
            except (EndpointError, ResponseFormatError) as exc:
                if steps and context_exceeded(exc):
                    res.status = "aborted"
                    res.error = f"step {t}: PRM: context length exceeded: {exc}"
                    break
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
            if on_step is not None:
                on_step(rec)
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
                    if on_step is not None:
                        on_step(steps[-1])
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
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1; got {concurrency!r}")
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
    results: list[EpisodeResult] = []
    errors: list[EpisodeResult] = []
    queue: asyncio.Queue[Problem] = asyncio.Queue()
    for p in todo:
        queue.put_nowait(p)
    in_flight = 0
    max_in_flight = 0
    t0 = time.perf_counter()

    def keep_partial(r: EpisodeResult) -> None:
        if err_writer is not None:
            err_writer.write(r.to_trace())

    async def worker() -> None:
        nonlocal in_flight, max_in_flight
        router = None
        while True:
            try:
                p = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            if router is None:
                router = router_factory()
            try:
                r = await run_episode(
                    p,
                    router,
                    cheap,
                    strong,
                    prm,
                    max_steps,
                    checker=checker,
                    fallback=fallback,
                    label_steps=label_steps,
                    on_cancel=keep_partial,
                )
            except EpisodeError as exc:
                errors.append(exc.result)
                if err_writer is not None:
                    err_writer.write(exc.result.to_trace())
                bar.update(ok=False)
            else:
                results.append(r)
                if writer is not None:
                    writer.write(r.to_trace())
                bar.update(ok=True)
            finally:
                in_flight -= 1

    try:
        bar.render(force=True)
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
    finally:
        if writer is not None:
            writer.close()
        if err_writer is not None:
            err_writer.close()
        if close:
            for ep in _unique((cheap, strong, prm)):
                await ep.aclose()
    return BatchSummary(
        results=results,
        skipped=skipped,
        errors=errors,
        wall_s=time.perf_counter() - t0,
        max_in_flight=max_in_flight,
    )


def _unique(objs: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for o in objs:
        if all(o is not x for x in out):
            out.append(o)
    return out
