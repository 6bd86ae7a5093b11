"""Finite-horizon POMDPs with fully observed state variables (MOMDPs), and their solver.

The state is a pair ``(x, s)``: ``x`` in ``0..X-1`` is observed exactly at every decision
epoch (it is indexed, never filtered), ``s`` in ``0..S-1`` is hidden and tracked by a belief
``b`` over the S-simplex.  Decision epochs are ``t = 0..H-1``; after the decision of epoch
``H-1`` the terminal reward ``R_final[x, s]`` is collected.  The optimal value satisfies

.. math::

    V_H(x, b) = b \\cdot R_{final}[x], \\qquad
    V_t(x, b) = \\max_a \\Big[ b \\cdot R[t,a,x] + \\gamma \\sum_{x', o}
        P(x', o \\mid x, b, a)\\, V_{t+1}(x', b'_{x',o}) \\Big],

    b'_{x',o}(s') \\propto Z[t,a,x',s',o] \\sum_s b(s)\\, T[t,a,x,s,x',s'].

:func:`solve_finite` runs backward point-based value iteration in C++ (``trim_pomdp._core``):
one set of alpha vectors per ``(t, x)`` (a lower bound: every vector is the value of a
conditional plan) and a time-indexed fast informed bound tightened by sawtooth interpolation
at the belief points (an upper bound), so every solve reports the lower bound, upper bound
and gap at the initial belief.  :func:`solve_finite_many` solves many models (e.g. one per
budget lambda) in parallel on a C++ thread pool with the GIL released.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import ModelValidationError, PolicyFormatError

if TYPE_CHECKING:  # pragma: no cover
    from trim_pomdp.model import POMDP

__all__ = [
    "FiniteHorizonPOMDP",
    "FiniteHorizonPolicy",
    "FiniteSolveInfo",
    "solve_finite",
    "solve_finite_many",
]

FORMAT_VERSION = 1
_POLICY_KIND = "trim_pomdp.FiniteHorizonPolicy"


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _as_float_array(value: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        arr = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ModelValidationError(f"{name} must be a numeric array: {exc}") from None
    return arr


def _check_finite(arr: NDArray[np.float64], name: str) -> None:
    if not np.all(np.isfinite(arr)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ModelValidationError(f"{name}{list(idx)} is {arr[idx]}; expected a finite number")


def _check_stochastic(
    arr: NDArray[np.float64], name: str, labels: tuple[str, ...], n_row_dims: int, tol: float
) -> None:
    """Non-negative entries and sums over the last ``n_row_dims`` axes equal to 1."""
    _check_finite(arr, name)
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ModelValidationError(f"{name}{list(idx)} is {arr[idx]}; expected >= 0")
    sums = arr.sum(axis=tuple(range(arr.ndim - n_row_dims, arr.ndim)))
    bad = np.abs(sums - 1.0) > tol
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        parts = [f"{lab}={i}" for lab, i in zip(labels, idx, strict=True)]
        where = ", ".join(parts + [":"] * n_row_dims)
        raise ModelValidationError(
            f"{name}[{where}] sums to {sums[idx]:.10g}; expected 1 (tol {tol:g})"
        )


class FiniteHorizonPOMDP:
    """A finite-horizon POMDP with a fully observed state variable (MOMDP).

    Parameters
    ----------
    T : array_like, shape (H, A, X, S, X, S) or (A, X, S, X, S)
        ``T[t, a, x, s, x', s'] = P(x', s' | x, s, a)`` at epoch ``t``; without the leading
        axis the same transition is used at every epoch (stored once, not copied H times).
    Z : array_like, shape (H, A, X, S, O) or (A, X, S, O)
        ``Z[t, a, x', s', o] = P(o | a, x', s')`` for the observation received after the
        transition made at epoch ``t``.
    R : array_like, shape (H, A, X, S) or (A, X, S)
        Expected immediate reward of action ``a`` in state ``(x, s)`` at epoch ``t``.
    R_final : array_like, shape (X, S), optional
        Terminal reward collected at epoch ``H``; zero by default.
    x0 : int or array_like of shape (X,), default 0
        Initial observed value, or its distribution.
    b0 : array_like, shape (S,) or (X, S), optional
        Initial hidden belief (conditional on ``x0 = x`` when 2-D); uniform by default.
    horizon : int, optional
        Number of decision epochs H.  Required when none of T, Z, R has an epoch axis;
        otherwise it must agree with them.
    discount : float, default 1.0
        Discount factor in (0, 1].
    tol : float, default 1e-6
        Tolerance on the row sums of T, Z, x0 and b0.

    Raises
    ------
    ModelValidationError
        On any wrong shape, non-finite or negative probability, or a row not summing to 1; the
        message names the array and the index, e.g.
        ``"T[t=3, a=1, x=2, s=0, :, :] sums to 0.98; expected 1 (tol 1e-06)"``.
    """

    def __init__(
        self,
        T: ArrayLike,
        Z: ArrayLike,
        R: ArrayLike,
        *,
        R_final: ArrayLike | None = None,
        x0: int | ArrayLike = 0,
        b0: ArrayLike | None = None,
        horizon: int | None = None,
        discount: float = 1.0,
        tol: float = 1e-6,
    ) -> None:
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ModelValidationError(f"tol must be a finite number >= 0; got {tol!r}")
        T = _as_float_array(T, "T")
        Z = _as_float_array(Z, "Z")
        R = _as_float_array(R, "R")
        if T.ndim not in (5, 6):
            raise ModelValidationError(
                "T must have shape (horizon, n_actions, n_observed, n_hidden, n_observed, "
                "n_hidden) or (n_actions, n_observed, n_hidden, n_observed, n_hidden); "
                f"got {T.shape}"
            )
        t_off = T.ndim - 5
        A, X, S = T.shape[t_off : t_off + 3]
        if T.shape[t_off + 3 :] != (X, S) or min(A, X, S) < 1:
            raise ModelValidationError(
                "T must have shape (..., n_actions, n_observed, n_hidden, n_observed, n_hidden) "
                f"with the last two equal to (n_observed, n_hidden) = ({X}, {S}); got {T.shape}"
            )
        if Z.ndim not in (4, 5) or Z.shape[Z.ndim - 4 : Z.ndim - 1] != (A, X, S) or Z.shape[-1] < 1:
            raise ModelValidationError(
                "Z must have shape ([horizon,] n_actions, n_observed, n_hidden, n_observations) "
                f"= ([H,] {A}, {X}, {S}, O); got {Z.shape}"
            )
        O = Z.shape[-1]  # noqa: E741 (O: observations, as in the maths)
        if R.ndim not in (3, 4) or R.shape[R.ndim - 3 :] != (A, X, S):
            raise ModelValidationError(
                "R must have shape ([horizon,] n_actions, n_observed, n_hidden) = "
                f"([H,] {A}, {X}, {S}); got {R.shape}"
            )
        # The horizon: every epoch axis present must agree with each other and with `horizon`.
        epochs = {
            name: arr.shape[0]
            for name, arr, nd in (("T", T, 6), ("Z", Z, 5), ("R", R, 4))
            if arr.ndim == nd
        }
        if horizon is not None:
            if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)):
                raise ModelValidationError(f"horizon must be an int; got {horizon!r}")
            horizon = int(horizon)
            if horizon < 1:
                raise ModelValidationError(f"horizon must be >= 1; got {horizon}")
            epochs["horizon"] = horizon
        if not epochs:
            raise ModelValidationError(
                "horizon is required when T, Z and R have no epoch axis (time-invariant model)"
            )
        if len(set(epochs.values())) != 1:
            found = ", ".join(f"{k}: {v}" for k, v in epochs.items())
            raise ModelValidationError(f"inconsistent number of epochs ({found})")
        H = next(iter(epochs.values()))
        if H < 1:
            raise ModelValidationError(f"the horizon must be >= 1; got {H}")

        lab_T = (("t",) if T.ndim == 6 else ()) + ("a", "x", "s")
        _check_stochastic(T, "T", lab_T, 2, tol)
        lab_Z = (("t",) if Z.ndim == 5 else ()) + ("a", "x'", "s'")
        _check_stochastic(Z, "Z", lab_Z, 1, tol)
        _check_finite(R, "R")

        if R_final is None:
            R_final = np.zeros((X, S))
        R_final = _as_float_array(R_final, "R_final")
        if R_final.shape != (X, S):
            raise ModelValidationError(
                f"R_final must have shape (n_observed, n_hidden) = ({X}, {S}); got {R_final.shape}"
            )
        _check_finite(R_final, "R_final")

        if isinstance(x0, (int, np.integer)) and not isinstance(x0, bool):
            if not 0 <= int(x0) < X:
                raise ModelValidationError(f"x0 must be in [0, {X}); got {int(x0)}")
            x0_dist = np.zeros(X)
            x0_dist[int(x0)] = 1.0
        else:
            x0_dist = _as_float_array(x0, "x0")
            if x0_dist.shape != (X,):
                raise ModelValidationError(
                    f"x0 must be an int or have shape (n_observed,) = ({X},); got {x0_dist.shape}"
                )
            _check_stochastic(x0_dist, "x0", (), 1, tol)

        if b0 is None:
            b0_arr = np.full((X, S), 1.0 / S)
        else:
            b0_arr = _as_float_array(b0, "b0")
            if b0_arr.shape == (S,):
                b0_arr = np.broadcast_to(b0_arr, (X, S)).copy()
            elif b0_arr.shape != (X, S):
                raise ModelValidationError(
                    f"b0 must have shape (n_hidden,) = ({S},) or (n_observed, n_hidden) = "
                    f"({X}, {S}); got {b0_arr.shape}"
                )
            _check_stochastic(b0_arr, "b0", ("x",), 1, tol)

        if isinstance(discount, bool) or not isinstance(discount, (int, float, np.floating)):
            raise ModelValidationError(f"discount must be a number in (0, 1]; got {discount!r}")
        discount = float(discount)
        if not 0.0 < discount <= 1.0:
            raise ModelValidationError(f"discount must be in (0, 1]; got {discount}")

        self._T = _readonly(T)
        self._Z = _readonly(Z)
        self._R = _readonly(R)
        self._R_final = _readonly(R_final)
        self._x0 = _readonly(x0_dist)
        self._b0 = _readonly(b0_arr)
        self._H, self._A, self._X, self._S, self._O = int(H), int(A), int(X), int(S), int(O)
        self._discount = discount
        self._tol = float(tol)

    # ----------------------------------------------------------------- accessors
    @property
    def T(self) -> NDArray[np.float64]:
        """Transition array as given: (H, A, X, S, X, S) or time-invariant (A, X, S, X, S)."""
        return self._T

    @property
    def Z(self) -> NDArray[np.float64]:
        """Observation array as given: (H, A, X, S, O) or time-invariant (A, X, S, O)."""
        return self._Z

    @property
    def R(self) -> NDArray[np.float64]:
        """Reward array as given: (H, A, X, S) or time-invariant (A, X, S)."""
        return self._R

    @property
    def R_final(self) -> NDArray[np.float64]:
        """Terminal reward (X, S) collected at epoch H."""
        return self._R_final

    @property
    def x0(self) -> NDArray[np.float64]:
        """Distribution (X,) of the initial observed value."""
        return self._x0

    @property
    def b0(self) -> NDArray[np.float64]:
        """Initial hidden belief (X, S), row x conditional on x0 = x."""
        return self._b0

    @property
    def horizon(self) -> int:
        return self._H

    @property
    def n_actions(self) -> int:
        return self._A

    @property
    def n_observed(self) -> int:
        return self._X

    @property
    def n_hidden(self) -> int:
        return self._S

    @property
    def n_observations(self) -> int:
        return self._O

    @property
    def discount(self) -> float:
        return self._discount

    def T_at(self, t: int) -> NDArray[np.float64]:
        """``T[t]`` of shape (A, X, S, X, S) (a view)."""
        return self._T[self._epoch(t)] if self._T.ndim == 6 else self._T

    def Z_at(self, t: int) -> NDArray[np.float64]:
        """``Z[t]`` of shape (A, X, S, O) (a view)."""
        return self._Z[self._epoch(t)] if self._Z.ndim == 5 else self._Z

    def R_at(self, t: int) -> NDArray[np.float64]:
        """``R[t]`` of shape (A, X, S) (a view)."""
        return self._R[self._epoch(t)] if self._R.ndim == 4 else self._R

    def _epoch(self, t: int) -> int:
        if not 0 <= t < self._H:
            raise IndexError(f"epoch t must be in [0, {self._H}); got {t}")
        return t

    def with_rewards(
        self, R: ArrayLike, R_final: ArrayLike | None = None
    ) -> FiniteHorizonPOMDP:
        """The same model with other rewards (T, Z, x0, b0 shared, not re-validated).

        Cheap way to build one model per budget (e.g. TRIM's lambda grid).
        """
        R = _as_float_array(R, "R")
        shapes = {(self._A, self._X, self._S), (self._H, self._A, self._X, self._S)}
        if R.shape not in shapes:
            raise ModelValidationError(
                "R must have shape ([horizon,] n_actions, n_observed, n_hidden) = "
                f"([{self._H},] {self._A}, {self._X}, {self._S}); got {R.shape}"
            )
        _check_finite(R, "R")
        new = object.__new__(FiniteHorizonPOMDP)
        new.__dict__.update(self.__dict__)
        new._R = _readonly(R)
        if R_final is not None:
            R_final = _as_float_array(R_final, "R_final")
            if R_final.shape != (self._X, self._S):
                raise ModelValidationError(
                    f"R_final must have shape (n_observed, n_hidden) = ({self._X}, {self._S}); "
                    f"got {R_final.shape}"
                )
            _check_finite(R_final, "R_final")
            new._R_final = _readonly(R_final)
        return new

    def _core_dict(self) -> dict[str, Any]:
        return {
            "T": self._T,
            "Z": self._Z,
            "R": self._R,
            "R_final": self._R_final,
            "x0": self._x0,
            "b0": self._b0,
            "discount": self._discount,
            "horizon": self._H,
        }

    def __repr__(self) -> str:
        return (
            f"FiniteHorizonPOMDP(horizon={self._H}, n_actions={self._A}, "
            f"n_observed={self._X}, n_hidden={self._S}, n_observations={self._O}, "
            f"discount={self._discount})"
        )

    # ----------------------------------------------------------------- flattening
    def flatten_arrays(self) -> dict[str, Any]:
        """The equivalent plain POMDP as arrays (see :meth:`flatten`).

        Returns
        -------
        dict
            ``T (A, N, N)``, ``Z (A, N, X*O)``, ``R (A, N)``, ``b0 (N,)``, ``discount``,
            ``state_names``, ``observation_names`` and ``n_steps`` (steps after which all
            mass is in the terminal state), with ``N = H*X*S + 1`` (``+ 1`` more for the
            ``start`` state when ``x0`` is not a single value).
        """
        H, A, X, S, O = self._H, self._A, self._X, self._S, self._O  # noqa: E741 (O: observations, as in the maths)
        g = self._discount
        # A random x0 is revealed before the first decision: a zero-reward `start` state
        # draws it and emits it as an observation.  That delays everything by one step, so
        # the rewards are divided by the discount to keep the value at b0 exact.
        random_x0 = int(np.count_nonzero(self._x0)) > 1
        scale = 1.0 / g if random_x0 else 1.0
        n = H * X * S + 1 + int(random_x0)
        term = n - 1
        T = np.zeros((A, n, n))
        Zf = np.zeros((A, n, X * O))
        R = np.zeros((A, n))
        Z0 = self.Z_at(0)
        for t in range(H):
            Tt, Rt = self.T_at(t), self.R_at(t)
            base = t * X * S
            R[:, base : base + X * S] = scale * Rt.reshape(A, X * S)
            block = Tt.reshape(A, X * S, X * S)
            if t < H - 1:
                nxt = (t + 1) * X * S
                T[:, base : base + X * S, nxt : nxt + X * S] = block
                # The observation after the epoch-t transition reveals x' exactly, and o.
                Zt = self.Z_at(t)  # (A, X, S, O)
                for xp in range(X):
                    rows = slice(nxt + xp * S, nxt + (xp + 1) * S)
                    Zf[:, rows, xp * O : (xp + 1) * O] = Zt[:, xp]
            else:
                # Last epoch: fold the terminal reward into the reward and stop.
                R[:, base : base + X * S] += scale * g * block @ self._R_final.reshape(X * S)
                T[:, base : base + X * S, term] = 1.0
        del Z0
        T[:, term, term] = 1.0
        Zf[:, term, 0] = 1.0
        joint = (self._x0[:, None] * self._b0).reshape(X * S)
        b0 = np.zeros(n)
        if random_x0:
            start = n - 2
            T[:, start, : X * S] = joint
            for x in range(X):  # entering (0, x, s) shows (x, o=0)
                Zf[:, x * S : (x + 1) * S, x * O] = 1.0
            Zf[:, start, 0] = 1.0
            b0[start] = 1.0
        else:
            Zf[:, : X * S, 0] = 1.0  # layer 0 is never entered: any valid row will do
            b0[: X * S] = joint
        state_names = [f"t{t}_x{x}_s{s}" for t in range(H) for x in range(X) for s in range(S)]
        state_names += ["start", "terminal"] if random_x0 else ["terminal"]
        obs_names = [f"x{x}_o{o}" for x in range(X) for o in range(O)]
        return {
            "T": T,
            "Z": Zf,
            "R": R,
            "b0": b0,
            "discount": g,
            "state_names": state_names,
            "observation_names": obs_names,
            "n_steps": H + int(random_x0),
        }

    def flatten(self) -> POMDP:
        """The equivalent plain POMDP with discount ``self.discount`` (1.0 by default).

        States are ``(t, x, s)`` for ``t < H`` plus one absorbing zero-reward ``terminal``
        state; the transition of epoch ``H - 1`` leads to it and its reward folds in the
        terminal reward, ``R'[a, (H-1, x, s)] = R[H-1, a, x, s] + g sum_{x',s'} T[...]
        R_final[x', s']``.  Observations are pairs ``(x', o)`` so that ``x`` stays fully
        observed.  When ``x0`` is random, a zero-reward ``start`` state comes first and
        reveals it (every other reward is then divided by the discount, which cancels the
        extra step's discounting).  The value at ``b0`` equals this model's optimal value;
        write it with ``.to_file(path)`` to check it with SARSOP.
        """
        from trim_pomdp.model import POMDP

        f = self.flatten_arrays()
        return POMDP(
            f["T"],
            f["Z"],
            f["R"],
            f["discount"],
            f["b0"],
            state_names=f["state_names"],
            observation_names=f["observation_names"],
        )


@dataclass(frozen=True, kw_only=True)
class FiniteSolveInfo:
    """Diagnostics of one finite-horizon solve (all bounds at the initial belief).

    Attributes
    ----------
    lower_bound, upper_bound, gap : float
        Lower and upper bound on the optimal value at ``(x0, b0)`` and their difference.
    time_s : float
        Wall time of the C++ solve.
    n_alpha : int
        Alpha vectors over all ``(t, x)``.
    n_beliefs : int
        Belief points over all ``(t, x)`` in the last pass.
    n_passes : int
        Backward passes run (1 + refinement passes).
    history : ndarray, shape (n_passes, 3)
        ``(time_s, lower_bound, upper_bound)`` after each pass.
    """

    lower_bound: float
    upper_bound: float
    gap: float
    time_s: float
    n_alpha: int
    n_beliefs: int
    n_passes: int
    history: NDArray[np.float64] = field(repr=False)


class FiniteHorizonPolicy:
    """Alpha vectors per epoch and observed value of a finite-horizon MOMDP.

    The vectors of epoch ``t`` and observed value ``x`` are
    ``alphas[offsets[t*X + x] : offsets[t*X + x + 1]]`` with actions ``actions[...]``;
    ``value(t, x, b) = max_k alpha_k . b`` and ``action(t, x, b)`` is the action of the
    maximising vector.

    Parameters
    ----------
    alphas : array_like, shape (K, S)
    actions : array_like of int, shape (K,)
    offsets : array_like of int, shape (H*X + 1,)
    horizon, n_observed : int
    lower_bound, upper_bound, gap, time_s : float, optional
        Solve diagnostics at the initial belief (NaN when unknown).
    """

    def __init__(
        self,
        alphas: ArrayLike,
        actions: ArrayLike,
        offsets: ArrayLike,
        *,
        horizon: int,
        n_observed: int,
        lower_bound: float = math.nan,
        upper_bound: float = math.nan,
        gap: float = math.nan,
        time_s: float = math.nan,
        info: FiniteSolveInfo | None = None,
    ) -> None:
        alphas = np.asarray(alphas, dtype=np.float64)
        actions_arr = np.asarray(actions)
        offsets_arr = np.asarray(offsets)
        if alphas.ndim != 2 or alphas.shape[1] < 1:
            raise PolicyFormatError(f"alphas must have shape (K, n_hidden); got {alphas.shape}")
        K, S = alphas.shape
        if not np.all(np.isfinite(alphas)):
            raise PolicyFormatError("alphas must be finite")
        if actions_arr.shape != (K,) or not np.issubdtype(actions_arr.dtype, np.integer):
            raise PolicyFormatError(
                f"actions must be integers of shape (K,) = ({K},); got {actions_arr.dtype} "
                f"{actions_arr.shape}"
            )
        if np.any(actions_arr < 0):
            raise PolicyFormatError("actions must be >= 0")
        horizon, n_observed = int(horizon), int(n_observed)
        if horizon < 1 or n_observed < 1:
            raise PolicyFormatError(
                f"horizon and n_observed must be >= 1; got {horizon} and {n_observed}"
            )
        n_off = horizon * n_observed + 1
        if offsets_arr.shape != (n_off,) or not np.issubdtype(offsets_arr.dtype, np.integer):
            raise PolicyFormatError(
                f"offsets must be integers of shape (horizon*n_observed + 1,) = ({n_off},); got "
                f"{offsets_arr.dtype} {offsets_arr.shape}"
            )
        counts = np.diff(offsets_arr)
        if offsets_arr[0] != 0 or offsets_arr[-1] != K or np.any(counts < 1):
            raise PolicyFormatError(
                "offsets must start at 0, end at K and give every (t, x) at least one vector"
            )
        self.alphas = _readonly(alphas)
        self.actions = _readonly(actions_arr.astype(np.int64))
        self.offsets = _readonly(offsets_arr.astype(np.int64))
        self.horizon = horizon
        self.n_observed = n_observed
        self.n_hidden = int(S)
        self.lower_bound = float(lower_bound)
        self.upper_bound = float(upper_bound)
        self.gap = float(gap)
        self.time_s = float(time_s)
        self.info = info

    @property
    def n_alpha(self) -> int:
        return int(self.alphas.shape[0])

    def _slice(self, t: int, x: int) -> slice:
        if not (isinstance(t, (int, np.integer)) and 0 <= t < self.horizon):
            raise IndexError(f"epoch t must be an int in [0, {self.horizon}); got {t!r}")
        if not (isinstance(x, (int, np.integer)) and 0 <= x < self.n_observed):
            raise IndexError(
                f"observed value x must be an int in [0, {self.n_observed}); got {x!r}"
            )
        i = int(t) * self.n_observed + int(x)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def _belief(self, b: ArrayLike) -> NDArray[np.float64]:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (self.n_hidden,):
            raise ValueError(f"b must have shape (n_hidden,) = ({self.n_hidden},); got {b.shape}")
        return b

    def vectors(self, t: int, x: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The alpha vectors and their actions at epoch ``t`` and observed value ``x``."""
        sl = self._slice(t, x)
        return self.alphas[sl], self.actions[sl]

    def value(self, t: int, x: int, b: ArrayLike) -> float:
        """Lower-bound value ``max_k alpha_k . b`` at ``(t, x, b)``."""
        sl = self._slice(t, x)
        return float(np.max(self.alphas[sl] @ self._belief(b)))

    def action(self, t: int, x: int, b: ArrayLike) -> int:
        """Action of the best vector at ``(t, x, b)``."""
        sl = self._slice(t, x)
        k = int(np.argmax(self.alphas[sl] @ self._belief(b)))
        return int(self.actions[sl][k])

    def __repr__(self) -> str:
        return (
            f"FiniteHorizonPolicy(horizon={self.horizon}, n_observed={self.n_observed}, "
            f"n_hidden={self.n_hidden}, n_alpha={self.n_alpha}, "
            f"lower_bound={self.lower_bound:.6g}, "
            f"upper_bound={self.upper_bound:.6g})"
        )

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the policy to ``path`` (``.npz``: arrays plus a JSON ``metadata`` string)."""
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": _POLICY_KIND,
            "horizon": self.horizon,
            "n_observed": self.n_observed,
            "n_hidden": self.n_hidden,
            "lower_bound": self.lower_bound,
            "upper_bound": self.upper_bound,
            "gap": self.gap,
            "time_s": self.time_s,
        }
        from trim_pomdp._io import savez_atomic  # temp file + fsync + rename

        savez_atomic(path, {"alphas": self.alphas, "actions": self.actions,
                            "offsets": self.offsets, "metadata": np.array(json.dumps(meta))})

    @classmethod
    def load(cls, path: str | Path) -> FiniteHorizonPolicy:
        """Read a policy written by :meth:`save` (no pickle); errors -> ``PolicyFormatError``."""
        from trim_pomdp._validate import read_npz

        path = Path(path)
        try:
            arrays = read_npz(path, PolicyFormatError, "policy file")
        except FileNotFoundError:
            raise PolicyFormatError(f"{path}: cannot read policy file: no such file") from None
        missing = {"alphas", "actions", "offsets", "metadata"} - set(arrays)
        if missing:
            raise PolicyFormatError(f"{path}: missing arrays {sorted(missing)}")
        try:
            meta = json.loads(str(arrays["metadata"]))
        except json.JSONDecodeError as exc:
            raise PolicyFormatError(f"{path}: metadata is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("kind") != _POLICY_KIND:
            raise PolicyFormatError(f"{path}: not a FiniteHorizonPolicy file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise PolicyFormatError(
                f"{path}: format_version {meta.get('format_version')!r} is not supported "
                f"(expected {FORMAT_VERSION})"
            )
        try:
            pol = cls(
                arrays["alphas"],
                arrays["actions"],
                arrays["offsets"],
                horizon=meta["horizon"],
                n_observed=meta["n_observed"],
                lower_bound=meta["lower_bound"],
                upper_bound=meta["upper_bound"],
                gap=meta["gap"],
                time_s=meta["time_s"],
            )
        except KeyError as exc:
            raise PolicyFormatError(f"{path}: metadata lacks {exc}") from None
        except PolicyFormatError as exc:
            raise PolicyFormatError(f"{path}: {exc}") from None
        if pol.n_hidden != meta.get("n_hidden"):
            raise PolicyFormatError(
                f"{path}: alphas have {pol.n_hidden} columns; metadata says n_hidden="
                f"{meta.get('n_hidden')}"
            )
        return pol


# --------------------------------------------------------------------- solving
def _default_grid(n_hidden: int) -> int:
    """Simplex grid resolution used when ``grid_resolution=None``: dense for tiny S."""
    return {1: 1, 2: 16, 3: 4, 4: 3}.get(n_hidden, 0)


def _solver_kwargs(
    n_hidden: int,
    belief_points: ArrayLike | None,
    grid_resolution: int | None,
    n_samples: int,
    n_refine: int,
    target_gap: float,
    n_threads: int | None,
    seed: int,
    share_slices: bool,
    sawtooth: bool,
) -> dict[str, Any]:
    def _int(value: Any, name: str, lo: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {value!r}")
        return int(value)

    bp = None
    if belief_points is not None:
        bp = np.asarray(belief_points, dtype=np.float64)
        if bp.ndim != 2 or bp.shape[1] != n_hidden:
            raise ValueError(
                f"belief_points must have shape (n_points, n_hidden) = (M, {n_hidden}); got "
                f"{bp.shape}"
            )
        if not np.all(np.isfinite(bp)) or np.any(bp < 0):
            raise ValueError("belief_points must be finite and non-negative")
        bad = np.abs(bp.sum(axis=1) - 1.0) > 1e-6
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(
                f"belief_points[{i}] sums to {bp[i].sum():.10g}; expected 1 (tol 1e-06)"
            )
        bp = bp / bp.sum(axis=1, keepdims=True)
    grid = _default_grid(n_hidden) if grid_resolution is None else _int(
        grid_resolution, "grid_resolution", 0
    )
    if not (isinstance(target_gap, (int, float)) and target_gap >= 0 and math.isfinite(target_gap)):
        raise ValueError(f"target_gap must be a finite number >= 0; got {target_gap!r}")
    return {
        "belief_points": bp,
        "grid_resolution": grid,
        "n_samples": _int(n_samples, "n_samples", 0),
        "n_refine": _int(n_refine, "n_refine", 0),
        "target_gap": float(target_gap),
        "n_threads": None if n_threads is None else _int(n_threads, "n_threads", 1),
        "seed": _int(seed, "seed", 0),
        "share_slices": bool(share_slices),
        "sawtooth": bool(sawtooth),
    }


def _policy_from_result(res: dict[str, Any], model: FiniteHorizonPOMDP) -> FiniteHorizonPolicy:
    info = FiniteSolveInfo(
        lower_bound=float(res["lower_bound"]),
        upper_bound=float(res["upper_bound"]),
        gap=float(res["gap"]),
        time_s=float(res["time_s"]),
        n_alpha=int(res["actions"].shape[0]),
        n_beliefs=int(res["n_beliefs"]),
        n_passes=int(res["n_passes"]),
        history=_readonly(res["history"]),
    )
    return FiniteHorizonPolicy(
        res["alphas"],
        res["actions"],
        res["offsets"],
        horizon=model.horizon,
        n_observed=model.n_observed,
        lower_bound=info.lower_bound,
        upper_bound=info.upper_bound,
        gap=info.gap,
        time_s=info.time_s,
        info=info,
    )


def solve_finite(
    model: FiniteHorizonPOMDP,
    *,
    belief_points: ArrayLike | None = None,
    grid_resolution: int | None = None,
    n_samples: int = 32,
    n_refine: int = 0,
    target_gap: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    share_slices: bool = True,
    sawtooth: bool = True,
    return_info: bool = False,
) -> FiniteHorizonPolicy | tuple[FiniteHorizonPolicy, FiniteSolveInfo]:
    """Solve a finite-horizon MOMDP by backward point-based value iteration (C++).

    Parameters
    ----------
    model : FiniteHorizonPOMDP
    belief_points : array_like, shape (M, S), optional
        Extra hidden beliefs added to the belief set of every ``(t, x)``.
    grid_resolution : int, optional
        Add the simplex grid ``{b : b(s) in {0, 1/r, ..., 1}}`` at every ``(t, x)``.
        ``None`` picks a default by ``n_hidden`` (S=2: 16, S=3: 4, S=4: 3, larger: none);
        0 disables the grid.  The corners of the simplex are always included.
    n_samples : int, default 32
        Trajectories simulated forward from the initial belief per pass; their beliefs join
        the belief sets.  The first pass follows the fast informed bound (half) and random
        actions (half); each refinement pass follows the current lower-bound policy (half)
        and the upper bound towards the successor of largest gap (half).
    n_refine : int, default 0
        Refinement passes (each a full backward pass on the enlarged belief sets).
    target_gap : float, default 0
        Skip the remaining refinement passes once ``upper - lower <= target_gap`` at b0.
    n_threads : int, optional
        Threads within the solve (default: all cores).
    seed : int, default 0
        Seed of the forward sampling; equal seeds give equal results.
    share_slices : bool, default True
        Compute once per group of observed values with identical transition slices (the
        results are the same either way; ``False`` exists for testing).
    sawtooth : bool, default True
        Also tighten the upper bound by sawtooth interpolation at the sampled belief points
        (the grid interpolation and the fast informed bound are always used).
    return_info : bool, default False
        Also return the :class:`FiniteSolveInfo` (always available as ``policy.info``).

    Returns
    -------
    FiniteHorizonPolicy or (FiniteHorizonPolicy, FiniteSolveInfo)
    """
    if not isinstance(model, FiniteHorizonPOMDP):
        raise TypeError(f"model must be a FiniteHorizonPOMDP; got {type(model).__name__}")
    from trim_pomdp import _core

    kw = _solver_kwargs(
        model.n_hidden, belief_points, grid_resolution, n_samples, n_refine, target_gap,
        n_threads, seed, share_slices, sawtooth,
    )
    res = _core.solve_finite(model._core_dict(), **kw)
    pol = _policy_from_result(res, model)
    if return_info:
        assert pol.info is not None
        return pol, pol.info
    return pol


def solve_finite_many(
    models: list[FiniteHorizonPOMDP],
    *,
    belief_points: ArrayLike | None = None,
    grid_resolution: int | None = None,
    n_samples: int = 32,
    n_refine: int = 0,
    target_gap: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    share_slices: bool = True,
    sawtooth: bool = True,
) -> list[FiniteHorizonPolicy]:
    """Solve many models in parallel on a C++ thread pool (GIL released).

    Same options as :func:`solve_finite`; each model is solved exactly as
    ``solve_finite(model, ...)`` would solve it with the same seed (the results are equal),
    ``n_threads`` workers taking models in turn.  Typical use: one model per budget lambda
    (same T and Z, different R, see :meth:`FiniteHorizonPOMDP.with_rewards`).  An error in
    any model is raised here after all workers stopped.
    """
    models = list(models)
    for i, m in enumerate(models):
        if not isinstance(m, FiniteHorizonPOMDP):
            raise TypeError(f"models[{i}] must be a FiniteHorizonPOMDP; got {type(m).__name__}")
    if not models:
        return []
    S = models[0].n_hidden
    for i, m in enumerate(models):
        if m.n_hidden != S and belief_points is not None:
            raise ValueError(
                f"models[{i}] has n_hidden={m.n_hidden}, models[0] has {S}: belief_points "
                "cannot fit both"
            )
    from trim_pomdp import _core

    kw = _solver_kwargs(
        S, belief_points, grid_resolution, n_samples, n_refine, target_gap, n_threads, seed,
        share_slices, sawtooth,
    )
    results = _core.solve_finite_many([m._core_dict() for m in models], **kw)
    return [_policy_from_result(r, m) for r, m in zip(results, models, strict=True)]
