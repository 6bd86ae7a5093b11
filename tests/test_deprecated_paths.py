"""The flat layout's module paths (trim_pomdp 0.1) still import, warn, and re-export the
very objects of the new modules."""

from __future__ import annotations

import importlib
import sys

import pytest

import trim_pomdp
from trim_pomdp._deprecated import MOVED

#: one name each old module exported, and where it lives now
NAMES = {
    "trim_pomdp.model": ("POMDP", "trim_pomdp.engine.model"),
    "trim_pomdp.solver": ("solve_info", "trim_pomdp.engine.solver"),
    "trim_pomdp.policy": ("AlphaVectorPolicy", "trim_pomdp.engine.policy"),
    "trim_pomdp.belief": ("BeliefUpdater", "trim_pomdp.engine.belief"),
    "trim_pomdp.simulate": ("SimulationResult", "trim_pomdp.engine.montecarlo"),
    "trim_pomdp.finite": ("solve_finite_many", "trim_pomdp.engine.finite"),
    "trim_pomdp.processbench": ("read_processbench", "trim_pomdp.traces.processbench"),
    "trim_pomdp.synthetic": ("generate_traces", "trim_pomdp.traces.synthetic"),
    "trim_pomdp.trim": ("fit_from_scenario", "trim_pomdp.evaluation.from_scenario"),
    "trim_pomdp.latent": ("LatentFitter", "trim_pomdp.fit.latent"),
    "trim_pomdp.router": ("TrimBatchPolicy", "trim_pomdp.routing.router"),
    "trim_pomdp._kernels": ("PAST_MAX_STEPS", "trim_pomdp.routing._kernels"),
    "trim_pomdp.baselines": ("automix_escalate", "trim_pomdp.evaluation.query_routing"),
    "trim_pomdp.transition": ("step_accuracy", "trim_pomdp.traces.stats"),
    "trim_pomdp.observation": ("ObservationModel", "trim_pomdp.fit.observation"),
    "trim_pomdp.outcome": ("OutcomeEM", "trim_pomdp.fit.outcome"),
    "trim_pomdp.calibration": ("calibration_report", "trim_pomdp.fit.prm_calibration"),
    "trim_pomdp.scenario": ("load_scenario", "trim_pomdp.simulation.scenario"),
    "trim_pomdp.simulator": ("simulate_traces", "trim_pomdp.simulation.synth_traces"),
    "trim_pomdp.evaluate": ("Family", "trim_pomdp.routing.protocols"),
    "trim_pomdp.metrics": ("delta_ibc", "trim_pomdp.evaluation.metrics"),
    "trim_pomdp.plots": ("plot_curves", "trim_pomdp.evaluation.plots"),
    "trim_pomdp.drift": ("DriftMonitor", "trim_pomdp.routing.drift"),
    "trim_pomdp.pacing": ("simulate_paced", "trim_pomdp.simulation.paced"),
    "trim_pomdp.refit": ("refit_bank", "trim_pomdp.fit.refit"),
}


@pytest.fixture
def fresh():
    """Forget the old modules (and the package attributes they bind) around a test."""
    def forget():
        for old in MOVED:
            sys.modules.pop(old, None)
            attr = old.rpartition(".")[2]
            if isinstance(trim_pomdp.__dict__.get(attr), type(sys)):
                del trim_pomdp.__dict__[attr]

    forget()
    yield
    forget()


def test_every_old_path_is_tested():
    assert set(NAMES) == set(MOVED)


@pytest.mark.parametrize("old", sorted(NAMES))
def test_old_path_imports_warns_and_reexports(old, fresh):
    name, new = NAMES[old]
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .*{new}"):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)
    assert name in dir(mod)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mod.nope  # noqa: B018


def test_from_import_of_private_names(fresh):
    # tests and notebooks of 0.1 reached into private helpers; those keep working too
    with pytest.warns(DeprecationWarning):
        from trim_pomdp.simulator import _advance_kernel
    assert _advance_kernel is importlib.import_module("trim_pomdp.simulation.world")._advance_kernel


def test_warns_once_per_process(fresh):
    with pytest.warns(DeprecationWarning):
        importlib.import_module("trim_pomdp.trim")
    importlib.import_module("trim_pomdp.trim")  # cached: no second warning (would be an error)


def test_package_attribute_stays_callable_after_old_module_import(fresh):
    # `import trim_pomdp.evaluate` binds the package attribute to the module; the module
    # then behaves as the function it shadows
    with pytest.warns(DeprecationWarning):
        import trim_pomdp.evaluate
    ev = trim_pomdp.evaluate("default", ["trim-thr"], n_problems=300, seed=1)
    assert ev.n_problems == 300
    with pytest.warns(DeprecationWarning):
        import trim_pomdp.simulate  # noqa: F401
    assert callable(trim_pomdp.simulate)


def test_unknown_old_style_path_is_not_invented():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("trim_pomdp.not_a_module")
