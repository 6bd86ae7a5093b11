"""Arrays derived from traces: the hidden state of every step (:func:`hidden_state_labels`,
from first-error step labels) and the columnar view of many traces (:class:`TraceTable`,
one flat array per field, with per-trace offsets) that the estimators fit on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import TraceFormatError
from trim_pomdp.steps import S0, S1, S2
from trim_pomdp.traces.records import Trace

__all__ = ["hidden_state_labels", "TraceTable", "traces_to_table", "as_table"]


# ----------------------------------------------------------------------------- hidden states

_LABEL_CODE = {"correct": 1, "incorrect": 0, None: -1}


def _states_from_codes(codes: NDArray[np.int8], offsets: NDArray[np.int64]) -> NDArray[np.int8]:
    """Vectorised hidden states for flat label codes (1 correct, 0 incorrect, -1 unknown).

    With ``inc_before[t]`` / ``unk_before[t]`` the number of incorrect / unknown labels
    strictly before t in the same trace:

    * inc_before > 0                         -> S1
    * label incorrect and unk_before == 0    -> S2
    * label correct and unk_before == 0      -> S0
    * otherwise                              -> -1 (undetermined)
    """
    n = codes.shape[0]
    out = np.full(n, -1, dtype=np.int8)
    if n == 0:
        return out
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    inc = (codes == 0).astype(np.int64)
    unk = (codes < 0).astype(np.int64)
    c_inc = np.cumsum(inc) - inc
    c_unk = np.cumsum(unk) - unk
    base_inc = np.repeat(c_inc[starts], lengths)
    base_unk = np.repeat(c_unk[starts], lengths)
    inc_before = c_inc - base_inc
    unk_before = c_unk - base_unk
    clean = unk_before == 0
    out[(codes == 1) & clean] = S0
    out[(codes == 0) & clean] = S2
    out[inc_before > 0] = S1
    return out


def hidden_state_labels(trace: Trace) -> NDArray[np.int8]:
    """TRIM hidden state of every step of ``trace``.

    Returns
    -------
    ndarray of int8, shape (len(trace.steps),)
        S0 = 0 before the first wrong step, S2 = 2 at the first wrong step, S1 = 1 after it,
        -1 where the labels do not determine the state (an unlabelled step, or a labelled
        step preceded by an unlabelled one before any known error).
    """
    codes = np.fromiter((_LABEL_CODE[s.label] for s in trace.steps), dtype=np.int8,
                        count=len(trace.steps))
    return _states_from_codes(codes, np.array([0, len(codes)], dtype=np.int64))


# ----------------------------------------------------------------------------- columnar view

_WRITER_CODE = {"cheap": 0, "strong": 1}


@dataclass
class TraceTable:
    """Flat (columnar) view of many traces, used by the fitting code.

    Step ``j`` of trace ``i`` is row ``offsets[i] + j``.

    Attributes
    ----------
    offsets : int64 (n_traces + 1,)
    score : float64 (n_steps,)   PRM score, NaN when missing
    min_prev : float64 (n_steps,) minimum PRM score of the earlier steps of the trace
        (1.0 on the first step: the empty minimum; NaN if an earlier score is missing)
    tokens : int64 (n_steps,)    -1 when missing
    label : int8 (n_steps,)      1 correct, 0 incorrect, -1 unknown
    state : int8 (n_steps,)      hidden state (see :func:`hidden_state_labels`)
    step : int32 (n_steps,)      1-based step index within the trace
    writer : int8 (n_steps,)     0 cheap (default), 1 strong (from ``extra["writer"]``)
    length : int64 (n_traces,)   number of steps of each trace
    models : list of str         ``Trace.model`` per trace
    """

    offsets: NDArray[np.int64]
    score: NDArray[np.float64]
    min_prev: NDArray[np.float64]
    tokens: NDArray[np.int64]
    label: NDArray[np.int8]
    state: NDArray[np.int8]
    step: NDArray[np.int32]
    writer: NDArray[np.int8]
    length: NDArray[np.int64]
    models: list[str]

    @property
    def n_traces(self) -> int:
        return int(self.length.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.score.shape[0])


def _segment_min_prev(score: NDArray[np.float64],
                      offsets: NDArray[np.int64]) -> NDArray[np.float64]:
    """min of earlier scores within each trace (1.0 on first steps); NaN propagates."""
    n = score.shape[0]
    out = np.ones(n, dtype=np.float64)
    if n == 0:
        return out
    lengths = np.diff(offsets)
    maxlen = int(lengths.max())
    # Iterate over step position (<= a few dozen), vectorised over traces.
    prev = np.ones(lengths.shape[0], dtype=np.float64)
    for j in range(1, maxlen):
        alive = lengths > j
        idx = offsets[:-1][alive] + j
        s_before = score[idx - 1]
        p = prev[alive]
        # np.fmin would ignore NaN; a missing earlier score makes the minimum unknown.
        m = np.where(np.isnan(s_before) | np.isnan(p), np.nan, np.minimum(p, s_before))
        prev[alive] = m
        out[idx] = m
    return out


def traces_to_table(traces: Iterable[Trace]) -> TraceTable:
    """Columnar view of traces (see :class:`TraceTable`)."""
    traces = list(traces)
    lengths = np.fromiter((len(t.steps) for t in traces), dtype=np.int64, count=len(traces))
    offsets = np.zeros(len(traces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n = int(offsets[-1])
    # One flat pass over the steps, then C-level map/attrgetter per column (None -> NaN).
    steps = [s for t in traces for s in t.steps]
    score = np.array(list(map(attrgetter("prm_score"), steps)), dtype=np.float64)
    if score.shape != (n,):  # pragma: no cover - defensive
        raise TraceFormatError("traces_to_table: inconsistent step count")
    tok = np.array(list(map(attrgetter("tokens"), steps)), dtype=np.float64)
    tokens = np.where(np.isnan(tok), -1, tok).astype(np.int64)
    label = np.fromiter(map(_LABEL_CODE.__getitem__, map(attrgetter("label"), steps)),
                        dtype=np.int8, count=n)
    extras = list(map(attrgetter("extra"), steps))
    if any(extras):
        wc = _WRITER_CODE
        writer = np.fromiter((wc.get(e.get("writer"), 0) if e else 0 for e in extras),
                             dtype=np.int8, count=n)
    else:
        writer = np.zeros(n, dtype=np.int8)
    step = (np.arange(n, dtype=np.int64) - np.repeat(offsets[:-1], lengths) + 1).astype(np.int32)
    return TraceTable(
        offsets=offsets,
        score=score,
        min_prev=_segment_min_prev(score, offsets),
        tokens=tokens,
        label=label,
        state=_states_from_codes(label, offsets),
        step=step,
        writer=writer,
        length=lengths,
        models=[t.model for t in traces],
    )


def as_table(traces: Iterable[Trace] | TraceTable) -> TraceTable:
    """Accept either a TraceTable or an iterable of Trace."""
    if isinstance(traces, TraceTable):
        return traces
    if isinstance(traces, Trace):
        raise TypeError("expected a sequence of Trace, got a single Trace")
    return traces_to_table(traces)
