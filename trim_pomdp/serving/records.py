"""What the serving loop writes: the record of one episode (:class:`EpisodeResult`, as a
JSONL trace of :mod:`trim_pomdp.traces`), the append-and-flush trace file
(:class:`TraceWriter`), the reader of the finished episodes a batch resumes from
(:func:`read_finished`), and the summary of a batch (:class:`BatchSummary`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["EpisodeResult", "TraceWriter", "read_finished", "BatchSummary"]


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
            "error": self.error,
        }


# How servers word "the prompt plus max_tokens do not fit": vLLM ("This model's maximum
# context length is 4096 tokens...", "...longer than the maximum model length of 4096...
# `max_model_len`...") and OpenAI (code "context_length_exceeded").


def read_finished(
    path: str | os.PathLike[str], *, repair: bool = True
) -> dict[str, dict[str, Any]]:
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
    out: dict[str, dict[str, Any]] = {}
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
            from trim_pomdp.traces.records import trace_from_dict, trace_to_dict

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
