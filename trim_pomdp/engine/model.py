"""The discrete POMDP model and its ``.pomdp`` file format.

A POMDP is the tuple ``(S, A, O, T, Z, R, gamma, b0)`` stored as float64 arrays

* ``T[a, s, s'] = P(s' | s, a)``   transition probabilities, shape ``(A, S, S)``;
* ``Z[a, s', o] = P(o | s', a)``  observation probabilities, shape ``(A, S, O)``;
* ``R[a, s]``                      expected immediate reward, shape ``(A, S)``;
* ``discount`` gamma in ``(0, 1]`` and the initial belief ``b0`` (shape ``(S,)``).

``T`` and ``Z`` are held densely (``storage == "dense"``) or as compressed rows
(``storage == "sparse"``, :attr:`POMDP.T_csr`): row ``a * S + s`` of ``T`` lists the
non-zero ``T[a, s, s']`` by increasing ``s'``, row ``a * S + s'`` of ``Z`` the non-zero
``Z[a, s', o]``.  A file is read sparsely when its dense arrays would take more than
``DENSE_MAX_MB`` (a RockSample[7,8] needs 16 GB dense and 4 MB sparse); the solver holds
compressed rows either way, with the same values, so both give the same bounds.

Files in A. R. Cassandra's ``.pomdp`` format are read and written by the compiled core
(``csrc/pomdp_parser.cpp``); see :meth:`POMDP.from_file` for what the format covers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from trim_pomdp.errors import ModelValidationError

__all__ = ["POMDP", "FILE_TOL", "DENSE_MAX_MB", "DENSE_VIEW_MAX_MB"]

#: Default tolerance on row sums for models read from ``.pomdp`` files.  Classic files
#: print probabilities with six decimals, so their rows sum to 1 only within a few 1e-6
#: (4x5x2.95: 1 + 8e-6); 1e-5 accepts them as written (values are kept, not renormalised).
FILE_TOL = 1e-5

#: A file is parsed into dense ``T``, ``Z`` when those take at most this many MiB (and fit
#: ``max_memory_mb``), else into compressed rows (``storage="auto"`` of :meth:`POMDP.from_file`).
DENSE_MAX_MB = 256.0

#: Largest dense ``T`` or ``Z`` (MiB) that :attr:`POMDP.T` / :attr:`POMDP.Z` build from a
#: sparse model on request; above it they raise :class:`~trim_pomdp.errors.MemoryLimitError`.
DENSE_VIEW_MAX_MB = 1024.0

FloatArray = npt.NDArray[np.float64]
#: Compressed rows ``(ptr, idx, val, n_cols)``: row ``r`` holds ``(idx[k], val[k])`` for
#: ``k`` in ``ptr[r]:ptr[r + 1]``, columns increasing.
Csr = tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], FloatArray, int]


def _dense_to_csr(X: FloatArray) -> Csr:
    """Compressed rows of ``X`` viewed as ``(X.shape[0] * X.shape[1], X.shape[2])``."""
    A, S, C = X.shape
    flat = X.reshape(A * S, C)
    rows, cols = np.nonzero(flat)  # row-major: rows ascending, columns ascending
    ptr = np.zeros(A * S + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=A * S), out=ptr[1:])
    out = (ptr, cols.astype(np.int32), flat[rows, cols].astype(np.float64), int(C))
    for arr in out[:3]:
        arr.setflags(write=False)
    return out


def _csr_to_dense(m: Csr, n_actions: int, n_states: int, name: str) -> FloatArray:
    from trim_pomdp.errors import MemoryLimitError

    ptr, idx, val, C = m
    mb = 8.0 * n_actions * n_states * C / 2**20
    if mb > DENSE_VIEW_MAX_MB:
        raise MemoryLimitError(
            f"this model is held sparsely ({len(val)} non-zero {name} entries); a dense {name} "
            f"of shape ({n_actions}, {n_states}, {C}) would take {mb:.1f} MB, above "
            f"DENSE_VIEW_MAX_MB={DENSE_VIEW_MAX_MB:g}; use {name}_csr (compressed rows)"
        )
    flat = np.zeros(n_actions * n_states * C)
    rows = np.repeat(np.arange(n_actions * n_states, dtype=np.int64), np.diff(ptr))
    flat[rows * C + idx] = val
    out: FloatArray = flat.reshape(n_actions, n_states, C)
    out.setflags(write=False)
    return out


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _as_array(x: Any, name: str) -> FloatArray:
    """A private, read-only, C-contiguous float64 copy of ``x``."""
    try:
        arr = np.array(x, dtype=np.float64, order="C", copy=True)
    except (TypeError, ValueError) as exc:
        raise ModelValidationError(f"{name} must be an array of real numbers: {exc}") from None
    arr.setflags(write=False)
    return arr


def _check_shape(arr: FloatArray, name: str, dims: str, expected: tuple[int, ...]) -> None:
    if arr.shape != expected:
        raise ModelValidationError(
            f"{name} must have shape ({dims}) = {_shape_str(expected)}; got {_shape_str(arr.shape)}"
        )


def _names(names: Sequence[str] | None, n: int, arg: str, what: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        raise ModelValidationError(f"{arg} must be a sequence of strings, not a single string")
    out = tuple(names)
    if len(out) != n:
        raise ModelValidationError(f"{arg} must have n_{what} = {n} entries; got {len(out)}")
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        if not isinstance(name, str) or not name:
            raise ModelValidationError(f"{arg}[{i}] must be a non-empty string; got {name!r}")
        if name in seen:
            raise ModelValidationError(
                f"{arg} has a duplicate name {name!r} (indices {seen[name]} and {i})"
            )
        seen[name] = i
    return out


class POMDP:
    r"""A discrete POMDP, validated on construction.

    Parameters
    ----------
    T : array_like, shape (n_actions, n_states, n_states)
        ``T[a, s, s'] = P(s' | s, a)``; every row ``T[a, s, :]`` sums to 1.
    Z : array_like, shape (n_actions, n_states, n_observations)
        ``Z[a, s', o] = P(o | s', a)``, the probability of observing ``o`` after action
        ``a`` led to ``s'``; every row ``Z[a, s', :]`` sums to 1.
    R : array_like, shape (n_actions, n_states)
        Expected immediate reward of ``a`` in ``s``.  A reward that depends on the successor
        and the observation reduces to
        :math:`R(a, s) = \sum_{s'} T(s'|s,a) \sum_o Z(o|s',a) R(a, s, s', o)`.
    discount : float
        Discount factor gamma in ``(0, 1]`` (1 for episodic problems).
    b0 : array_like, shape (n_states,), optional
        Initial belief; ``None`` means uniform.
    state_names, action_names, observation_names : sequence of str, optional
        Unique names (kept by :meth:`to_file`, where they must be ``.pomdp`` identifiers).
    tol : float, default 1e-6
        Absolute tolerance on the row sums of ``T``, ``Z`` and on ``sum(b0)``.

    Raises
    ------
    ModelValidationError
        On a wrong shape (``"Z must have shape (n_actions, n_states, n_observations) =
        (3, 2, 2); got (3, 2)"``), a non-finite or negative entry, a row that does not sum
        to 1 (``"T[a=1, s=3, :] sums to 0.98; expected 1 (tol 1e-06)"``), a discount outside
        ``(0, 1]`` or bad names.

    Notes
    -----
    The arrays are stored as read-only C-contiguous float64 copies, so a model cannot be
    changed after validation.
    """

    __slots__ = (
        "_T",
        "_Z",
        "_T_csr",
        "_Z_csr",
        "_R",
        "_b0",
        "_discount",
        "_state_names",
        "_action_names",
        "_observation_names",
        "_tol",
    )

    # exactly one of (_T, _Z) and (_T_csr, _Z_csr) is set (dense or sparse storage)
    _T: Any
    _Z: Any
    _T_csr: Any
    _Z_csr: Any

    def __init__(
        self,
        T: npt.ArrayLike,
        Z: npt.ArrayLike,
        R: npt.ArrayLike,
        discount: float,
        b0: npt.ArrayLike | None = None,
        *,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        observation_names: Sequence[str] | None = None,
        tol: float = 1e-6,
    ) -> None:
        try:
            tol = float(tol)
        except (TypeError, ValueError):
            raise ModelValidationError(f"tol must be a number; got {tol!r}") from None
        if not (np.isfinite(tol) and tol >= 0.0):
            raise ModelValidationError(f"tol must be a finite number >= 0; got {tol!r}")
        try:
            discount = float(discount)
        except (TypeError, ValueError):
            raise ModelValidationError(f"discount must be a number; got {discount!r}") from None
        if not (0.0 < discount <= 1.0):
            raise ModelValidationError(f"discount must be in (0, 1]; got {discount!r}")

        T = _as_array(T, "T")
        if T.ndim != 3 or T.shape[1] != T.shape[2]:
            raise ModelValidationError(
                "T must have shape (n_actions, n_states, n_states); got " + _shape_str(T.shape)
            )
        A, S = T.shape[0], T.shape[1]
        if A == 0 or S == 0:
            raise ModelValidationError(
                "a model needs at least one action and one state; T has shape "
                + _shape_str(T.shape)
            )
        Z = _as_array(Z, "Z")
        if observation_names is not None and not isinstance(observation_names, str):
            n_obs = len(observation_names)
        else:
            n_obs = Z.shape[-1] if Z.ndim >= 1 else 0
        _check_shape(Z, "Z", "n_actions, n_states, n_observations", (A, S, n_obs))
        if n_obs == 0:
            raise ModelValidationError("a model needs at least one observation; Z has shape "
                                       + _shape_str(Z.shape))
        R = _as_array(R, "R")
        _check_shape(R, "R", "n_actions, n_states", (A, S))
        if b0 is None:
            b0 = np.full(S, 1.0 / S)
        b0 = _as_array(b0, "b0")
        _check_shape(b0, "b0", "n_states", (S,))

        self._state_names = _names(state_names, S, "state_names", "states")
        self._action_names = _names(action_names, A, "action_names", "actions")
        self._observation_names = _names(observation_names, n_obs, "observation_names",
                                         "observations")

        from trim_pomdp import _core

        # One implementation of the checks (C++), so files and arrays get the same messages.
        _core.validate_pomdp(
            T, Z, R, discount, b0, tol,
            list(self._state_names) if self._state_names else None,
            list(self._action_names) if self._action_names else None,
            list(self._observation_names) if self._observation_names else None,
        )
        self._T, self._Z, self._R, self._b0 = T, Z, R, b0
        self._T_csr = self._Z_csr = None
        self._discount = discount
        self._tol = tol

    @classmethod
    def from_csr(
        cls,
        T_csr: tuple[Any, Any, Any, int],
        Z_csr: tuple[Any, Any, Any, int],
        R: npt.ArrayLike,
        discount: float,
        b0: npt.ArrayLike | None = None,
        *,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        observation_names: Sequence[str] | None = None,
        tol: float = 1e-6,
    ) -> POMDP:
        """A model held as compressed rows (``storage == "sparse"``), validated as ``POMDP``.

        ``T_csr = (ptr, idx, val, n_states)``: row ``a * S + s`` holds the non-zero
        ``T[a, s, s']`` (``s' = idx[k]``, ``val[k]``, ``k`` in ``ptr[r]:ptr[r + 1]``, ``s'``
        strictly increasing); ``Z_csr = (ptr, idx, val, n_observations)`` likewise over
        ``o`` for row ``a * S + s'``.  ``R`` (shape ``(A, S)``) fixes ``A`` and ``S``.

        Raises
        ------
        ModelValidationError
            As ``POMDP``, plus malformed rows (offsets, column range or order).
        """
        from trim_pomdp import _core

        try:
            tol = float(tol)
            discount = float(discount)
        except (TypeError, ValueError):
            raise ModelValidationError("tol and discount must be numbers") from None
        if not (np.isfinite(tol) and tol >= 0.0):
            raise ModelValidationError(f"tol must be a finite number >= 0; got {tol!r}")
        if not (0.0 < discount <= 1.0):
            raise ModelValidationError(f"discount must be in (0, 1]; got {discount!r}")
        R = _as_array(R, "R")
        if R.ndim != 2 or 0 in R.shape:
            raise ModelValidationError("R must have shape (n_actions, n_states) with both > 0; "
                                       "got " + _shape_str(R.shape))
        A, S = R.shape
        mats = []
        for name, m, cols in (("T", T_csr, S), ("Z", Z_csr, None)):
            try:
                ptr, idx, val, n_cols = m
                n_cols = int(n_cols)
                ptr = np.array(ptr, dtype=np.int64, copy=True)
                idx = np.array(idx, dtype=np.int64, copy=True)
                val = np.array(val, dtype=np.float64, copy=True)
            except (TypeError, ValueError) as exc:
                raise ModelValidationError(
                    f"{name}_csr must be (ptr, idx, val, n_cols) arrays: {exc}") from None
            if cols is not None and n_cols != cols:
                raise ModelValidationError(f"{name}_csr must have n_states = {cols} columns; "
                                           f"got {n_cols}")
            if n_cols < 1 or ptr.shape != (A * S + 1,) or idx.ndim != 1 or idx.shape != val.shape:
                raise ModelValidationError(
                    f"{name}_csr must have {A * S + 1} row offsets (n_actions * n_states + 1) and "
                    f"equal-length 1-d idx, val; got ptr {_shape_str(ptr.shape)}, idx "
                    f"{_shape_str(idx.shape)}, val {_shape_str(val.shape)}, n_cols {n_cols}")
            if idx.size and (idx.min() < 0 or idx.max() >= n_cols):
                raise ModelValidationError(f"{name}_csr column indices must be in [0, {n_cols})")
            if ptr[0] != 0 or ptr[-1] != idx.size or np.any(np.diff(ptr) < 0):
                raise ModelValidationError(
                    f"{name}_csr row offsets must rise from 0 to the number of entries "
                    f"({idx.size})")
            keep = val != 0.0  # stored zeros carry nothing (the dense form has them anyway)
            if not keep.all():
                rows = np.repeat(np.arange(A * S, dtype=np.int64), np.diff(ptr))
                ptr = np.zeros(A * S + 1, dtype=np.int64)
                np.cumsum(np.bincount(rows[keep], minlength=A * S), out=ptr[1:])
                idx, val = idx[keep], val[keep]
            mats.append((ptr, idx.astype(np.int32), val, n_cols))
        O = mats[1][3]  # noqa: E741
        if b0 is None:
            b0 = np.full(S, 1.0 / S)
        b0 = _as_array(b0, "b0")
        _check_shape(b0, "b0", "n_states", (S,))
        self = cls.__new__(cls)
        self._state_names = _names(state_names, S, "state_names", "states")
        self._action_names = _names(action_names, A, "action_names", "actions")
        self._observation_names = _names(observation_names, O, "observation_names",
                                         "observations")
        try:
            _core.validate_pomdp(
                mats[0], mats[1], R, discount, b0, tol,
                list(self._state_names) if self._state_names else None,
                list(self._action_names) if self._action_names else None,
                list(self._observation_names) if self._observation_names else None,
            )
        except ValueError as exc:
            if isinstance(exc, ModelValidationError):
                raise
            raise ModelValidationError(str(exc)) from None
        for m in mats:
            for arr in m[:3]:
                arr.setflags(write=False)
        self._T = self._Z = None
        self._T_csr, self._Z_csr = mats[0], mats[1]
        self._R, self._b0 = R, b0
        self._discount = discount
        self._tol = tol
        return self

    def to_sparse(self) -> POMDP:
        """This model held as compressed rows (itself when it already is); same values."""
        if self.storage == "sparse":
            return self
        return POMDP.from_csr(self.T_csr, self.Z_csr, self._R, self._discount, self._b0,
                              state_names=self._state_names, action_names=self._action_names,
                              observation_names=self._observation_names, tol=self._tol)

    # ---- data -------------------------------------------------------------------------------
    @property
    def storage(self) -> str:
        """``"dense"`` (``T``, ``Z`` arrays) or ``"sparse"`` (compressed rows)."""
        return "dense" if self._T is not None else "sparse"

    @property
    def T(self) -> FloatArray:
        """Transition probabilities ``T[a, s, s']`` (read-only).

        A sparse model builds a fresh dense array on each access, up to
        ``DENSE_VIEW_MAX_MB`` (else :class:`~trim_pomdp.errors.MemoryLimitError`).
        """
        if self._T is not None:
            t: FloatArray = self._T
            return t
        return _csr_to_dense(self._T_csr, self.n_actions, self.n_states, "T")

    @property
    def Z(self) -> FloatArray:
        """Observation probabilities ``Z[a, s', o]`` (read-only; see :attr:`T`)."""
        if self._Z is not None:
            z: FloatArray = self._Z
            return z
        return _csr_to_dense(self._Z_csr, self.n_actions, self.n_states, "Z")

    @property
    def T_csr(self) -> Csr:
        """``T`` as compressed rows ``(ptr, idx, val, n_states)``, row ``a * S + s``."""
        if self._T_csr is not None:
            t: Csr = self._T_csr
            return t
        return _dense_to_csr(self._T)

    @property
    def Z_csr(self) -> Csr:
        """``Z`` as compressed rows ``(ptr, idx, val, n_observations)``, row ``a * S + s'``."""
        if self._Z_csr is not None:
            z: Csr = self._Z_csr
            return z
        return _dense_to_csr(self._Z)

    @property
    def R(self) -> FloatArray:
        """Expected immediate rewards ``R[a, s]`` (read-only)."""
        return self._R

    @property
    def b0(self) -> FloatArray:
        """Initial belief (read-only)."""
        return self._b0

    @property
    def discount(self) -> float:
        """Discount factor gamma in (0, 1]."""
        return self._discount

    @property
    def tol(self) -> float:
        """Tolerance the row sums were validated with."""
        return self._tol

    @property
    def n_states(self) -> int:
        """Number of states S."""
        return int(self._R.shape[1])

    @property
    def n_actions(self) -> int:
        """Number of actions A."""
        return int(self._R.shape[0])

    @property
    def n_observations(self) -> int:
        """Number of observations O."""
        return int(self._Z.shape[2]) if self._Z is not None else int(self._Z_csr[3])

    @property
    def state_names(self) -> tuple[str, ...] | None:
        """State names, or None when the states are only counted."""
        return self._state_names

    @property
    def action_names(self) -> tuple[str, ...] | None:
        """Action names, or None when the actions are only counted."""
        return self._action_names

    @property
    def observation_names(self) -> tuple[str, ...] | None:
        """Observation names, or None when the observations are only counted."""
        return self._observation_names

    def __repr__(self) -> str:
        sparse = ", storage='sparse'" if self._T is None else ""
        return (
            f"POMDP(n_states={self.n_states}, n_actions={self.n_actions}, "
            f"n_observations={self.n_observations}, discount={self.discount!r}{sparse})"
        )

    # ---- .pomdp files -------------------------------------------------------------------------
    @classmethod
    def from_string(cls, text: str | bytes, filename: str = "<string>", *,
                    tol: float = FILE_TOL, max_memory_mb: float | None = None,
                    storage: str = "auto") -> POMDP:
        """Parse a model from ``.pomdp`` text; see :meth:`from_file`.

        ``filename`` only labels error messages (``"<string>:12: ..."``).
        """
        from trim_pomdp import _core
        from trim_pomdp.errors import MemoryLimitError

        if not isinstance(text, (str, bytes)):
            raise TypeError(f"text must be str or bytes; got {type(text).__name__}")
        tol = float(tol)
        if not (np.isfinite(tol) and tol >= 0.0):
            raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
        if isinstance(text, str):
            # surrogatepass: a lone surrogate becomes bytes the parser reports as a malformed
            # token at its line, instead of a conversion error without a location.
            text = text.encode("utf-8", "surrogatepass")
        if max_memory_mb is not None:
            max_memory_mb = float(max_memory_mb)
            if not max_memory_mb > 0:
                raise ValueError(f"max_memory_mb must be > 0 or None; got {max_memory_mb!r}")
        if storage not in ("auto", "dense", "sparse"):
            raise ValueError(f"storage must be 'auto', 'dense' or 'sparse'; got {storage!r}")
        try:
            d = _core.parse_pomdp(text, os.fspath(filename), tol=tol,
                                  max_memory_mb=max_memory_mb,
                                  storage=storage,  # type: ignore[arg-type]
                                  dense_max_mb=DENSE_MAX_MB)
        except MemoryError as exc:
            if isinstance(exc, MemoryLimitError):
                raise
            # Out of memory outside the parser proper (copying the text in, handing the
            # arrays out): the same typed one-line error as inside it.
            raise MemoryLimitError(
                f"{os.fspath(filename)}: out of memory while reading the model "
                f"({len(text) / 2**20:.1f} MB of input); use a smaller model or a machine "
                "with more memory"
            ) from None
        # The parser has already run the same C++ checks (check_pomdp) with this tolerance
        # and its arrays are fresh and unshared: adopt them without a second copy and scan.
        self = cls.__new__(cls)
        d["R"].setflags(write=False)
        d["b0"].setflags(write=False)
        T: Any = d["T"]
        Z: Any = d["Z"]
        if d["storage"] == "sparse":
            for arr in (*T[:3], *Z[:3]):
                arr.setflags(write=False)
            self._T = self._Z = None
            self._T_csr, self._Z_csr = tuple(T), tuple(Z)
        else:
            T.setflags(write=False)
            Z.setflags(write=False)
            self._T, self._Z = T, Z
            self._T_csr = self._Z_csr = None
        self._R, self._b0 = d["R"], d["b0"]
        self._discount = float(d["discount"])
        self._tol = tol
        self._state_names = _names(d["state_names"], self.n_states, "state_names", "states")
        self._action_names = _names(d["action_names"], self.n_actions, "action_names",
                                    "actions")
        self._observation_names = _names(d["observation_names"], self.n_observations,
                                         "observation_names", "observations")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, tol: float = FILE_TOL,
                  max_memory_mb: float | None = None, storage: str = "auto") -> POMDP:
        r"""Read a model in A. R. Cassandra's ``.pomdp`` format (C++ parser).

        The whole format is supported: ``discount:``, ``values: reward|cost`` (costs are
        negated into rewards; the misspelt ``rewards`` is accepted), ``states:``/``actions:``/
        ``observations:`` as a count or a list of names, ``start:`` as probabilities, a state
        name or index, ``start include:``/``start exclude:`` lists (uniform over the listed
        states; a missing ``start:`` means uniform), ``T:``/``O:`` entries in single, row and
        matrix form with ``uniform`` and ``identity``, ``R:`` entries in all their forms,
        ``*`` wildcards, 0-based indices or names, and ``#`` comments.  Later entries
        override earlier ones.  Rewards ``R(a, s, s', o)`` are reduced to
        :math:`R(a, s) = \sum_{s'} T(s'|s,a) \sum_o Z(o|s',a) R(a, s, s', o)`
        (exactly ``r`` when ``R(a, s, s', o) = r`` for every ``(s', o)``).

        Parameters
        ----------
        path : str or os.PathLike
            The file.
        tol : float, default ``FILE_TOL`` (1e-5)
            Tolerance on row sums; the default accepts probabilities printed with six
            decimals, as in the classic collection.  Values are kept as written.
        max_memory_mb : float or None, default None
            Refuse, before allocating anything, a file whose header (``states:``,
            ``actions:``, ``observations:``) declares a model whose arrays would exceed this
            many MiB: dense ``8 (A S^2 + A S O + A S + S)`` bytes plus row bookkeeping
            (``_core.parse_memory_bytes``), or for sparse storage the per-row bookkeeping
            (``_core.parse_sparse_base_bytes``), each entry then counted before the
            statement that writes it.  ``None``: no limit (dense storage keeps the fixed
            guard of ``2**28`` dense entries).
        storage : {"auto", "dense", "sparse"}, default "auto"
            How ``T`` and ``Z`` are held: ``"auto"`` is dense when the dense arrays take at
            most ``DENSE_MAX_MB`` (256 MiB) and fit ``max_memory_mb``, else sparse; the
            values are the same either way.

        Lines may end in LF, CRLF or a lone CR.

        Raises
        ------
        PomdpFormatError
            ``"path:line: what was expected; what was found"`` for any syntax error,
            unknown name, wrong count, bad number, or a row of ``T``/``O``/``start`` that does
            not sum to 1 (at the line that last set it).  ``.filename`` and ``.line`` carry
            the location.
            Also: a reward with ``|R| / (1 - discount) > 1e100`` (``|R| > 1e100`` for
            discount 1), whose backups could overflow, at the line of its ``R:`` entry.
        MemoryLimitError
            ``"path:line: model too large: ..."`` when the header declares more than
            ``max_memory_mb``, ``"path:line: model too large: this T: entry writes ..."``
            when a sparse model's rows would exceed it, and ``"path: out of memory while
            parsing ..."`` when the machine runs out of memory while reading.
        FileNotFoundError
            When the file does not exist.
        """
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_string(data, os.fspath(path), tol=tol, max_memory_mb=max_memory_mb,
                               storage=storage)

    def to_string(self) -> str:
        """The model in ``.pomdp`` format; :meth:`from_string` reads it back exactly.

        Numbers are written in their shortest form that reads back to the same double, so
        ``T``, ``Z``, ``R``, ``b0``, ``discount`` and the names round-trip bit for bit.
        ``R`` is written as rewards independent of ``(s', o)``.

        Raises
        ------
        ValueError
            When a name is not a ``.pomdp`` identifier (``[A-Za-z][A-Za-z0-9_-]*``, not a
            keyword of the format).
        """
        from trim_pomdp import _core

        return _core.write_pomdp(
            self._T if self._T is not None else self._T_csr,
            self._Z if self._Z is not None else self._Z_csr,
            self._R, self._discount, self._b0,
            list(self._state_names) if self._state_names else None,
            list(self._action_names) if self._action_names else None,
            list(self._observation_names) if self._observation_names else None,
        )

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` in ``.pomdp`` format (see :meth:`to_string`)."""
        text = self.to_string()
        with open(path, "w", encoding="ascii", newline="\n") as f:
            f.write(text)
