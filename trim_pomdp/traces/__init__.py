"""Labelled reasoning traces: the ``Trace``/``Step`` records and their JSONL files
(``records``), hidden-state labels and the columnar view (``table``), step-accuracy
statistics (``stats``), the ProcessBench reader (``processbench``) and synthetic traces
from TRIM parameters (``synthetic``).
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "MAX_STEPS": "trim_pomdp.traces.records",
    "Step": "trim_pomdp.traces.records",
    "Trace": "trim_pomdp.traces.records",
    "LoadReport": "trim_pomdp.traces.records",
    "load_traces": "trim_pomdp.traces.records",
    "iter_traces": "trim_pomdp.traces.records",
    "save_traces": "trim_pomdp.traces.records",
    "trace_from_dict": "trim_pomdp.traces.records",
    "trace_to_dict": "trim_pomdp.traces.records",
    "hidden_state_labels": "trim_pomdp.traces.table",
    "TraceTable": "trim_pomdp.traces.table",
    "traces_to_table": "trim_pomdp.traces.table",
    "as_table": "trim_pomdp.traces.table",
    "BinomialEstimate": "trim_pomdp.traces.stats",
    "wilson_interval": "trim_pomdp.traces.stats",
    "step_accuracy": "trim_pomdp.traces.stats",
    "read_processbench": "trim_pomdp.traces.processbench",
    "estimate_tokens": "trim_pomdp.traces.processbench",
    "GeneratorRow": "trim_pomdp.traces.processbench",
    "accuracy_by_model": "trim_pomdp.traces.processbench",
    "format_table": "trim_pomdp.traces.processbench",
    "generate_traces": "trim_pomdp.traces.synthetic",
    "DEFAULT_SCORE_PARAMS": "trim_pomdp.traces.synthetic",
    "length_distribution": "trim_pomdp.traces.synthetic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
