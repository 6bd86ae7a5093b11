"""Property tests (issue 18): mutated banks (bytes of the .npz, its arrays, sidecar fields)
and mutated trace files load to a typed error or a valid result -- never another exception,
never a NaN.  The long run (>= 2,000 of each) is ``benchmarks/fuzz_artefacts.py``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from artefact_mutants import (
    bank_mutation,
    check_bank,
    check_traces,
    trace_mutation,
    write_mutated_bank,
)
from hypothesis import HealthCheck, given, settings

SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(bank_mutation())
def test_mutated_banks_give_a_typed_error_or_a_valid_bank(mutation):
    with tempfile.TemporaryDirectory() as d:
        check_bank(write_mutated_bank(Path(d), mutation))


@SETTINGS
@given(trace_mutation())
def test_mutated_trace_files_give_a_typed_error_or_valid_traces(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.jsonl"
        p.write_bytes(data)
        check_traces(p)
