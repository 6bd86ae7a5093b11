r"""The TRIM loop against real endpoints: one episode, and a resumable async batch.

Per step ``t = 1, 2, ...`` of an episode:

1. the cheap model drafts the next step (``cheap.generate_step``);
2. the PRM scores the prefix ending with the draft; the draft's score is the last entry;
3. the router decides ``router.step(score, draft_tokens, is_final)`` ->
   ``"continue"`` (keep the draft) or ``"regenerate"`` (the strong model rewrites this step
   from the same prefix);
4. the executed step is appended; the episode ends after a final step or at ``max_steps``
   (step ``max_steps`` is always reported to the router as final).

Failures.  Each request is retried with backoff (see :class:`EndpointConfig`), including
HTTP 200 answers whose body is unusable (cut off, not JSON, a field missing, a token count
that is negative or not an integer, text that is not UTF-8, PRM rows of the wrong length or
not finite): every value taken from a response is checked where it is parsed.  When the
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
ended with that final step, so it has nothing more to decide.  If the strong model fails there
(after its retries), there is no draft to keep, so with ``fallback="keep_cheap"`` the episode is
an :class:`EpisodeError` (errors file, redone on the next run) rather than a result; with
``fallback="abort"`` it ends as ``"aborted"``, as that fallback says.  An episode is recorded as
a result only when every call in it succeeded or the documented fallback ran.

Traces use the JSONL format of :mod:`trim_pomdp.traces` (one episode per line, appended and
flushed when the episode ends, so an interrupted batch loses at most the episodes in flight).

The problem files are read by :mod:`trim_pomdp.serving.problems`; episode records, trace
files, the output lock and the batch summary are :mod:`trim_pomdp.serving.records`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, Protocol

from trim_pomdp.errors import (
    EpisodeError,
    OutputLockedError,
    OutputWriteError,
    ProblemFormatError,
    ResumeMismatchError,
    TraceFormatError,
)
from trim_pomdp.serving.endpoints import (
    MAX_TOKENS_VALUE,
    EndpointError,
    GeneratedStep,
    ResponseFormatError,
    StepGenerator,
    check_text,
)
from trim_pomdp.serving.prm import StepScorer
from trim_pomdp.serving.problems import Problem, load_problems, problem_hash
from trim_pomdp.serving.records import (
    BatchSummary,
    EpisodeResult,
    TraceWriter,
    _check_resume,
    _clip,
    _OutputLock,
    read_finished,
)
from trim_pomdp.steps import MAX_STEPS

__all__ = [
    "BatchSummary",
    "EpisodeError",
    "EpisodeResult",
    "OutputLockedError",
    "OutputWriteError",
    "Problem",
    "ProblemFormatError",
    "ResumeMismatchError",
    "ProgressBar",
    "TraceWriter",
    "context_exceeded",
    "load_problems",
    "problem_hash",
    "read_finished",
    "run_batch",
    "run_episode",
]

FALLBACKS = ("keep_cheap", "abort")
LABEL_MODES = ("outcome", "none")


class RouterLike(Protocol):
    def reset(self) -> None: ...

    def step(self, prm_score: float, tokens: int, is_final: bool) -> str: ...

    def executed(self, action: str) -> None: ...


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


def _check_step(step: Any, who: str) -> GeneratedStep:
    """What any :class:`StepGenerator` returned, checked before it reaches the router or a
    trace (the HTTP models check their responses already; this covers user generators)."""
    where = f"{who} model"
    if not isinstance(step, GeneratedStep):
        raise ResponseFormatError(
            f"{where} returned {type(step).__name__}; expected a GeneratedStep"
        )
    check_text(step.text, "step text", where)
    t = step.tokens
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TOKENS_VALUE:
        raise ResponseFormatError(
            f"{where}: step tokens is {t!r:.60}; expected an integer in [0, {MAX_TOKENS_VALUE}]"
        )
    return step


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
        problem_hash=problem.content_hash,
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
                draft = _check_step(await cheap.generate_step(problem.text, texts), "cheap")
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
                for prev, sc in zip(steps, scores, strict=False):  # one fewer step than scores
                    if prev["prm_score"] is None:
                        prev["prm_score"] = sc
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
                    s = _check_step(await strong.generate_step(problem.text, texts), "strong")
                except (EndpointError, ResponseFormatError) as exc:
                    res.n_fallbacks += 1
                    rec["fallback"] = fallback
                    rec["error"] = _clip(str(exc))
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
                        s = _check_step(
                            await strong.generate_step(problem.text, texts), "strong"
                        )
                    except (EndpointError, ResponseFormatError) as exc:
                        if context_exceeded(exc):
                            res.status = "aborted"
                            res.error = f"step {t}: strong model: context length exceeded: {exc}"
                            break
                        if fallback == "abort":
                            res.n_fallbacks += 1
                            res.status = "aborted"
                            res.error = f"strong model failed while finishing: {exc}"
                            break
                        # no draft to keep: a fault here (transient as a rule) must not cost
                        # the problem; the errors file gets it and the next run redoes it
                        raise EpisodeError(
                            f"problem {problem.id!r} step {t}: strong model failed while "
                            f"finishing the solution: {exc}",
                            res,
                        ) from exc
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
# progress


class ProgressBar:
    """The batch's progress bar on stderr: a :mod:`tqdm` bar (imported on first use) counting
    episodes, with the failed ones as a postfix.  ``enabled=False`` (``--no-progress``) draws
    nothing and imports nothing."""

    def __init__(
        self,
        total: int,
        *,
        stream: IO[str] | None = None,
        min_interval: float = 0.1,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.failed = 0
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=stream if stream is not None else sys.stderr,
                             unit="ep", mininterval=min_interval, dynamic_ncols=True,
                             leave=True)

    def update(self, *, ok: bool = True) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        if self._bar is not None:
            if not ok:
                self._bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        """End the bar's line (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# --------------------------------------------------------------------------------------------
# batch


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
    lock: bool = True,
) -> BatchSummary:
    """Run many episodes with at most ``concurrency`` in flight (coroutine).

    Routers are stateful: each of the ``concurrency`` workers makes its own with
    ``router_factory()`` (once; a POMDP Router is not free to build) and ``run_episode``
    resets it before each episode.
    Finished episodes (``done`` and ``aborted``) are appended to ``out`` as they end; episodes
    that fail (:class:`EpisodeError`, or a finished episode whose record fails trace
    validation) or are cancelled mid-way (Ctrl-C) go to ``<out>.errors.jsonl`` with their
    partial steps (``status`` "error" / "interrupted").
    With ``resume=True`` problems whose id is already in ``out`` are skipped (see
    :func:`read_finished`), so an interrupted batch continues where it stopped; every record
    carries its problem's :func:`problem_hash`, and a problem whose id is recorded with other
    content raises :class:`ResumeMismatchError` before anything runs.
    ``lock``: hold an exclusive lock on ``<out>.lock`` for the whole batch; a second batch on
    the same ``out`` raises :class:`OutputLockedError` at once.
    ``progress``: True draws on stderr, a stream draws there, False draws nothing.
    ``close``: close the endpoints' connection pools at the end.

    A trace or errors file that cannot be written (disk full) stops the batch with
    :class:`OutputWriteError`; the episodes written before are kept, the endpoints closed.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1; got {concurrency!r}")
    problems = list(problems)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"problem ids must be unique; {dup!r} appears more than once")
    out_lock = _OutputLock(out) if out is not None and lock else None
    if out_lock is not None:
        out_lock.acquire()
    try:
        return await _run_batch(
            problems, router_factory, cheap, strong, prm, out=out, concurrency=concurrency,
            max_steps=max_steps, checker=checker, fallback=fallback, label_steps=label_steps,
            resume=resume, progress=progress, fsync=fsync, close=close,
        )
    finally:
        if out_lock is not None:
            out_lock.release()


def _stats(endpoints: Sequence[Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for ep in endpoints:
        stats = getattr(getattr(ep, "transport", None), "stats", None)
        if stats is not None and hasattr(stats, "as_dict"):
            out[str(getattr(ep, "name", "?"))] = stats.as_dict()
    return out


async def _run_batch(
    problems: list[Problem],
    router_factory: Callable[[], RouterLike],
    cheap: StepGenerator,
    strong: StepGenerator,
    prm: StepScorer,
    *,
    out: str | os.PathLike[str] | None,
    concurrency: int,
    max_steps: int,
    checker: Callable[[str, str | None], bool | None] | None,
    fallback: str,
    label_steps: str,
    resume: bool,
    progress: bool | IO[str],
    fsync: bool,
    close: bool,
) -> BatchSummary:
    endpoints = _unique((cheap, strong, prm))
    finished: dict[str, dict[str, Any]] = {}
    if out is not None and resume:
        finished = read_finished(out)
        _check_resume(problems, finished, out)
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
    stats0 = _stats(endpoints)
    t0 = time.perf_counter()

    def keep_partial(r: EpisodeResult) -> None:
        if err_writer is not None:
            try:
                err_writer.write(r.to_trace())
            except OutputWriteError:
                pass  # cancelled because the disk is full: nothing more can be kept

    def record_error(r: EpisodeResult) -> None:
        errors.append(r)
        if err_writer is not None:
            err_writer.write(r.to_trace())
        bar.update(ok=False)

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
                record_error(exc.result)
            else:
                try:
                    if writer is not None:
                        writer.write(r.to_trace())
                except TraceFormatError as exc:
                    # a value no parser caught (e.g. from a user's generator): this episode
                    # is redone on the next run; the batch goes on
                    r.status = "error"
                    r.error = f"the finished episode is not a valid trace: {exc}"
                    record_error(r)
                else:
                    results.append(r)
                    bar.update(ok=True)
            finally:
                in_flight -= 1

    failure: BaseException | None = None
    try:
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)))]
        try:
            await asyncio.gather(*workers)
        except BaseException as exc:
            failure = exc
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
    except OutputWriteError as exc:
        bar.close()  # the error line must not land on the bar's line
        kept = writer.written if writer is not None else 0
        raise OutputWriteError(
            f"{exc}; stopped the batch: the {kept} episodes finished in this run before it "
            f"(and all earlier ones) are kept in {out}; re-run the same command when there "
            "is space, it resumes",
            exc.errno,
        ) from None
    finally:
        bar.close()
        for w_ in (writer, err_writer):
            if w_ is not None:
                w_.close()
        if close:
            for ep in endpoints:
                try:
                    await ep.aclose()
                except Exception:
                    # closing must not mask the error that ended the batch, nor leave the
                    # other pools open (their "unclosed session" warnings)
                    if failure is None:
                        raise
    stats1 = _stats(endpoints)
    requests = {
        name: {k: v - stats0.get(name, {}).get(k, 0) for k, v in d.items()}
        for name, d in stats1.items()
    }
    return BatchSummary(
        results=results,
        skipped=skipped,
        errors=errors,
        wall_s=time.perf_counter() - t0,
        max_in_flight=max_in_flight,
        requests=requests,
    )


def _unique(objs: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for o in objs:
        if all(o is not x for x in out):
            out.append(o)
    return out
