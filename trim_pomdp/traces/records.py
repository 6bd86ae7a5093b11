"""Labelled reasoning traces: the JSONL trace format, streaming validated I/O, hidden states.

Trace format (JSONL, one trace per line, UTF-8)
-----------------------------------------------
Each line is one JSON object::

    {"id": "math-17",                 # str, required, non-empty
     "problem": "Compute ...",        # str or null, optional
     "model": "Qwen2.5-1.5B-Instruct",# str, required: the model that wrote the trace
     "steps": [                       # non-empty list, at most one entry per reasoning step
        {"text": "First, ...",        # str or null, optional
         "prm_score": 0.93,           # float in [0, 1] or null, optional (NaN is an error)
         "tokens": 57,                # int in [0, 2**53] or null, optional
         "label": "correct",          # "correct" | "incorrect" | null (unknown)
         ...extra...},                # any other key is kept verbatim in Step.extra
        ...],
     "final_correct": true,           # bool or null, optional
     ...extra...}                     # any other key is kept verbatim in Trace.extra

Known extra step fields written by other parts of the project: ``"writer": "cheap" |
"strong"`` (which model wrote the step in a routed trace), ``"decision"``, ``"belief"``,
``"timing_s"``, ``"cheap_tokens"``, ``"strong_tokens"``.  Blank lines are ignored.

A trace is identified by ``(id, model)``: the same pair on two lines of one file is an
error (``FILE:LINE: duplicate trace ...``, naming the first line), as the problem would be
counted twice; with ``lenient=True`` the first record is kept and the later ones are
skipped and counted.  ``id`` must be a JSON string (``"id": 5`` is an error: quote it).
A line that cannot be decoded at all -- invalid UTF-8 or JSON, nesting deeper than the
parser's recursion limit, an integer literal longer than Python's 4300-digit limit -- is an
error of that line too, and ``lenient=True`` skips it.

Labels and hidden states
------------------------
``label`` is the correctness of the step itself.  TRIM's hidden state at step t is

* S0 (0): steps 1..t are all correct (the current draft included);
* S2 (2): steps 1..t-1 are correct and step t is the first wrong one (recoverable);
* S1 (1): some step before t was wrong (irrecoverable);
* -1: not determined by the labels (e.g. an unlabelled step before the first known error).

Data labelled only up to the first error (ProcessBench, PRM800K-style first-error
annotation) leave the steps after the first wrong one as ``null``: they are S1 whatever
their text says.  With ``first_error_only=True`` the loader rejects a step labelled
``"correct"`` after an ``"incorrect"`` one, which is a contradiction in such data.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trim_pomdp.errors import TraceFormatError
from trim_pomdp.steps import MAX_STEPS

__all__ = [
    "MAX_STEPS",
    "Step",
    "Trace",
    "LoadReport",
    "load_traces",
    "iter_traces",
    "save_traces",
    "trace_from_dict",
    "trace_to_dict",
]

#: largest accepted token count of a step: exact in float64 and int64 (the fitting code
#: holds token counts in both), far above any real step
MAX_TOKENS = 2**53

LABELS = ("correct", "incorrect")
_STEP_KEYS = frozenset(("text", "prm_score", "tokens", "label"))
_TRACE_KEYS = frozenset(("id", "problem", "model", "steps", "final_correct"))


@dataclass(slots=True)
class Step:
    """One reasoning step.

    Parameters
    ----------
    text : str or None
        The step's text.
    prm_score : float or None
        The process reward model's score of the prefix ending at this step, in [0, 1].
    tokens : int or None
        Length of the step in tokens (>= 0).
    label : {"correct", "incorrect"} or None
        Correctness of the step itself; None when unknown.
    extra : dict
        Any other per-step fields (kept and written back verbatim).
    """

    text: str | None = None
    prm_score: float | None = None
    tokens: int | None = None
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_step(self.text, self.prm_score, self.tokens, self.label, "<Step>")
        if self.prm_score is not None:
            self.prm_score = float(self.prm_score)  # ints are valid scores; store floats


@dataclass(slots=True)
class Trace:
    """One reasoning trace: the steps one model wrote for one problem.

    Parameters
    ----------
    id : str
        Identifier of the trace.
    model : str
        The model that wrote the trace (e.g. the cheap or the strong model).
    steps : list of Step
        At least one step.
    final_correct : bool or None
        Whether the final answer is correct, when known.
    problem : str or None
        The problem text.
    extra : dict
        Any other top-level fields (kept and written back verbatim).
    """

    id: str
    model: str
    steps: list[Step]
    final_correct: bool | None = None
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise TraceFormatError(
                f"<Trace>: field 'id' must be a non-empty string; got {self.id!r}")
        if not isinstance(self.model, str) or not self.model:
            raise TraceFormatError(
                f"<Trace {self.id}>: field 'model' must be a non-empty string; got {self.model!r}"
            )
        if not isinstance(self.steps, list) or not self.steps:
            raise TraceFormatError(f"<Trace {self.id}>: field 'steps' must be a non-empty list")
        for i, s in enumerate(self.steps):
            if not isinstance(s, Step):
                raise TraceFormatError(
                    f"<Trace {self.id}>: steps[{i}] must be a Step; got {type(s).__name__}"
                )
        if self.final_correct is not None and not isinstance(self.final_correct, bool):
            raise TraceFormatError(
                f"<Trace {self.id}>: field 'final_correct' must be a bool or null; "
                f"got {self.final_correct!r}"
            )
        if self.problem is not None and not isinstance(self.problem, str):
            raise TraceFormatError(f"<Trace {self.id}>: field 'problem' must be a string or null")

    def __len__(self) -> int:
        return len(self.steps)


def _check_step(text: Any, score: Any, tokens: Any, label: Any, where: str) -> None:
    # One function shared by Step() and the loader so both give the same messages.
    if text is not None and not isinstance(text, str):
        raise TraceFormatError(f"{where}: field 'text' must be a string or null; got {text!r}")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise TraceFormatError(
                f"{where}: field 'prm_score' must be a number in [0, 1] or null; got {score!r}"
            )
        if not (0.0 <= score <= 1.0):  # also catches NaN
            raise TraceFormatError(
                f"{where}: field 'prm_score' must be in [0, 1]; got {score!r}"
            )
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0
    ):
        raise TraceFormatError(
            f"{where}: field 'tokens' must be a non-negative integer or null; got "
            f"{_short(tokens)}"
        )
    if tokens is not None and tokens > MAX_TOKENS:
        raise TraceFormatError(
            f"{where}: field 'tokens' must be at most 2**53 = {MAX_TOKENS}; got {_short(tokens)}"
        )
    if label is not None and label not in LABELS:
        raise TraceFormatError(
            f"{where}: field 'label' must be \"correct\", \"incorrect\" or null; got {label!r}"
        )


def _short(v: Any) -> str:
    from trim_pomdp._validate import _short as short

    return short(v)


def trace_from_dict(
    obj: Any, where: str = "<record>", *, first_error_only: bool = False
) -> Trace:
    """Validate one decoded JSON record and build a :class:`Trace`.

    Raises
    ------
    TraceFormatError
        Naming ``where`` (e.g. ``"traces.jsonl:12"``) and the offending field, e.g.
        ``traces.jsonl:12: steps[3]: field 'prm_score' must be in [0, 1]; got nan``.
    """
    if not isinstance(obj, dict):
        raise TraceFormatError(f"{where}: a trace must be a JSON object; got {type(obj).__name__}")
    tid = obj.get("id")
    if not isinstance(tid, str) or not tid:
        # a numeric id is refused rather than converted: 5 and "5" would then be the same
        # trace, and the format says id is a string
        raise TraceFormatError(f"{where}: field 'id' is missing or not a non-empty string; "
                               f"got {_short(tid)}" + (" (quote it)" if isinstance(tid, int)
                                                       and not isinstance(tid, bool) else ""))
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise TraceFormatError(f"{where}: field 'model' is missing or not a non-empty string")
    steps_raw = obj.get("steps")
    if not isinstance(steps_raw, list):
        raise TraceFormatError(f"{where}: field 'steps' is missing or not a list")
    if not steps_raw:
        raise TraceFormatError(f"{where}: field 'steps' is empty (a trace needs at least one step)")
    final = obj.get("final_correct")
    if final is not None and not isinstance(final, bool):
        raise TraceFormatError(
            f"{where}: field 'final_correct' must be true, false or null; got {final!r}")
    problem = obj.get("problem")
    if problem is not None and not isinstance(problem, str):
        raise TraceFormatError(f"{where}: field 'problem' must be a string or null")
    steps: list[Step] = []
    seen_incorrect = False
    # Step.__new__ + slot assignment skips __post_init__: we validate once, here.
    new = object.__new__
    for i, s in enumerate(steps_raw):
        if not isinstance(s, dict):
            raise TraceFormatError(f"{where}: steps[{i}] must be a JSON object")
        text = s.get("text")
        score = s.get("prm_score")
        tokens = s.get("tokens")
        label = s.get("label")
        if (
            (text is not None and type(text) is not str)
            or (score is not None and (type(score) is not float or not 0.0 <= score <= 1.0))
            or (tokens is not None and (type(tokens) is not int or not 0 <= tokens <= MAX_TOKENS))
            or (label is not None and label not in LABELS)
        ):
            # slow path: exact checks (ints are valid scores) and the message
            _check_step(text, score, tokens, label, f"{where}: steps[{i}]")
            score = float(score) if score is not None else None
        if first_error_only:
            if label == "correct" and seen_incorrect:
                raise TraceFormatError(
                    f"{where}: steps[{i}]: field 'label' is \"correct\" after an earlier "
                    "\"incorrect\" step, which contradicts first-error labelling"
                )
            if label == "incorrect":
                seen_incorrect = True
        st = new(Step)
        st.text = text
        st.prm_score = score
        st.tokens = tokens
        st.label = label
        st.extra = {} if s.keys() <= _STEP_KEYS else {
            k: v for k, v in s.items() if k not in _STEP_KEYS
        }
        steps.append(st)
    extra = {k: v for k, v in obj.items() if k not in _TRACE_KEYS}
    tr = new(Trace)
    tr.id = tid
    tr.model = model
    tr.steps = steps
    tr.final_correct = final
    tr.problem = problem
    tr.extra = extra
    return tr


def trace_to_dict(trace: Trace) -> dict[str, Any]:
    """The JSON object of one trace (inverse of :func:`trace_from_dict`)."""
    steps = []
    for s in trace.steps:
        d: dict[str, Any] = {"text": s.text, "prm_score": s.prm_score, "tokens": s.tokens,
                             "label": s.label}
        if s.extra:
            d.update(s.extra)
        steps.append(d)
    out: dict[str, Any] = {"id": trace.id, "problem": trace.problem, "model": trace.model,
                           "steps": steps, "final_correct": trace.final_correct}
    if trace.extra:
        out.update(trace.extra)
    return out


@dataclass
class LoadReport:
    """What lenient loading skipped.

    Attributes
    ----------
    n_loaded : int
    n_skipped : int
    reasons : list of str
        One message per skipped record (file:line: what was wrong).
    """

    n_loaded: int = 0
    n_skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, exc: Exception) -> None:
        """Count one record that lenient loading skipped, keeping why."""
        self.n_skipped += 1
        self.reasons.append(str(exc))

    def summary(self) -> str:
        head = f"loaded {self.n_loaded} traces, skipped {self.n_skipped}"
        if not self.reasons:
            return head
        shown = "\n  ".join(self.reasons[:10])
        more = f"\n  ... and {len(self.reasons) - 10} more" if len(self.reasons) > 10 else ""
        return f"{head}:\n  {shown}{more}"


def iter_traces(
    path: str | os.PathLike[str],
    *,
    lenient: bool = False,
    first_error_only: bool = False,
    report: LoadReport | None = None,
) -> Iterator[Trace]:
    """Stream traces from a JSONL file, validating each line.

    Parameters
    ----------
    path : path-like
        The JSONL file.
    lenient : bool
        If False (default) the first bad record raises :class:`TraceFormatError`.  If True
        bad records are skipped and recorded in ``report`` (never silently).
    first_error_only : bool
        The labels follow first-error annotation: reject "correct" after "incorrect".
    report : LoadReport, optional
        Filled with the counts and reasons of skipped records.
    """
    path = Path(path)
    name = str(path)
    rep = report if report is not None else LoadReport()
    first_line: dict[tuple[str, str], int] = {}  # (id, model) -> line of its first record
    # Binary lines decoded one by one: a bad byte is then an error of that line (skippable
    # in lenient mode) rather than an exception out of the file iterator.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{name}:{lineno}"
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise TraceFormatError(
                        f"{where}: not valid UTF-8 (byte {exc.start + 1}: {exc.reason})"
                    ) from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceFormatError(
                        f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
                except RecursionError:
                    raise TraceFormatError(
                        f"{where}: invalid JSON (nested too deeply for the parser)") from None
                except ValueError as exc:  # Python's digit limit for int literals
                    raise TraceFormatError(
                        f"{where}: invalid JSON ({str(exc).split(';')[0][:200]})") from None
                tr = trace_from_dict(obj, where, first_error_only=first_error_only)
                key = (tr.id, tr.model)
                if key in first_line:
                    raise TraceFormatError(
                        f"{where}: duplicate trace id {tr.id!r} of model {tr.model!r} (first "
                        f"at line {first_line[key]}); each (id, model) may appear once")
                first_line[key] = lineno
            except TraceFormatError as exc:
                if not lenient:
                    raise
                rep.skip(exc)
                continue
            rep.n_loaded += 1
            yield tr


def load_traces(
    path: str | os.PathLike[str],
    *,
    lenient: bool = False,
    first_error_only: bool = False,
    return_report: bool = False,
) -> list[Trace] | tuple[list[Trace], LoadReport]:
    """Load and validate a JSONL trace file (format in the module docstring).

    Parameters
    ----------
    path : path-like
    lenient : bool
        Skip malformed records instead of raising; what was skipped and why is in the
        :class:`LoadReport` (``return_report=True``) and, when anything was skipped, a
        ``UserWarning`` summarising it is emitted so nothing is dropped silently.
    first_error_only : bool
        Labels follow first-error annotation (see module docstring).
    return_report : bool
        Also return the :class:`LoadReport`.

    Returns
    -------
    list of Trace, or (list of Trace, LoadReport)

    Raises
    ------
    TraceFormatError
        ``"<file>:<line>: <field>: <what was wrong>"``; also when the file holds no trace.
    """
    rep = LoadReport()
    # Millions of small objects: the cyclic GC would rescan them over and over (quadratic-ish
    # slow-down); none of them can form cycles, so pause it while loading.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        traces = list(iter_traces(path, lenient=lenient, first_error_only=first_error_only,
                                  report=rep))
    finally:
        if gc_was_enabled:
            gc.enable()
    if not traces and rep.n_skipped == 0:
        raise TraceFormatError(f"{path}: no traces found (empty file)")
    if rep.n_skipped and not return_report:
        import warnings

        warnings.warn(f"{path}: {rep.summary()}", UserWarning, stacklevel=2)
    if return_report:
        return traces, rep
    return traces


def save_traces(traces: Iterable[Trace], path: str | os.PathLike[str]) -> int:
    """Write traces as JSONL (one compact JSON object per line); returns the number written.

    NaN/inf cannot occur (Step validates scores), so the output is strict JSON.
    """
    from trim_pomdp._io import atomic_files

    n = 0
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    # atomic: a failed save (disk full, a bad item) leaves the previous file intact
    with atomic_files([path], "w", encoding="utf-8") as (fh,):
        for tr in traces:
            if not isinstance(tr, Trace):
                raise TypeError(f"save_traces: item {n} is {type(tr).__name__}, not Trace")
            fh.write(dumps(trace_to_dict(tr)))
            fh.write("\n")
            n += 1
    return n
