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
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
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

from trim_pomdp.errors import OutputWriteError as _BaseOutputWriteError
from trim_pomdp.errors import TraceFormatError, TrimPomdpError
from trim_pomdp.serving.endpoints import (
    MAX_TOKENS_VALUE,
    EndpointError,
    GeneratedStep,
    ResponseFormatError,
    StepGenerator,
    check_text,
)
from trim_pomdp.serving.prm import StepScorer

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

MAX_STEPS = 30
MAX_ERROR_CHARS = 2000  # error strings kept in trace and errors-file records
FALLBACKS = ("keep_cheap", "abort")
LABEL_MODES = ("outcome", "none")


class RouterLike(Protocol):
    def reset(self) -> None: ...

    def step(self, prm_score: float, tokens: int, is_final: bool) -> str: ...

    def executed(self, action: str) -> None: ...


class ProblemFormatError(TrimPomdpError, ValueError):
    """A problem file is malformed; the message names the file and line."""


class OutputLockedError(TrimPomdpError, RuntimeError):
    """Another process holds the lock of this output (a second ``route`` on the same ``--out``)."""


class OutputWriteError(_BaseOutputWriteError):
    """A trace or errors file could not be written (disk full, I/O error); ``errno`` is kept.

    A :class:`trim_pomdp.errors.OutputWriteError`, so the CLI reports it as a failed write
    (one line, exit status 1), not as bad input."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class ResumeMismatchError(TrimPomdpError, ValueError):
    """The output already holds episodes under the same ids for different problems."""


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


def problem_hash(text: str, answer: str | None = None) -> str:
    """The content key of a problem: the first 16 hex digits of SHA-256 over the JSON of
    ``[text, answer]`` (the reference answer counts: it decides ``final_correct``)."""
    raw = json.dumps([text, answer], ensure_ascii=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Problem:
    """One problem: ``id`` (unique in a batch), ``text``, optional reference ``answer``;
    ``source`` (e.g. ``"problems.jsonl:3"``, set by :func:`load_problems`) is only used in
    messages."""

    id: str
    text: str
    answer: str | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def content_hash(self) -> str:
        """:func:`problem_hash` of this problem; recorded in its trace as ``problem_hash``."""
        return problem_hash(self.text, self.answer)


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
    problem_hash: str | None = None

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
            "error": _clip(self.error),
            **({} if self.problem_hash is None else {"problem_hash": self.problem_hash}),
        }


def _clip(text: str | None, n: int = MAX_ERROR_CHARS) -> str | None:
    """Error messages embed (bounded) response previews; keep records small whatever."""
    if text is None or len(text) <= n:
        return text
    return text[:n] + f"... [{len(text) - n} more characters]"


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
            out.append(
                Problem(
                    id=pid,
                    text=text,
                    answer=None if ans is None else str(ans),
                    source=f"{path}:{n}",
                )
            )
    return out


def read_finished(path: str | os.PathLike[str], *, repair: bool = True) -> dict[str, dict]:
    """Episodes already written to a trace file: ``{id: record}`` (last record per id wins).

    A last line without its newline is the remnant of an interrupted write.  With
    ``repair=True`` it is moved to ``<path>.partial`` (kept, never deleted) and the file is
    truncated after the last complete line, so appending resumes on a clean line boundary.

    A complete line that is damaged (bytes that are not UTF-8, not JSON, JSON nested too deep,
    not an object with a string ``id``) raises :class:`~trim_pomdp.errors.TraceFormatError`
    naming the file and line.  Such a line is not skipped: its episode would be redone and
    written a second time, and the damage says the file is not what this run wrote.
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
    fix = "repair or remove that line (or move the file away) and re-run"
    for n, raw in enumerate(data[:cut].split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceFormatError(
                f"{path}:{n}: not valid UTF-8 (byte {exc.start} of the line is "
                f"{raw[exc.start]:#04x}); {fix}"
            ) from None
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise TraceFormatError(f"{path}:{n}: not valid JSON ({why}); {fix}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise TraceFormatError(
                f"{path}:{n}: expected a trace object with a string 'id'; {fix}"
            )
        out[obj["id"]] = obj
    return out


class TraceWriter:
    """Append-only JSONL writer: one line per episode, flushed (and fsync'ed) per write.

    With ``validate=True`` every record is checked by :func:`trim_pomdp.traces.trace_from_dict`
    (raising :class:`TraceFormatError` before anything is written) and written in the canonical
    form of :func:`trim_pomdp.traces.trace_to_dict`, so the file loads with
    :func:`trim_pomdp.traces.load_traces` and feeds ``trim-pomdp fit``.

    Each line goes out in one unbuffered write.  If writing fails (disk full, I/O error) the
    file is cut back to where the line began, so no half line is left behind, and
    :class:`OutputWriteError` is raised; the writer is then closed.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = True, validate: bool = True
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.validate = validate
        self._fh: IO[bytes] | None = None
        self.written = 0

    def _encode(self, record: Mapping[str, Any]) -> bytes:
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        try:
            return (line + "\n").encode("utf-8")
        except UnicodeEncodeError as exc:
            if self.validate:
                raise TraceFormatError(
                    f"trace {record.get('id')!r}: holds a lone surrogate at character "
                    f"{exc.start} of its JSON; expected UTF-8 text"
                ) from None
            # the errors file keeps everything: escaped, a lone surrogate is valid JSON
            return (json.dumps(record, ensure_ascii=True, allow_nan=False) + "\n").encode()

    def write(self, record: Mapping[str, Any]) -> None:
        if self.validate:
            from trim_pomdp.traces import trace_from_dict, trace_to_dict

            record = trace_to_dict(trace_from_dict(dict(record), f"trace {record.get('id')!r}"))
        data = self._encode(record)
        start = None
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115
            fd = self._fh.fileno()
            start = os.fstat(fd).st_size
            self._write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self._undo(start)
            raise OutputWriteError(
                f"cannot write {self.path}: {exc.strerror or exc}", exc.errno
            ) from None
        self.written += 1

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _undo(self, start: int | None) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            if start is not None:
                os.ftruncate(fh.fileno(), start)  # frees space, so it works on a full disk
        except OSError:
            pass  # read_finished moves a half line aside on the next run
        finally:
            try:
                fh.close()
            except OSError:
                pass

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass  # every line was written (and fsync'ed) by write() already

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _OutputLock:
    """An exclusive ``fcntl.flock`` on ``<out>.lock``, so two batches never write one output.

    The lock belongs to the open file: it is released when the file is closed or the process
    ends in any way (even ``kill -9``), so a lock file left behind is never stale.  The file
    holds the owner's pid, for the message.  Without ``fcntl`` (Windows) there is no lock.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = out
        self.path = Path(str(out) + ".lock")
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        out = self.out
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            owner = fh.read(32).strip()
            fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputWriteError(
                    f"cannot lock {self.path}: {exc.strerror}", exc.errno
                ) from None
            who = f" (pid {owner})" if owner.isdigit() else ""
            raise OutputLockedError(
                f"{out} is in use by another run{who}: it holds the lock {self.path}; "
                "wait for it to finish or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()  # closing the file releases the flock


def _check_resume(problems: Sequence[Problem], finished: Mapping[str, dict], out: Any) -> None:
    """Refuse to resume into an output whose episodes under these ids were for other problems.

    A record carries ``problem_hash`` (:func:`problem_hash`); records written before it
    existed are compared by their ``problem`` text.
    """
    bad = []
    for p in problems:
        rec = finished.get(p.id)
        if rec is None:
            continue
        h = rec.get("problem_hash")
        if (h != p.content_hash) if h is not None else (rec.get("problem") != p.text):
            bad.append(p)
    if bad:
        p = bad[0]
        rec = finished[p.id]
        where = f" ({p.source})" if p.source else ""
        raise ResumeMismatchError(
            f"{out} already holds episodes under the ids of {len(bad)} of these "
            f"{len(problems)} problems, for other problem text or reference answer (first: id "
            f"{p.id!r}{where}: {p.text[:60]!r}, recorded {str(rec.get('problem'))[:60]!r}); "
            "it was written for another problem file: use another --out, or give the "
            "problems ids of their own"
        )


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
    requests: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per endpoint name, this batch's request counters (:class:`RequestStats` fields:
    ``requests``, ``retries``, ``failures``, ``bad_responses`` (unusable 200 bodies, each
    retried), ``too_large``, ...)."""

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
            "retries": int(sum(v.get("retries", 0) for v in self.requests.values())),
            "bad_responses": int(sum(v.get("bad_responses", 0) for v in self.requests.values())),
            "requests": self.requests,
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
    finished: dict[str, dict] = {}
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
        bar.render(force=True)
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
        if bar.enabled and bar.done < bar.total:
            bar.stream.write("\n")  # the error line must not land on the bar's line
        kept = writer.written if writer is not None else 0
        raise OutputWriteError(
            f"{exc}; stopped the batch: the {kept} episodes finished in this run before it "
            f"(and all earlier ones) are kept in {out}; re-run the same command when there "
            "is space, it resumes",
            exc.errno,
        ) from None
    finally:
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
