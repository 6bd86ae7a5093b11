r"""The resumable async batch of TRIM episodes against real endpoints (:func:`run_batch`).

Each problem is one episode of :func:`trim_pomdp.serving.episode.run_episode` (its module
docstring gives the per-step loop and the failure rules); up to ``concurrency`` episodes are
in flight.  Traces use the JSONL format of :mod:`trim_pomdp.traces` (one episode per line,
appended and flushed when the episode ends, so an interrupted batch loses at most the
episodes in flight); a re-run resumes, skipping the problems already written.

The problem files are read by :mod:`trim_pomdp.serving.problems`; episode records, trace
files, the output lock and the batch summary are :mod:`trim_pomdp.serving.records`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

from trim_pomdp.errors import (
    EpisodeError,
    OutputLockedError,
    OutputWriteError,
    ProblemFormatError,
    ResumeMismatchError,
    TraceFormatError,
)
from trim_pomdp.serving.endpoints import (
    StepGenerator,
)
from trim_pomdp.serving.episode import (
    RouterLike,
    context_exceeded,
    run_episode,
)
from trim_pomdp.serving.prm import StepScorer
from trim_pomdp.serving.problems import Problem, load_problems, problem_hash
from trim_pomdp.serving.records import (
    BatchSummary,
    EpisodeResult,
    TraceWriter,
    _check_resume,
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
    adapter: Any = None,
    tag: dict[str, Any] | None = None,
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
    ``tag``: recorded as every episode's ``"router"`` field (which bank routed it).

    ``adapter``: a :class:`trim_pomdp.fit.adapt.Adapter` (closed loop: drift alarm or every
    N episodes -> refit -> re-solve -> swap, and/or budget pacing).  It then makes the
    routers (``router_factory`` is not used): before each episode a worker asks it for the
    router of the current bank version (a new one after a swap, the pacer's lambda set
    otherwise), so a swap happens between episodes only; each finished episode (``done``
    or ``aborted``, once written) is handed to :meth:`~trim_pomdp.fit.adapt.Adapter.
    episode_done` with the version that routed it, and its record's ``"router"`` field is
    the adapter's tag at the episode's start.  A refit runs on the event loop (about 1-3 s
    on thousands of episodes): requests in flight wait for it.

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
            resume=resume, progress=progress, fsync=fsync, close=close, adapter=adapter,
            tag=tag,
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
    adapter: Any = None,
    tag: dict[str, Any] | None = None,
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
        version = None
        while True:
            try:
                p = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            ep_tag = tag
            if adapter is not None:
                # between episodes: the current bank version's router, the pacer's lambda
                router, version = adapter.prepare(router, version)
                ep_tag = adapter.tag()
            elif router is None:
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
                r.router = ep_tag
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
                    if adapter is not None:
                        adapter.episode_done(r.as_trace(), version=version)
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
