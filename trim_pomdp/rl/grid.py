"""Train TRIM-Agg / TRIM-Seq over a grid of budgets, on one machine or many.

Each lambda is an independent training run, submitted as a task to a
:class:`concurrent.futures.Executor`.  The default is a local process pool (one process
per core); a user who outgrows one machine passes a Dask executor
(``distributed.Client(...).get_executor()``) or Ray's ``RayExecutor``.  Tasks take and
return plain data (the scenario as JSON, weights as arrays), so any executor that can
ship Python functions works.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.rl.agents import BANK_FORMAT, KINDS, RLRouter, router_from_saved
from trim_pomdp.rl.ppo import PPOConfig, _train_task
from trim_pomdp.simulation.scenario import Scenario, load_scenario


class RLRouterBank:
    """Trained routers of one kind, one per lambda (sorted by lambda), with learning curves."""

    def __init__(self, routers: Sequence[RLRouter],
                 histories: Sequence[dict[str, list[float]]] | None = None) -> None:
        if not routers:
            raise ValueError("an RLRouterBank needs at least one router")
        bad = [r.lam for r in routers if not np.isfinite(r.lam)]
        if bad:
            # a NaN lambda would make router() pick that router for every budget
            raise PolicyFormatError(f"every router's lambda must be finite; got {bad}")
        kinds = {r.kind for r in routers}
        if len(kinds) != 1:
            raise ValueError(f"all routers of a bank must be of one kind; got {sorted(kinds)}")
        order = np.argsort([r.lam for r in routers])
        self.routers = [routers[i] for i in order]
        self.histories = [dict(histories[i]) for i in order] if histories else [
            {} for _ in order]
        self.kind = self.routers[0].kind

    @property
    def lambdas(self) -> list[float]:
        return [r.lam for r in self.routers]

    def __len__(self) -> int:
        return len(self.routers)

    def router(self, lam: float) -> RLRouter:
        """The router trained for the lambda closest to ``lam``."""
        i = int(np.argmin(np.abs(np.asarray(self.lambdas) - lam)))
        return self.routers[i]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """One ``.npz``: weights under ``"<i>/<name>"`` and a JSON ``__meta__`` string."""
        arrays: dict[str, np.ndarray] = {}
        entries = []
        for i, (r, h) in enumerate(zip(self.routers, self.histories, strict=True)):
            for k, v in r.params.items():
                arrays[f"{i}/{k}"] = v
            entries.append({"lam": r.lam, "token_scale": r.token_scale,
                            "metadata": r.metadata, "history": h})
        BANK_FORMAT.save(path, arrays, {"kind": self.kind, "routers": entries})

    @classmethod
    def load(cls, path: str | Path) -> RLRouterBank:
        path = Path(path)
        arrays, meta = BANK_FORMAT.load(path)
        entries = meta.get("routers")
        if not isinstance(entries, list) or not entries:
            raise PolicyFormatError(f"{path}: field 'routers' must be a non-empty list; got "
                                    f"{type(entries).__name__}")
        # Weights are stored as "<i>/<name>": every array must belong to a listed router.
        stray = sorted(k for k in arrays
                       if "/" not in k or k.split("/", 1)[0] not in
                       {str(i) for i in range(len(entries))})
        if stray:
            raise PolicyFormatError(f"{path}: arrays {stray[:5]} belong to no router of "
                                    f"field 'routers' ({len(entries)} routers)")
        routers, hists = [], []
        for i, e in enumerate(entries):
            where = f"{path}: router {i}"
            if not isinstance(e, dict):
                raise PolicyFormatError(f"{where}: expected an object; got {type(e).__name__}")
            params = {k.split("/", 1)[1]: v for k, v in arrays.items()
                      if k.split("/", 1)[0] == str(i)}
            routers.append(router_from_saved(meta.get("kind"), e, params, where))
            history = e.get("history", {})
            if not isinstance(history, dict):
                raise PolicyFormatError(f"{where}: field 'history' must be an object; got "
                                        f"{type(history).__name__}")
            hists.append(history)
        return cls(routers, hists)

    def family(self) -> Any:
        """This bank as an evaluation family (:class:`trim_pomdp.routing.protocols.Family`),
        sweeping lambda, for :func:`trim_pomdp.evaluation.sweep.evaluate`."""
        from trim_pomdp.routing.protocols import Family

        return Family(KINDS[self.kind], list(self.lambdas), self.router, param_name="lambda")

    def plot_learning_curves(self, path: str | Path) -> Path:
        """Validation objective and training return against iteration, one line per lambda."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for r, h in zip(self.routers, self.histories, strict=True):
            if not h:
                continue
            it = np.asarray(h["iteration"])
            axes[0].plot(it, h["train_return"], label=f"lambda={r.lam:.3g}")
            val = np.asarray(h["val_objective"])
            ok = ~np.isnan(val)
            axes[1].plot(it[ok], val[ok], marker="o", label=f"lambda={r.lam:.3g}")
        axes[0].set(xlabel="PPO iteration", ylabel="mean episode return (training)",
                    title=f"{KINDS[self.kind]}: training")
        axes[1].set(xlabel="PPO iteration", ylabel="accuracy - lambda x strong tokens",
                    title="validation objective (greedy policy)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def train_grid(scenario: Scenario | str, lambdas: Sequence[float], *, kind: str = "agg",
               config: PPOConfig | None = None, executor: Executor | None = None,
               progress: bool = True) -> RLRouterBank:
    """Train one router per lambda, in parallel through ``executor``.

    Parameters
    ----------
    scenario : Scenario or str
    lambdas : sequence of float
        Budgets (price per strong token).
    kind : {"agg", "seq"}
    config : PPOConfig, optional
        The same settings for every lambda.
    executor : concurrent.futures.Executor, optional
        Where to run the tasks.  Default: a local process pool with one worker per core
        (at most one per lambda).  Pass ``distributed.Client(...).get_executor()`` to run
        on a Dask cluster.
    progress : bool
        Print a line to stderr as each lambda finishes.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}; got {kind!r}")
    lams = [float(x) for x in lambdas]
    if not lams:
        raise ValueError("lambdas must not be empty")
    bad = [x for x in lams if not (np.isfinite(x) and x >= 0)]
    if bad:
        raise ValueError(f"lambdas must be finite and >= 0; got {bad}")
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    cfg = config or PPOConfig()
    cfg_dict: dict[str, Any] = asdict(cfg)
    scen_json = scenario.to_json()
    own = executor is None
    if own:
        executor = ProcessPoolExecutor(max_workers=max(1, min(len(lams), os.cpu_count() or 1)))
    assert executor is not None
    t0 = time.perf_counter()
    try:
        futures = {executor.submit(_train_task, scen_json, lam, kind, cfg_dict): lam
                   for lam in lams}
        results = []
        for done, fut in enumerate(as_completed(futures), 1):
            out = fut.result()
            results.append(out)
            if progress:
                m = out["metadata"]
                print(f"[{KINDS[kind]}] {done}/{len(lams)} lambda={out['lam']:.3g} trained "
                      f"(best iteration {m['best_iteration']}, validation objective "
                      f"{m['best_val_objective']:.4f}; {time.perf_counter() - t0:.0f}s)",
                      file=sys.stderr, flush=True)
    finally:
        if own:
            executor.shutdown()
    routers = [RLRouter(o["kind"], o["params"], lam=o["lam"], token_scale=o["token_scale"],
                        metadata=o["metadata"]) for o in results]
    return RLRouterBank(routers, [o["history"] for o in results])


def _rl_family(kind: str, options: Any) -> Any:
    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError(f"the trim-{kind} family needs FamilyOptions(scenario=...) to train on")
    n = getattr(options, "n_params", None) or 6
    seed = int(getattr(options, "seed", 0))
    # trained on its own worlds (seeded by `seed`), never on the evaluation world
    bank = train_grid(scenario, list(np.geomspace(1e-4, 3e-3, int(n))), kind=kind,
                      config=PPOConfig(seed=seed), progress=True)
    return bank.family()


def agg_family(options: Any = None) -> Any:
    """Factory of the ``"trim-agg"`` evaluation family: trains TRIM-Agg on
    ``options.scenario`` over ``options.n_params`` (default 6) lambdas in [1e-4, 3e-3]."""
    return _rl_family("agg", options)


def seq_family(options: Any = None) -> Any:
    """Factory of the ``"trim-seq"`` evaluation family (TRIM-Seq; see :func:`agg_family`)."""
    return _rl_family("seq", options)
