"""Policy banks: one solved :class:`~trim_pomdp.routing.policy.TrimPolicy` per budget
multiplier lambda, the default lambda grid, the grid solve, and the bank's file format
(``.npz`` + a JSON sidecar, no pickles).

A bank may hold the policies of a :class:`~trim_pomdp.routing.model.TrimModel`
(TRIM-POMDP) or of a :class:`~trim_pomdp.routing.latent_model.LatentTrimModel`
(TRIM-POMDP+); :meth:`PolicyBank.load` picks the model class from the sidecar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp import _validate as _v
from trim_pomdp._io import Artefact
from trim_pomdp.errors import ModelValidationError, PolicyFormatError
from trim_pomdp.routing.latent_model import LatentTrimModel, latent_belief_points
from trim_pomdp.routing.model import MAX_VALUE, TrimModel
from trim_pomdp.routing.policy import TrimPolicy
from trim_pomdp.routing.protocols import Family

__all__ = ["FORMAT_VERSION", "PolicyBank", "default_lambdas", "legacy_lambdas",
           "nearest_lambda_index", "solve_grid",
           "expected_cost_fractions", "default_budget",
           "solve_latent_grid", "load_latent_bank"]

FORMAT_VERSION = 1
#: the bank's file format: ``<stem>.npz`` and the JSON sidecar ``<stem>.json``
_FORMAT = Artefact(
    kind="trim_pomdp.PolicyBank", version=FORMAT_VERSION, what="PolicyBank",
    error=PolicyFormatError, meta_key=None, indent=2,
    arrays=("lambdas", "alphas", "actions", "offsets", "counts", "value_b0", "upper_bound",
            "model_hazard", "model_obs_matrix", "model_token_probs", "model_strong_tokens",
            "model_token_edges", "model_score_edges", "model_min_edges"))

#: model classes a bank can hold, by the ``latent`` flag of the sidecar's model metadata
_MODEL_CLASSES: dict[bool, Any] = {False: TrimModel, True: LatentTrimModel}


class PolicyBank:
    """One :class:`TrimPolicy` per budget multiplier lambda, sorted by lambda (increasing:
    from the most to the least generous budget).  Indexable; ``save``/``load`` as
    ``.npz`` + a JSON sidecar (``<path>.json``) with ``format_version``."""

    def __init__(self, model: TrimModel, policies: Sequence[TrimPolicy], *,
                 default_lambda: float | None = None,
                 target_cost_fraction: float | None = None) -> None:
        if not policies:
            raise PolicyFormatError("a PolicyBank needs at least one policy")
        for p in policies:
            if p.model is not model:
                raise PolicyFormatError("every policy of a PolicyBank must share its TrimModel")
        bad = [(i, p.lam) for i, p in enumerate(policies) if not math.isfinite(p.lam)]
        if bad:
            # argsort and nearest() would put a NaN lambda anywhere: nearest() returned
            # that policy for every budget
            i, lam = bad[0]
            raise PolicyFormatError(f"policy {i} of the PolicyBank has lambda {lam}; every "
                                    "lambda must be finite")
        order = np.argsort([p.lam for p in policies], kind="stable")
        self.model = model
        self.policies: list[TrimPolicy] = [policies[i] for i in order]
        self.lambdas = np.array([p.lam for p in self.policies])
        self.lambdas.flags.writeable = False
        #: the lambda a user of the bank gets without choosing one (``trim-pomdp route
        #: --policy BANK`` without ``--budget``), and the cost fraction it was chosen for
        #: (:func:`default_budget`); None when the bank does not record one
        self.default_lambda = None if default_lambda is None else float(default_lambda)
        self.target_cost_fraction = (None if target_cost_fraction is None
                                     else float(target_cost_fraction))

    def __len__(self) -> int:
        return len(self.policies)

    def __getitem__(self, i: int) -> TrimPolicy:
        return self.policies[i]

    def __iter__(self):
        return iter(self.policies)

    def nearest(self, lam: float) -> TrimPolicy:
        """The policy whose lambda is closest to ``lam`` (:func:`nearest_lambda_index`)."""
        return self.policies[nearest_lambda_index(self.lambdas, lam)]

    def family(self, name: str | None = None):
        """The budget-sweep :class:`~trim_pomdp.routing.protocols.Family` (parameter
        ``lambda``) for :func:`trim_pomdp.evaluation.sweep.evaluate`, named ``name`` (default
        ``"trim-pomdp"``, or ``"trim-pomdp+"`` for a bank of a
        :class:`~trim_pomdp.routing.latent_model.LatentTrimModel`)."""
        from trim_pomdp.routing.router import TrimBatchPolicy  # router imports the policy

        if name is None:
            name = getattr(self.model, "FAMILY_NAME", "trim-pomdp")

        by_lam = {float(p.lam): p for p in self.policies}

        def make_policy(lam: float):
            return TrimBatchPolicy(by_lam[float(lam)], name=name)

        return Family(name, [float(p.lam) for p in self.policies], make_policy, "lambda")

    # -- persistence -------------------------------------------------------------------------
    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        """The bank's ``.npz`` and its JSON sidecar (``.npz`` appended when missing)."""
        npz, sidecar = _FORMAT.paths(path)
        assert sidecar is not None
        return npz, sidecar

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``, no pickles) and ``path`` with suffix ``.json``.

        Atomic: both files are written to temporary files in the same folder and renamed
        over the targets only when both are complete, so a failed save (disk full) leaves
        the previous bank intact (:class:`~trim_pomdp.errors.OutputWriteError`).  Every
        policy needs finite ``value_b0`` and ``upper_bound`` (the solver's bounds):
        :meth:`load` rejects non-finite ones, so they are refused here already.
        """
        npz = self._paths(path)[0]
        for p in self.policies:
            if not (math.isfinite(p.value_b0) and math.isfinite(p.upper_bound)):
                raise PolicyFormatError(
                    f"policy at lambda={p.lam:g} has value_b0={p.value_b0!r}, upper_bound="
                    f"{p.upper_bound!r}; a saved bank records finite solver bounds"
                )
        counts = np.array([p.alphas.shape[0] for p in self.policies], dtype=np.int64)
        arrays = self.model._to_arrays()
        arrays.update(
            lambdas=np.asarray(self.lambdas),
            alphas=np.concatenate([p.alphas for p in self.policies], axis=0),
            actions=np.concatenate([p.actions for p in self.policies]),
            offsets=np.stack([p.offsets for p in self.policies]),
            counts=counts,
            value_b0=np.array([p.value_b0 for p in self.policies]),
            upper_bound=np.array([p.upper_bound for p in self.policies]),
        )
        meta = {
            "n_policies": len(self),
            "model": self.model._to_meta(),
            "lambdas": [float(v) for v in self.lambdas],
        }
        # optional keys (format_version 1 readers that predate them ignore them)
        if self.default_lambda is not None:
            meta["default_lambda"] = self.default_lambda
        if self.target_cost_fraction is not None:
            meta["target_cost_fraction"] = self.target_cost_fraction
        npz.parent.mkdir(parents=True, exist_ok=True)
        return _FORMAT.save(npz, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> PolicyBank:
        """Read a bank written by :meth:`save` (never unpickles).

        Everything is checked before use: the sidecar's field types, every array's dtype
        (real numbers; integers for ``actions``/``offsets``/``counts``), shape and
        finiteness (alphas, lambdas, bounds, model arrays), action and offset ranges, and
        that sidecar and ``.npz`` agree (number of policies, lambdas, min-score feature).

        Raises
        ------
        FileNotFoundError
            The sidecar or the ``.npz`` is missing.
        PolicyFormatError
            Anything else, in one line naming the file and the field or array.
        """
        npz, meta_path = cls._paths(path)
        meta = _FORMAT.read_meta(npz)  # the sidecar first: kind and format_version
        E = PolicyFormatError
        where = str(meta_path)
        mmeta = _v.json_dict(meta, "model", where, E)
        mwhere = f"{meta_path}: model"
        latent = _v.json_bool(mmeta, "latent", mwhere, E, default=False)
        _v.json_number(mmeta, "p_w", mwhere, E, lo=0.0, hi=1.0)
        _v.json_number(mmeta, "p_s", mwhere, E, lo=0.0, hi=1.0)
        _v.json_int(mmeta, "max_steps", mwhere, E, lo=1, hi=100_000)
        uses_min = _v.json_bool(mmeta, "uses_min", mwhere, E)
        n_policies = _v.json_int(meta, "n_policies", where, E, lo=1, hi=1_000_000)
        lams_meta = meta.get("lambdas")
        if not isinstance(lams_meta, list):
            raise E(f"{where}: field 'lambdas' must be a list of numbers; got "
                    f"{_v._short(lams_meta)}")
        lams_meta = [_v.json_number({"lambdas": v}, "lambdas", f"{where}: lambdas[{i}]", E,
                                    lo=0.0) for i, v in enumerate(lams_meta)]
        arrays = _FORMAT.read_arrays(npz)
        w = str(npz)
        # model arrays: real and finite before any model code sees them
        for k in list(arrays):
            if k.startswith(("model_", "latent_")):
                arrays[k] = _v.float_array(arrays[k], k, w, E)
        n_min_edges = arrays["model_min_edges"].size
        if not uses_min and n_min_edges:
            raise E(f"{where}: model.uses_min is false but {npz.name} has {n_min_edges} "
                    "min-score bin edges (sidecar and .npz disagree on the min-score feature)")
        model_cls = _MODEL_CLASSES[latent]
        try:
            # a hostile finite 1e308 overflows the row sums to inf, which the model then
            # rejects; numpy's overflow warning on the way says nothing more
            with np.errstate(over="ignore", invalid="ignore"):
                model = model_cls._from_saved(mmeta, arrays)
        except (ModelValidationError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise E(f"{npz}: the saved model is invalid: {exc}") from None
        lams = _v.float_array(arrays["lambdas"], "lambdas", w, E, shape=(None,), lo=0.0)
        n = lams.shape[0]
        if n != n_policies or n != len(lams_meta):
            raise E(f"{npz}: holds {n} policies (lambdas) but the sidecar {meta_path.name} "
                    f"says n_policies={n_policies} with {len(lams_meta)} lambdas")
        if not np.array_equal(lams, np.asarray(lams_meta, dtype=np.float64)):
            raise E(f"{npz}: lambdas {lams.tolist()} differ from the sidecar's {lams_meta}")
        counts = _v.int_array(arrays["counts"], "counts", w, E, shape=(n,), lo=1)
        total = int(counts.sum())
        # values are P(success) - lam * tokens: far inside +-1e15; the bound keeps every
        # alpha . belief product finite
        alphas = _v.float_array(arrays["alphas"], "alphas", w, E, shape=(total, model.n_hidden),
                                lo=-MAX_VALUE, hi=MAX_VALUE)
        actions = _v.int_array(arrays["actions"], "actions", w, E, shape=(total,), lo=0,
                               hi=model.n_actions - 1)
        n_blocks = model.horizon * model.n_observed + 1
        offsets = _v.int_array(arrays["offsets"], "offsets", w, E, shape=(n, n_blocks), lo=0)
        value_b0 = _v.float_array(arrays["value_b0"], "value_b0", w, E, shape=(n,),
                                  lo=-MAX_VALUE, hi=MAX_VALUE)
        upper = _v.float_array(arrays["upper_bound"], "upper_bound", w, E, shape=(n,),
                               lo=-MAX_VALUE, hi=MAX_VALUE)
        ends = np.cumsum(counts)
        policies = []
        for i in range(n):
            lo, hi = int(ends[i] - counts[i]), int(ends[i])
            try:
                policies.append(TrimPolicy(
                    model=model, lam=float(lams[i]), alphas=alphas[lo:hi],
                    actions=actions[lo:hi], offsets=offsets[i],
                    value_b0=float(value_b0[i]), upper_bound=float(upper[i])))
            except PolicyFormatError as exc:
                raise E(f"{npz}: policy {i} (lambda={lams[i]:g}): {exc}") from None
        defaults = {}
        for key in ("default_lambda", "target_cost_fraction"):
            v = meta.get(key)
            if v is not None:
                if (isinstance(v, bool) or not isinstance(v, (int, float))
                        or not math.isfinite(v) or v < 0):
                    raise E(f"{meta_path}: {key} must be a finite number >= 0; got {v!r}")
                defaults[key] = float(v)
        return cls(model, policies, **defaults)


def nearest_lambda_index(lambdas: ArrayLike, lam: float) -> int:
    """Index of the grid lambda closest to ``lam``: on a log scale among the positive
    lambdas when ``lam > 0`` (a grid's ``lambda = 0`` is then chosen only if the grid has
    no positive lambda), else the smallest lambda."""
    lams = np.asarray(lambdas, dtype=np.float64)
    pos = np.flatnonzero(lams > 0)
    if lam > 0 and pos.size:
        return int(pos[np.argmin(np.abs(np.log(lams[pos]) - math.log(lam)))])
    return int(np.argmin(np.abs(lams - lam)))


def default_lambdas(model: TrimModel, n: int = 32) -> NDArray[np.float64]:
    """The default grid of budget multipliers: ``lambda = 0`` (the most accurate policy
    the model has, whatever it costs) followed by ``n - 1`` geometric values spanning
    "regenerate whenever it helps at all" to "never regenerate", ``lam * c_bar`` from
    1e-3 to 1, with ``c_bar`` the mean strong tokens of one regeneration.

    ``lambda = 0`` is on the grid because the geometric part alone stops short of the
    accuracy plateau: with 32 geometric values from 1e-3 / c_bar the best policy of the
    default scenario's fitted model was 0.28 accuracy points below the threshold
    router's best, with lambda = 0 added it reached it (benchmarks/bench_defaults.py).
    ``n = 1``: the single value 1e-3 / c_bar.
    """
    c_bar = float(model.token_probs @ model.strong_tokens)
    if c_bar <= 0:
        raise ModelValidationError("expected strong tokens per step must be > 0 for a lambda grid")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of lambdas must be a positive integer; got {n!r}")
    if n == 1:
        return np.array([1e-3 / c_bar])
    return np.concatenate([[0.0], np.geomspace(1e-3, 1.0, n - 1) / c_bar])


def legacy_lambdas(model: TrimModel, n: int = 32) -> NDArray[np.float64]:
    """The grid :func:`default_lambdas` returned before ``lambda = 0`` was added: ``n``
    geometric values of ``lam * c_bar`` from 1e-3 to 1 (kept for comparisons,
    benchmarks/bench_defaults.py)."""
    c_bar = float(model.token_probs @ model.strong_tokens)
    if c_bar <= 0:
        raise ModelValidationError("expected strong tokens per step must be > 0 for a lambda grid")
    return np.geomspace(1e-3, 1.0, n) / c_bar


def solve_grid(
    model: TrimModel, lambdas: ArrayLike | None = None, **solver_opts: Any
) -> PolicyBank:
    """Solve the TRIM POMDP for every ``lambda`` (in parallel in C++ through
    :func:`trim_pomdp.engine.finite.solve_finite_many`) and return the :class:`PolicyBank`.

    ``solver_opts`` go to ``solve_finite_many`` (``belief_points``, ``grid_resolution``,
    ``n_samples``, ``n_refine``, ``n_threads``, ``seed``); the engine's defaults otherwise.
    """
    from trim_pomdp.engine.finite import solve_finite_many  # loads the compiled core

    lams = default_lambdas(model) if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    if lams.ndim != 1 or lams.size == 0:
        raise ModelValidationError(
            f"lambdas must be a non-empty 1-D sequence; got shape {lams.shape}"
        )
    base = model.to_finite(float(lams[0]))
    models = [base] + [base.with_rewards(model.arrays(float(v))["R"]) for v in lams[1:]]
    solved = solve_finite_many(models, **solver_opts)
    policies = [TrimPolicy.from_finite(model, float(v), p)
                for v, p in zip(lams, solved, strict=True)]
    return PolicyBank(model, policies)



def expected_cost_fractions(bank: PolicyBank) -> NDArray[np.float64]:
    """Each policy's strong-token cost as a fraction of always-strong's, in the bank's own
    model, estimated from the solved values alone (no simulation).

    The value at the start is ``V(lambda) = P(success) - lambda * C(lambda)`` with ``C``
    the expected strong tokens per query of the optimal policy at ``lambda``.  ``V`` is the
    upper envelope of lines in ``lambda``, so (envelope theorem) ``dV/dlambda = -C``; ``C``
    at each solved lambda is ``-dV/dlambda`` by finite differences of ``value_b0`` over the
    grid (``numpy.gradient``: central inside, one-sided at the ends; at the default grid's
    ``lambda = 0`` that is the secant over ``[0, lambda_1]``, which lies between the costs
    at ``lambda_1`` and at 0 because ``V`` is convex).  Always-strong
    regenerates every step, so its cost is ``E[L] * sum_k q_k c_k`` with ``E[L] =
    sum_t prod_{u<t} (1 - h(u))``, the expected number of steps under the hazard (routing
    does not change the length).  The estimate inherits the solver's gap and the grid's
    coarseness; on the default scenario's 32-lambda grid it is within 0.03 of the
    fraction the simulator measures at every lambda > 0 (tests/test_bank_defaults.py).  A
    one-policy bank has no differences: its fraction is NaN.
    """
    m = bank.model
    lams = np.asarray(bank.lambdas, dtype=np.float64)
    if lams.size < 2:
        return np.full(lams.size, np.nan)
    values = np.array([p.value_b0 for p in bank], dtype=np.float64)
    cost = -np.gradient(values, lams)
    hz = np.asarray(m.hazard, dtype=np.float64)
    expected_steps = float(np.concatenate([[1.0], np.cumprod(1.0 - hz)[:-1]]).sum())
    always_strong = expected_steps * float(np.asarray(m.token_probs) @ np.asarray(m.strong_tokens))
    if always_strong <= 0:
        raise ModelValidationError("always-strong costs nothing in this model (no strong tokens)")
    return np.clip(cost / always_strong, 0.0, None)


def default_budget(bank: PolicyBank, target_cost_fraction: float = 0.10) -> float:
    """The solved lambda whose :func:`expected_cost_fractions` is nearest
    ``target_cost_fraction`` (the bank's only lambda if it holds one policy).  A default
    for a user who has not chosen a budget; :func:`~trim_pomdp.evaluation.budget.calibrate`
    measures the fraction on a scenario or on traces instead."""
    tcf = float(target_cost_fraction)
    if not (0.0 <= tcf <= 1.0):
        raise ValueError(f"target_cost_fraction must be in [0, 1]; got {target_cost_fraction!r}")
    if len(bank) == 1:
        return float(bank.lambdas[0])
    fr = expected_cost_fractions(bank)
    return float(bank.lambdas[int(np.argmin(np.abs(fr - tcf)))])


def load_latent_bank(path: Any):
    """Load a :class:`PolicyBank` of a :class:`LatentTrimModel` written by
    ``bank.save(path)``; the same as :meth:`PolicyBank.load `
    (which reads either kind), but refusing a bank of a plain ``TrimModel``.

    Raises
    ------
    PolicyFormatError
        Not a PolicyBank file, not a latent one, or malformed arrays.
    """
    bank = PolicyBank.load(path)
    if not isinstance(bank.model, LatentTrimModel):
        raise PolicyFormatError(f"{PolicyBank._paths(path)[1]}: not a latent-model PolicyBank "
                                f"of format_version {FORMAT_VERSION}")
    return bank


def solve_latent_grid(model: LatentTrimModel, lambdas: ArrayLike | None = None, *,
                      n_samples: int = 128, n_refine: int = 0, extra_points: bool = True,
                      **solver_opts: Any):
    """Solve the latent model for every lambda (C++ ``solve_finite_many``) and return a
    :class:`PolicyBank` (the Router and the batch policy of
    :mod:`trim_pomdp.routing.router` run it unchanged: their kernels are general in the number of
    hidden states).

    With one class (``D = B = 1``) the engine's defaults are used, so the result is exactly
    ``solve_grid`` on the base TrimModel.  With more classes the belief simplex has ``3 D B``
    dimensions and the engine's simplex grid is off (``S > 4``), so the belief sets come from
    ``n_samples`` forward trajectories (default 128; measured on D = B = 3: 128 samples
    without a refinement pass gave a higher value at b0 than 16 or 64 samples with one, in
    less time) plus the class-mixture points of :func:`latent_belief_points`
    (``extra_points``).  ``solver_opts`` go to ``solve_finite_many``."""
    opts = dict(solver_opts)
    if model.n_classes > 1:
        opts.setdefault("n_samples", n_samples)
        opts.setdefault("n_refine", n_refine)
        if extra_points and "belief_points" not in opts:
            opts["belief_points"] = latent_belief_points(model)
    return solve_grid(model, lambdas, **opts)


