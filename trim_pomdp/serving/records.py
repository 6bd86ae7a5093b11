"""What the serving loop writes: the record of one episode (:class:`EpisodeResult`, as a
JSONL trace of :mod:`trim_pomdp.traces`), the append-and-flush trace file
(:class:`TraceWriter`) and the lock of an output, the reader of the finished episodes a
batch resumes from (:func:`read_finished`) and its content check, and the summary of a
batch (:class:`BatchSummary`)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trim_pomdp.errors import (
    OutputLockedError,
    OutputWriteError,
    ResumeMismatchError,
    TraceFormatError,
)
from trim_pomdp.serving.problems import Problem

__all__ = ["EpisodeResult", "TraceWriter", "read_finished", "BatchSummary", "MAX_ERROR_CHARS"]

MAX_ERROR_CHARS = 2000  # error strings kept in trace and errors-file records


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
    #: what routed the episode (:func:`trim_pomdp.fit.refit.router_tag`: bank keys,
    #: lambda, adapt version); written as the record's ``"router"`` field when set
    router: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """The solution as executed: steps joined by blank lines."""
        return "\n\n".join(s["text"] for s in self.steps)

    def as_trace(self) -> Any:
        """This episode as a validated :class:`trim_pomdp.traces.Trace` (extras kept)."""
        from trim_pomdp.traces.records import trace_from_dict

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
            **({} if self.router is None else {"router": self.router}),
        }


def _clip(text: str | None, n: int = MAX_ERROR_CHARS) -> str | None:
    """Error messages embed (bounded) response previews; keep records small whatever."""
    if text is None or len(text) <= n:
        return text
    return text[:n] + f"... [{len(text) - n} more characters]"


def read_finished(
    path: str | os.PathLike[str], *, repair: bool = True
) -> dict[str, dict[str, Any]]:
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
    out: dict[str, dict[str, Any]] = {}
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
            from trim_pomdp.traces.records import trace_from_dict, trace_to_dict

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


def _check_resume(
    problems: Sequence[Problem], finished: Mapping[str, dict[str, Any]], out: Any
) -> None:
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
