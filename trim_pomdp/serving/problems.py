"""Problem sets for the serving loop: JSONL, one problem per line (``problem`` or
``question``, optional ``id`` and reference ``answer``), each with a content hash that a
resumed batch checks."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from trim_pomdp.errors import (
    ProblemFormatError,
)

__all__ = ["Problem", "load_problems", "problem_hash"]


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
