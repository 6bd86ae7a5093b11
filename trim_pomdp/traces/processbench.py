"""Reader for ProcessBench (Zheng et al., 2024) step-labelled solutions.

Each ProcessBench file (``gsm8k.json``, ``math.json``, ``olympiadbench.json``,
``omnimath.json``) is a JSON array of records ``{id, generator, problem, steps: [str],
final_answer_correct: bool, label: int}`` where ``label`` is the 0-based index of the earliest
wrong step or -1 when every step is correct.  A record becomes a :class:`Trace` with

* ``model = generator``, ``final_correct = final_answer_correct``, ``id``, ``problem``;
* step labels from the first-error annotation: steps before ``label`` are ``"correct"``,
  step ``label`` is ``"incorrect"``, the steps after it are ``null`` (not annotated; they are
  S1 whatever their content); with ``label = -1`` every step is ``"correct"``;
* ``prm_score = null`` (ProcessBench has no PRM scores: score the steps with your PRM);
* ``tokens`` estimated without a tokenizer by the rule
  ``tokens = max(1, ceil(len(text) / chars_per_token))`` with ``chars_per_token = 4.0``
  (the usual ~4 characters per token of English BPE vocabularies; LaTeX-heavy steps are
  denser, so treat these as rough lengths, good for ratios and bins, not for billing);
* ``extra = {"source": "processbench", "subset": <file stem>}``.

Caution: ProcessBench was assembled to hold about 50% correct final answers in every
subset, so per-model accuracies estimated from it are biased toward the middle; they are
not population accuracies of those models.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trim_pomdp.errors import TraceFormatError
from trim_pomdp.traces.records import LoadReport, Step, Trace
from trim_pomdp.traces.stats import BinomialEstimate, step_accuracy
from trim_pomdp.traces.table import traces_to_table

__all__ = ["read_processbench", "estimate_tokens", "GeneratorRow", "accuracy_by_model",
           "format_table"]

CHARS_PER_TOKEN = 4.0


def estimate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """Token count estimate ``max(1, ceil(len(text) / chars_per_token))`` (no tokenizer)."""
    return max(1, math.ceil(len(text) / chars_per_token))


def read_processbench(path: str | os.PathLike[str], *, generator: str | None = None,
                      chars_per_token: float = CHARS_PER_TOKEN, lenient: bool = False,
                      report: LoadReport | None = None) -> list[Trace]:
    """Read one ProcessBench JSON file into labelled traces (rules in the module docstring).

    Parameters
    ----------
    path : path-like
        A ProcessBench ``.json`` file (a JSON array of records).
    generator : str, optional
        Keep only the records written by this model.
    chars_per_token : float
        Characters per token of the length estimate.
    lenient : bool
        Skip malformed records instead of raising; they are counted, with the reason, in
        ``report`` (a :class:`~trim_pomdp.traces.LoadReport`), and a ``UserWarning``
        summarises them when no report is passed.

    Raises
    ------
    TraceFormatError
        ``"<file>[<record index>] (id <id>): field '<name>' ..."`` for a malformed record.
    """
    if not (chars_per_token > 0):
        raise ValueError(f"chars_per_token must be > 0; got {chars_per_token!r}")
    path = Path(path)
    name = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{name}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{name}: not valid UTF-8 (byte offset {exc.start})") from None
    if not isinstance(data, list):
        raise TraceFormatError(f"{name}: expected a JSON array of ProcessBench records; "
                               f"got {type(data).__name__}")
    subset = path.stem
    rep = report if report is not None else LoadReport()
    out: list[Trace] = []
    for i, rec in enumerate(data):
        try:
            tr = _record(rec, f"{name}[{i}]", name, i, generator, chars_per_token, subset)
        except TraceFormatError as exc:
            if not lenient:
                raise
            rep.skip(exc)
            continue
        if tr is not None:
            rep.n_loaded += 1
            out.append(tr)
    if rep.n_skipped and report is None:
        import warnings

        warnings.warn(f"{name}: {rep.summary()}", UserWarning, stacklevel=2)
    return out


def _record(rec: object, where: str, name: str, i: int, generator: str | None,
            chars_per_token: float, subset: str) -> Trace | None:
    """One validated ProcessBench record as a Trace (None: another generator's)."""
    if not isinstance(rec, dict):
        raise TraceFormatError(f"{where}: a record must be a JSON object")
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid:
        raise TraceFormatError(f"{where}: field 'id' is missing or not a non-empty string")
    where = f"{name}[{i}] (id {rid})"
    gen = rec.get("generator")
    if not isinstance(gen, str) or not gen:
        raise TraceFormatError(f"{where}: field 'generator' is missing or not a string")
    if generator is not None and gen != generator:
        return None
    steps = rec.get("steps")
    if not isinstance(steps, list) or not steps:
        raise TraceFormatError(f"{where}: field 'steps' must be a non-empty list of strings")
    for j, s in enumerate(steps):
        if not isinstance(s, str):
            raise TraceFormatError(f"{where}: steps[{j}] must be a string")
    label = rec.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not (
            -1 <= label < len(steps)):
        raise TraceFormatError(
            f"{where}: field 'label' must be -1 or a step index in [0, {len(steps) - 1}]; "
            f"got {label!r}")
    final = rec.get("final_answer_correct")
    if not isinstance(final, bool):
        raise TraceFormatError(f"{where}: field 'final_answer_correct' must be true or false")
    problem = rec.get("problem")
    if problem is not None and not isinstance(problem, str):
        raise TraceFormatError(f"{where}: field 'problem' must be a string")
    trace_steps = []
    for j, s in enumerate(steps):
        lab = ("correct" if label == -1 or j < label else
               "incorrect" if j == label else None)
        trace_steps.append(Step(text=s, tokens=estimate_tokens(s, chars_per_token),
                                label=lab))
    return Trace(rid, gen, trace_steps, final_correct=final, problem=problem,
                 extra={"source": "processbench", "subset": subset})


@dataclass(frozen=True)
class GeneratorRow:
    """Per-model summary of labelled traces."""

    model: str
    n_traces: int
    accuracy: BinomialEstimate  # next-step accuracy p (Wilson interval, counts)
    final_correct: float         # share of traces with a correct final answer
    mean_steps: float
    mean_tokens: float           # estimated tokens per step


def accuracy_by_model(traces: Iterable[Trace], ci: float = 0.95) -> list[GeneratorRow]:
    """Next-step accuracy per ``Trace.model`` (the estimator of ``TransitionModel.p_w_``),
    sorted by model name."""
    groups: dict[str, list[Trace]] = {}
    for t in traces:
        groups.setdefault(t.model, []).append(t)
    rows = []
    for model in sorted(groups):
        tr = groups[model]
        table = traces_to_table(tr)
        tok = table.tokens[table.tokens >= 0]
        fc = [t.final_correct for t in tr if t.final_correct is not None]
        rows.append(GeneratorRow(
            model=model, n_traces=len(tr), accuracy=step_accuracy(table, ci),
            final_correct=float(np.mean(fc)) if fc else float("nan"),
            mean_steps=float(table.length.mean()),
            mean_tokens=float(tok.mean()) if tok.size else float("nan")))
    return rows


def format_table(rows: list[GeneratorRow]) -> str:
    """Markdown table of :func:`accuracy_by_model` rows."""
    ci = rows[0].accuracy.ci if rows else 0.95
    lines = [
        f"| generator | traces | trials n | correct k | p = k/n | {ci:.0%} Wilson CI | "
        "final correct | steps/trace | est. tokens/step |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        a = r.accuracy
        lines.append(f"| {r.model} | {r.n_traces} | {a.n} | {a.k} | {a.p:.3f} | "
                     f"[{a.lo:.3f}, {a.hi:.3f}] | {r.final_correct:.2f} | {r.mean_steps:.1f} | "
                     f"{r.mean_tokens:.0f} |")
    return "\n".join(lines)
