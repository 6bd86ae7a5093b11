"""The module paths of trim_pomdp 0.1's flat layout, kept importable for one release.

``import trim_pomdp.trim`` (or any path in :data:`MOVED`) still works: a meta-path finder
builds a small shim module under the old name that emits a :class:`DeprecationWarning` on
import and re-exports, by attribute lookup, every name of the modules the code moved to, so
``trim_pomdp.routing.bank.solve_grid is trim_pomdp.routing.bank.solve_grid``.  The old files are
not kept on disk, so a change made to an old file on another branch follows the rename
when it is merged.  Remove this module (and its ``install()`` call in
``trim_pomdp/__init__.py``) in 0.2.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["MOVED", "install"]

#: old module -> the modules its names now live in (looked up in this order)
MOVED: dict[str, tuple[str, ...]] = {
    "trim_pomdp.model": ("trim_pomdp.engine.model",),
    "trim_pomdp.solver": ("trim_pomdp.engine.solver",),
    "trim_pomdp.policy": ("trim_pomdp.engine.policy",),
    "trim_pomdp.belief": ("trim_pomdp.engine.belief",),
    "trim_pomdp.simulate": ("trim_pomdp.engine.montecarlo",),
    "trim_pomdp.finite": ("trim_pomdp.engine.finite",),
    "trim_pomdp.processbench": ("trim_pomdp.traces.processbench",),
    "trim_pomdp.synthetic": ("trim_pomdp.traces.synthetic",),
    "trim_pomdp.trim": ("trim_pomdp.routing.model", "trim_pomdp.routing.policy",
                        "trim_pomdp.routing.bank", "trim_pomdp.banks",
                        "trim_pomdp.evaluation.budget", "trim_pomdp.evaluation.from_scenario",
                        "trim_pomdp.evaluation.families"),
    "trim_pomdp.latent": ("trim_pomdp.routing.latent_model", "trim_pomdp.routing.bank",
                          "trim_pomdp.fit.latent", "trim_pomdp.evaluation.from_scenario",
                          "trim_pomdp.evaluation.families"),
    "trim_pomdp.router": ("trim_pomdp.routing.router",),
    "trim_pomdp._kernels": ("trim_pomdp.routing._kernels",),
    "trim_pomdp.baselines": ("trim_pomdp.routing.baselines",
                             "trim_pomdp.evaluation.query_routing"),
    "trim_pomdp.transition": ("trim_pomdp.fit.transition", "trim_pomdp.traces.stats",
                              "trim_pomdp._io"),
    "trim_pomdp.observation": ("trim_pomdp.fit.observation", "trim_pomdp.fit._densities"),
    "trim_pomdp.outcome": ("trim_pomdp.fit.outcome",),
    "trim_pomdp.calibration": ("trim_pomdp.fit.prm_calibration",),
    "trim_pomdp.scenario": ("trim_pomdp.simulation.scenario",),
    "trim_pomdp.simulator": ("trim_pomdp.simulation.world", "trim_pomdp.simulation.synth_traces",
                             "trim_pomdp.routing.protocols"),
    "trim_pomdp.evaluate": ("trim_pomdp.evaluation.sweep", "trim_pomdp.evaluation.registry",
                            "trim_pomdp.routing.protocols", "trim_pomdp.evaluation.families"),
    "trim_pomdp.metrics": ("trim_pomdp.evaluation.metrics",),
    "trim_pomdp.plots": ("trim_pomdp.evaluation.plots",),
    "trim_pomdp.drift": ("trim_pomdp.routing.drift", "trim_pomdp.routing._kernels"),
    "trim_pomdp.pacing": ("trim_pomdp.routing.pacing", "trim_pomdp.simulation.paced"),
    "trim_pomdp.refit": ("trim_pomdp.fit.refit",),
}

#: old modules that shared their name with a function exported by ``trim_pomdp``; once such
#: a module is imported the package attribute is the module, so the module stays callable
_CALLABLE = {"trim_pomdp.simulate": "simulate", "trim_pomdp.evaluate": "evaluate"}


class _Shim(types.ModuleType):
    _targets: Sequence[types.ModuleType]

    def __getattr__(self, name: str) -> Any:
        # only called for names missing here; during the import _targets is not set yet
        for mod in self.__dict__.get("_targets", ()):
            if hasattr(mod, name):
                return getattr(mod, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted({n for mod in self.__dict__.get("_targets", ()) for n in dir(mod)})


class _CallableShim(_Shim):
    _function: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self._function)(*args, **kwargs)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        cls = _CallableShim if spec.name in _CALLABLE else _Shim
        return cls(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        targets = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} is deprecated and will be removed in trim_pomdp 0.2; import "
            f"from {' / '.join(targets)} (or from trim_pomdp) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        mods = [importlib.import_module(t) for t in targets]
        module._targets = mods  # type: ignore[attr-defined]
        if module.__name__ in _CALLABLE:
            module._function = _CALLABLE[module.__name__]  # type: ignore[attr-defined]
        module.__doc__ = f"Deprecated alias of {', '.join(targets)}."
        module.__all__ = sorted(  # type: ignore[attr-defined]
            {n for m in mods for n in getattr(m, "__all__", ())})


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


def install() -> None:
    """Put the finder of the old paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
