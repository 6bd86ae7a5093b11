"""Bayes filter for discrete POMDPs (Numba kernels with a NumPy reference).

After taking action ``a`` in belief ``b`` and observing ``o`` the new belief is

    b'(s') = Z[a, s', o] * sum_s T[a, s, s'] b(s) / P(o | b, a),
    P(o | b, a) = sum_{s'} Z[a, s', o] sum_s T[a, s, s'] b(s),

a prediction step (``b T[a]``) followed by a correction step (multiply by the observation
likelihood and renormalise).  When ``P(o | b, a) == 0`` the observation is impossible under
the belief: that is a modelling error (or a belief that lost the true state), and it raises
:class:`~trim_pomdp.errors.ZeroProbabilityObservationError` naming ``a``, ``o`` and the
support of ``b``; a NaN belief never leaves this module.

Arrays follow the project's convention: ``T[a, s, s']``, ``Z[a, s', o]``, float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import ZeroProbabilityObservationError

__all__ = [
    "BeliefUpdater",
    "update_belief",
    "update_beliefs",
    "update_belief_numpy",
    "belief_update_kernel",
    "belief_update_batch_kernel",
    "belief_update_sparse_kernel",
    "transition_csr",
]

#: Default tolerance on ``sum(b) == 1`` for beliefs passed in by users.
BELIEF_TOL = 1e-6


# ---------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True)
def belief_update_kernel(T: Any, Z: Any, b: Any, a: int, o: int,
                         out: Any) -> float:  # pragma: no cover - compiled
    """Write ``b'`` into ``out`` and return ``P(o | b, a)``.

    ``out`` is left unnormalised (and the return value is 0.0) when the observation has
    probability zero; callers must check the return value.  Cost O(S^2).
    """
    n = b.shape[0]
    for s2 in range(n):
        out[s2] = 0.0
    # Prediction: out = b @ T[a]; skipping zero-probability states keeps sparse beliefs cheap.
    for s in range(n):
        bs = b[s]
        if bs != 0.0:
            for s2 in range(n):
                out[s2] += bs * T[a, s, s2]
    norm = 0.0
    for s2 in range(n):
        v = out[s2] * Z[a, s2, o]
        out[s2] = v
        norm += v
    if norm > 0.0:
        inv = 1.0 / norm
        for s2 in range(n):
            out[s2] *= inv
    return norm


@njit(cache=True, nogil=True)
def belief_update_sparse_kernel(
    T_indptr: Any, T_indices: Any, T_data: Any, Z: Any, b: Any, supp: Any, n_supp: int, a: int,
    o: int, out: Any, out_supp: Any,
) -> Any:  # pragma: no cover - compiled
    """:func:`belief_update_kernel` with ``T`` in CSR form and the belief's support listed.

    Row ``(a, s)`` of ``T`` is ``T_data[T_indptr[a*S + s] : T_indptr[a*S + s + 1]]`` at columns
    ``T_indices[...]`` (ascending); ``supp[:n_supp]`` lists the states with ``b[s] > 0`` in
    ascending order.  Writes ``b'`` to ``out`` and its support to ``out_supp`` and returns
    ``(P(o | b, a), size of the support of b')``.  Cost O(S + sum of the row lengths over the
    support) instead of O(S^2).  The additions happen in the same order as in the dense
    kernel minus terms that are exactly zero, so both give bit-identical beliefs.
    """
    n = b.shape[0]
    for s2 in range(n):
        out[s2] = 0.0
    for j in range(n_supp):
        s = supp[j]
        bs = b[s]
        row = a * n + s
        for p in range(T_indptr[row], T_indptr[row + 1]):
            out[T_indices[p]] += bs * T_data[p]
    norm = 0.0
    m = 0
    for s2 in range(n):
        v = out[s2]
        if v != 0.0:
            v *= Z[a, s2, o]
            out[s2] = v
            if v > 0.0:
                norm += v
                out_supp[m] = s2
                m += 1
    if norm > 0.0:
        inv = 1.0 / norm
        for j in range(m):
            out[out_supp[j]] *= inv
    return norm, m


def transition_csr(T: NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR form ``(indptr, indices, data)`` of ``T`` viewed as ``(n_actions * n_states,
    n_states)`` rows, for :func:`belief_update_sparse_kernel`."""
    A, S, _ = T.shape
    flat = np.ascontiguousarray(T, dtype=np.float64).reshape(A * S, S)
    rows, cols = np.nonzero(flat)  # row-major order: rows ascending, columns ascending
    indptr = np.zeros(A * S + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=A * S), out=indptr[1:])
    return indptr, cols.astype(np.int64), flat[rows, cols].copy()


@njit(cache=True, nogil=True)
def belief_update_batch_kernel(T: Any, Z: Any, B: Any, actions: Any, obs: Any, out: Any,
                               norms: Any) -> int:  # pragma: no cover
    """Row-wise :func:`belief_update_kernel`: writes ``out[i]`` and
    ``norms[i] = P(obs[i] | B[i], actions[i])``.

    Returns the index of the first row with zero observation probability, or -1.
    """
    first_bad = -1
    for i in range(B.shape[0]):
        norms[i] = belief_update_kernel(T, Z, B[i], actions[i], obs[i], out[i])
        if norms[i] <= 0.0 and first_bad < 0:
            first_bad = i
    return first_bad


# ---------------------------------------------------------------------------- reference
def update_belief_numpy(
    T: NDArray[np.float64], Z: NDArray[np.float64], b: NDArray[np.float64], a: int, o: int
) -> NDArray[np.float64]:
    """Plain-NumPy reference of :func:`update_belief` (no checks; NaN if P(o|b,a) = 0)."""
    unnorm = Z[a, :, o] * (b @ T[a])
    with np.errstate(invalid="ignore", divide="ignore"):
        out: NDArray[np.float64] = unnorm / unnorm.sum()
    return out


# ---------------------------------------------------------------------------- validation
def _as_model_arrays(T: ArrayLike, Z: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    T = np.ascontiguousarray(T, dtype=np.float64)
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    if T.ndim != 3 or T.shape[1] != T.shape[2]:
        raise ValueError(f"T must have shape (n_actions, n_states, n_states); got {T.shape}")
    n_actions, n_states = T.shape[0], T.shape[1]
    if Z.ndim != 3 or Z.shape[:2] != (n_actions, n_states):
        raise ValueError(
            f"Z must have shape (n_actions, n_states, n_observations) = "
            f"({n_actions}, {n_states}, O); got {Z.shape}"
        )
    return T, Z


def _support(b: np.ndarray, state_names: list[str] | None) -> str:
    idx = np.flatnonzero(b > 0)
    if state_names is None:
        items = [str(int(i)) for i in idx[:20]]
    else:
        items = [f"{int(i)} ({state_names[i]})" for i in idx[:20]]
    more = f", ... ({idx.size} states)" if idx.size > 20 else ""
    return "{" + ", ".join(items) + more + "}"


def _zero_prob_error(
    b: np.ndarray,
    a: int,
    o: int,
    *,
    row: int | None = None,
    action_names: list[str] | None = None,
    observation_names: list[str] | None = None,
    state_names: list[str] | None = None,
) -> ZeroProbabilityObservationError:
    a_txt = f"a={a}" + (f" ({action_names[a]})" if action_names else "")
    o_txt = f"o={o}" + (f" ({observation_names[o]})" if observation_names else "")
    where = f" (row {row} of the batch)" if row is not None else ""
    err = ZeroProbabilityObservationError(
        f"observation {o_txt} has zero probability after action {a_txt} from a belief with "
        f"support {_support(b, state_names)}{where}"
    )
    # The same facts as attributes, for callers that handle the error programmatically.
    err.action = a  # type: ignore[attr-defined]
    err.observation = o  # type: ignore[attr-defined]
    err.support = tuple(int(i) for i in np.flatnonzero(b > 0))  # type: ignore[attr-defined]
    err.row = row  # type: ignore[attr-defined]
    return err


def _check_belief(b: np.ndarray, name: str, tol: float) -> None:
    # Fast path first (this runs on every update): two reductions decide validity; NaN or
    # inf make the sum comparison false, so only a failing belief pays for the diagnosis.
    if b.ndim == 1:
        if b.size and abs(float(b.sum()) - 1.0) <= tol and float(b.min()) >= 0.0:
            return
    elif b.size == 0 or (b.min() >= 0.0 and np.all(np.abs(b.sum(axis=-1) - 1.0) <= tol)):
        return
    sums = b.sum(axis=-1)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if np.any(b < 0):
        raise ValueError(f"{name} must be non-negative (a probability distribution)")
    bad = ~(np.abs(sums - 1.0) <= tol)
    if b.ndim == 1:
        raise ValueError(f"{name} must sum to 1 (tol {tol:g}); it sums to {float(sums):.12g}")
    i = int(np.argmax(bad))
    raise ValueError(f"{name}[{i}] must sum to 1 (tol {tol:g}); it sums to {float(sums[i]):.12g}")


def _check_index(x: Any, n: int, name: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an integer index; got {type(x).__name__}")
    if not 0 <= int(x) < n:
        raise ValueError(f"{name} must be in 0..{n - 1}; got {int(x)}")
    return int(x)


def _check_indices(x: ArrayLike, n: int, count: int, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},); got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array; got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= n)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] must be in 0..{n - 1}; got {int(arr[i])}")
    return np.ascontiguousarray(arr, dtype=np.int64)


# ---------------------------------------------------------------------------- public API
def update_belief(
    T: ArrayLike,
    Z: ArrayLike,
    b: ArrayLike,
    a: int,
    o: int,
    *,
    out: NDArray[np.float64] | None = None,
    tol: float = BELIEF_TOL,
) -> NDArray[np.float64]:
    """One Bayes-filter step.

    ``b'(s') = Z[a, s', o] sum_s T[a, s, s'] b(s) / P(o | b, a)``.

    Parameters
    ----------
    T : array_like, shape (n_actions, n_states, n_states)
    Z : array_like, shape (n_actions, n_states, n_observations)
    b : array_like, shape (n_states,)
        Current belief (non-negative, sums to 1 within ``tol``).
    a, o : int
        Action taken and observation received.
    out : ndarray, shape (n_states,), optional
        Preallocated float64 output (may not alias ``b``).
    tol : float
        Tolerance on ``sum(b) == 1``.

    Returns
    -------
    ndarray, shape (n_states,)
        The updated belief.

    Raises
    ------
    ZeroProbabilityObservationError
        If ``P(o | b, a) == 0``; the message names ``a``, ``o`` and the support of ``b``.
    ValueError, TypeError
        Wrong shapes, indices out of range, ``b`` not a distribution.
    """
    T, Z = _as_model_arrays(T, Z)
    n_actions, n_states, n_obs = Z.shape
    b = np.ascontiguousarray(b, dtype=np.float64)
    if b.shape != (n_states,):
        raise ValueError(f"b must have shape (n_states,) = ({n_states},); got {b.shape}")
    _check_belief(b, "b", tol)
    a = _check_index(a, n_actions, "a")
    o = _check_index(o, n_obs, "o")
    if out is None:
        out = np.empty(n_states)
    elif out.shape != (n_states,) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float64 array of shape ({n_states},); got "
            f"{out.dtype} {out.shape}"
        )
    elif np.shares_memory(out, b):
        raise ValueError("out must not share memory with b")
    if belief_update_kernel(T, Z, b, a, o, out) <= 0.0:
        raise _zero_prob_error(b, a, o)
    return out


def update_beliefs(
    T: ArrayLike,
    Z: ArrayLike,
    B: ArrayLike,
    actions: ArrayLike,
    obs: ArrayLike,
    *,
    out: NDArray[np.float64] | None = None,
    tol: float = BELIEF_TOL,
) -> NDArray[np.float64]:
    """Batched :func:`update_belief`: row ``i`` of the result is the update of ``B[i]``
    after action ``actions[i]`` and observation ``obs[i]``.

    Parameters
    ----------
    B : array_like, shape (N, n_states)
    actions, obs : array_like of int, shape (N,)
    out : ndarray, shape (N, n_states), optional
        Preallocated float64 output.

    Raises
    ------
    ZeroProbabilityObservationError
        For the first row whose observation has probability zero (the message names the
        row, its ``a``, ``o`` and the support of ``B[row]``).
    """
    T, Z = _as_model_arrays(T, Z)
    n_actions, n_states, n_obs = Z.shape
    B = np.ascontiguousarray(B, dtype=np.float64)
    if B.ndim != 2 or B.shape[1] != n_states:
        raise ValueError(
            f"B must have shape (n_beliefs, n_states) = (N, {n_states}); got {B.shape}"
        )
    n = B.shape[0]
    _check_belief(B, "B", tol)
    acts = _check_indices(actions, n_actions, n, "actions")
    obs_arr = _check_indices(obs, n_obs, n, "obs")
    if out is None:
        out = np.empty((n, n_states))
    elif out.shape != (n, n_states) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float64 array of shape ({n}, {n_states}); got "
            f"{out.dtype} {out.shape}"
        )
    elif np.shares_memory(out, B):
        raise ValueError("out must not share memory with B")
    norms = np.empty(n)
    bad = belief_update_batch_kernel(T, Z, B, acts, obs_arr, out, norms)
    if bad >= 0:
        raise _zero_prob_error(B[bad], int(acts[bad]), int(obs_arr[bad]), row=bad)
    return out


class BeliefUpdater:
    """Bayes filter bound to a model: ``update(b, a, o)`` (predict with ``T[a]``, then
    correct with ``Z[a, :, o]``).

    Parameters
    ----------
    model : POMDP
        Any object with ``T``, ``Z`` arrays (and optionally ``b0``, ``state_names``,
        ``action_names``, ``observation_names``, used in error messages).
    tol : float
        Tolerance on ``sum(b) == 1`` for beliefs passed in.

    Examples
    --------
    >>> up = BeliefUpdater(model)            # doctest: +SKIP
    >>> b = up.initial_belief()               # doctest: +SKIP
    >>> b = up.update(b, a=0, o=1)            # doctest: +SKIP
    """

    def __init__(self, model: Any, *, tol: float = BELIEF_TOL) -> None:
        self.T, self.Z = _as_model_arrays(model.T, model.Z)
        self.n_actions, self.n_states, self.n_observations = self.Z.shape
        self.tol = float(tol)
        b0 = getattr(model, "b0", None)
        self._b0 = None if b0 is None else np.array(b0, dtype=np.float64)
        self._state_names = _names(getattr(model, "state_names", None))
        self._action_names = _names(getattr(model, "action_names", None))
        self._observation_names = _names(getattr(model, "observation_names", None))

    def initial_belief(self) -> NDArray[np.float64]:
        """A copy of the model's initial belief ``b0`` (uniform if the model has none)."""
        if self._b0 is None:
            return np.full(self.n_states, 1.0 / self.n_states)
        b0: NDArray[np.float64] = self._b0.copy()
        return b0

    def update(
        self, b: ArrayLike, a: int, o: int, *, out: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """``b'(s') ∝ Z[a, s', o] sum_s T[a, s, s'] b(s)``; see :func:`update_belief`."""
        b = np.ascontiguousarray(b, dtype=np.float64)
        if b.shape != (self.n_states,):
            raise ValueError(f"b must have shape (n_states,) = ({self.n_states},); got {b.shape}")
        _check_belief(b, "b", self.tol)
        a = _check_index(a, self.n_actions, "a")
        o = _check_index(o, self.n_observations, "o")
        if out is None:
            out = np.empty(self.n_states)
        elif out.shape != (self.n_states,) or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous float64 array of shape ({self.n_states},)"
            )
        elif np.shares_memory(out, b):
            raise ValueError("out must not share memory with b")
        if belief_update_kernel(self.T, self.Z, b, a, o, out) <= 0.0:
            raise _zero_prob_error(
                b,
                a,
                o,
                action_names=self._action_names,
                observation_names=self._observation_names,
                state_names=self._state_names,
            )
        return out

    def update_many(self, B: ArrayLike, actions: ArrayLike, obs: ArrayLike) -> NDArray[np.float64]:
        """Batched :meth:`update`; see :func:`update_beliefs`."""
        return update_beliefs(self.T, self.Z, B, actions, obs, tol=self.tol)

    def observation_probability(self, b: ArrayLike, a: int) -> NDArray[np.float64]:
        """``P(o | b, a)`` for every ``o``: ``(b T[a]) Z[a]``, shape (n_observations,)."""
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (self.n_states,):
            raise ValueError(f"b must have shape (n_states,) = ({self.n_states},); got {b.shape}")
        a = _check_index(a, self.n_actions, "a")
        p: NDArray[np.float64] = (b @ self.T[a]) @ self.Z[a]
        return p


def _names(x: Any) -> list[str] | None:
    if x is None:
        return None
    names = [str(n) for n in x]
    return names or None
