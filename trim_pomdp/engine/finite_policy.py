"""A solved finite-horizon MOMDP policy: one set of alpha vectors per epoch ``t`` and observed
value ``x``, its solve diagnostics, and its file format (``.npz`` with JSON metadata and a
``format_version``; loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp._io import Artefact
from trim_pomdp.engine.finite_model import _readonly
from trim_pomdp.errors import PolicyFormatError

__all__ = ["FiniteHorizonPolicy", "FiniteSolveInfo", "FORMAT_VERSION"]

FORMAT_VERSION = 1
#: the file format; its metadata holds NaN for bounds a solve did not compute
_FORMAT = Artefact(kind="trim_pomdp.FiniteHorizonPolicy", version=FORMAT_VERSION,
                   what="policy file", error=PolicyFormatError, meta_key="metadata",
                   arrays=("alphas", "actions", "offsets"), allow_nan=True)


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
        """Write the policy to ``path`` (``.npz``: arrays plus a JSON ``metadata`` string;
        bounds that are unknown are written as JSON ``NaN``)."""
        meta = {
            "horizon": self.horizon,
            "n_observed": self.n_observed,
            "n_hidden": self.n_hidden,
            "lower_bound": self.lower_bound,
            "upper_bound": self.upper_bound,
            "gap": self.gap,
            "time_s": self.time_s,
        }
        _FORMAT.save(path, {"alphas": self.alphas, "actions": self.actions,
                            "offsets": self.offsets}, meta)

    @classmethod
    def load(cls, path: str | Path) -> FiniteHorizonPolicy:
        """Read a policy written by :meth:`save` (no pickle); every error, a missing file
        included, is a ``PolicyFormatError``."""
        path = Path(path)
        try:
            arrays, meta = _FORMAT.load(path)
        except FileNotFoundError as exc:
            raise PolicyFormatError(str(exc)) from None
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
