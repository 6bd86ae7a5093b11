"""TRIM-Agg and TRIM-Seq: learned routers behind the common Router / BatchPolicy interface.

* **TRIM-Agg** (Kapoor et al. 2026): an MLP (two tanh layers of 128) over aggregated
  features of the current step, :data:`~trim_pomdp.rl.env.AGG_FEATURES`.
* **TRIM-Seq**: an Elman recurrent encoder reads the whole sequence of per-step inputs
  ``[score, tokens / token_scale, t / 30, is_final, previous action]`` and the same MLP
  head reads ``[h_t, x_t]``, so the decision can depend on every score so far, not only
  on the running minimum.

Both act greedily (most probable action) once trained; training samples from the policy.
Saved as ``.npz`` (weights) + JSON (metadata, ``format_version``), loaded without pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp._io import Artefact
from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.rl import nn
from trim_pomdp.rl.env import AGG_FEATURES, DEFAULT_TOKEN_SCALE, agg_features
from trim_pomdp.routing.step_policy import StepPolicy
from trim_pomdp.steps import MAX_STEPS

FORMAT_VERSION = 1
#: the file formats of :meth:`RLRouter.save` and :meth:`~trim_pomdp.rl.grid.RLRouterBank.save`:
#: the weights and a JSON ``__meta__`` string whose ``type`` names the kind (``kind`` is
#: ``"agg"`` or ``"seq"``); training summaries may hold NaN
ROUTER_FORMAT = Artefact(kind="trim_pomdp.RLRouter", version=FORMAT_VERSION,
                         what="trim_pomdp RL router file", error=PolicyFormatError,
                         meta_key="__meta__", kind_key="type", allow_nan=True)
BANK_FORMAT = Artefact(kind="trim_pomdp.RLRouterBank", version=FORMAT_VERSION,
                       what="trim_pomdp RL router bank", error=PolicyFormatError,
                       meta_key="__meta__", kind_key="type", allow_nan=True)
SEQ_INPUTS = ("score", "tokens_scaled", "step_frac", "is_final", "prev_regenerate")
KINDS = {"agg": "TRIM-Agg", "seq": "TRIM-Seq"}


def seq_inputs(t: int, score: NDArray, tokens: NDArray, is_final: NDArray,
               prev_action: NDArray, token_scale: float) -> NDArray[np.float64]:
    """Per-step encoder inputs (n, 5) of :data:`SEQ_INPUTS`."""
    x = np.empty((score.shape[0], len(SEQ_INPUTS)))
    x[:, 0] = score
    x[:, 1] = tokens / token_scale
    x[:, 2] = t / MAX_STEPS
    x[:, 3] = is_final
    x[:, 4] = prev_action
    return x


class RLRouter(StepPolicy):
    """A trained TRIM-Agg or TRIM-Seq policy.

    Parameters
    ----------
    kind : {"agg", "seq"}
    params : dict of ndarray
        Network weights (see :mod:`trim_pomdp.rl.nn`).
    lam : float
        The budget (price per strong token) it was trained for.
    token_scale : float
        Token counts are divided by this before entering the network.
    metadata : dict, optional
        Training summary kept with the weights.
    """

    needs_truth = False

    def __init__(self, kind: str, params: dict[str, NDArray], *, lam: float,
                 token_scale: float = DEFAULT_TOKEN_SCALE,
                 metadata: dict[str, Any] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}; got {kind!r}")
        self.kind = kind
        self.params = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in params.items()}
        self.lam = float(lam)
        self.token_scale = float(token_scale)
        self.metadata = dict(metadata or {})
        self.name = KINDS[kind]
        self._h1: NDArray | None = None
        super().__init__()

    # ------------------------------------------------------------------ networks
    def logits_values(self, X: NDArray) -> tuple[NDArray, NDArray]:
        logits, values, _ = nn.actor_critic_forward(self.params, X)
        return logits, values

    def _rnn_step(self, h: NDArray, x: NDArray) -> NDArray:
        p = self.params
        return np.tanh(x @ p["rWx"] + h @ p["rWh"] + p["rb"])

    @property
    def rnn_hidden(self) -> int:
        return int(self.params["rb"].shape[0]) if self.kind == "seq" else 0

    # ------------------------------------------------------------------ BatchPolicy
    def reset_batch(self, n: int) -> None:
        super().reset_batch(n)
        if self.kind == "seq":
            self._hb = np.zeros((n, self.rnn_hidden))
            self._prev = np.zeros(n)

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        out = np.zeros(score.shape[0], np.int8)
        idx = np.flatnonzero(active)
        if idx.size == 0:
            return out
        if self.kind == "agg":
            X = agg_features(t, score[idx], min_prev[idx], tokens[idx], is_final[idx],
                             self.token_scale)
        else:
            x = seq_inputs(t, score[idx], tokens[idx], is_final[idx], self._prev[idx],
                           self.token_scale)
            h = self._rnn_step(self._hb[idx], x)
            self._hb[idx] = h
            X = np.concatenate([h, x], axis=1)
        logits, _ = self.logits_values(X)
        out[idx] = logits[:, 1] > logits[:, 0]
        return out

    def executed(self, actions: Any) -> None:
        if isinstance(actions, str):
            super().executed(actions)
        elif self.kind == "seq":
            self._prev = np.asarray(actions, dtype=np.float64).copy()

    # ------------------------------------------------------------------ Router
    def reset(self) -> None:
        super().reset()
        if self.kind == "seq":
            self._h1 = np.zeros(self.rnn_hidden)

    def _act_one(self, t: int, score: float, min_prev: float, tokens: int, is_final: bool,
                 **kwargs: Any) -> int:
        if self.kind == "agg":
            X = agg_features(t, np.array([score]), np.array([min_prev]), np.array([tokens]),
                             np.array([is_final]), self.token_scale)
        else:
            prev = 1.0 if self._last_action == "regenerate" else 0.0
            x = seq_inputs(t, np.array([score]), np.array([tokens]), np.array([is_final]),
                           np.array([prev]), self.token_scale)
            assert self._h1 is not None
            self._h1 = self._rnn_step(self._h1[None, :], x)[0]
            X = np.concatenate([self._h1, x[0]])[None, :]
        logits, _ = self.logits_values(X)
        return int(logits[0, 1] > logits[0, 0])

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write ``path`` (``.npz``: weights + a JSON metadata string)."""
        meta = {"kind": self.kind, "lam": self.lam, "token_scale": self.token_scale,
                "metadata": self.metadata}
        ROUTER_FORMAT.save(path, self.params, meta)

    @classmethod
    def load(cls, path: str | Path) -> RLRouter:
        """Read a router written by :meth:`save` (never unpickles).

        Raises :class:`PolicyFormatError` naming the file and the field for a missing,
        mis-shaped, non-numeric or non-finite weight array and for a bad ``kind``, ``lam``
        or ``token_scale``, so that a broken file fails here rather than at the first
        ``step()``.
        """
        path = Path(path)
        params, meta = ROUTER_FORMAT.load(path)
        return router_from_saved(meta.get("kind"), meta, params, str(path))


def _field_number(entry: Any, name: str, where: str, *, positive: bool) -> float:
    """``entry[name]`` as a finite float (``> 0`` or ``>= 0``), else PolicyFormatError."""
    value = entry.get(name) if isinstance(entry, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = bool(np.isfinite(value)) and (value > 0 if positive else value >= 0)
    if not ok:
        want = "a finite number > 0" if positive else "a finite number >= 0"
        raise PolicyFormatError(f"{where}: field {name!r} must be {want}; got "
                                f"{entry.get(name) if isinstance(entry, dict) else None!r}")
    return float(value)


def check_weights(kind: Any, params: dict[str, NDArray], where: str) -> None:
    """Check that ``params`` is a complete, finite network of a ``kind`` router.

    Expected arrays (:mod:`trim_pomdp.rl.nn`): hidden layers ``W0 (n_in, h0)``, ``b0
    (h0,)``, ``W1 (h0, h1)``, ... (at least one), heads ``Wpi (h_L, 2)``, ``bpi (2,)``,
    ``Wv (h_L, 1)``, ``bv (1,)``; for ``"seq"`` also ``rWx (5, H)``, ``rWh (H, H)``,
    ``rb (H,)``.  ``n_in`` is ``len(AGG_FEATURES)`` for ``"agg"`` and ``H + 5`` for
    ``"seq"``.  Every array real-valued and finite.  Raises :class:`PolicyFormatError`
    naming ``where`` and the array.
    """
    if kind not in KINDS:
        raise PolicyFormatError(f"{where}: field 'kind' must be one of {sorted(KINDS)}; "
                                f"got {kind!r}")
    for name, arr in params.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            dtype = getattr(arr, "dtype", type(arr).__name__)
            raise PolicyFormatError(f"{where}: weight array {name!r} must hold real numbers; "
                                    f"got dtype {dtype}")
    n_layers = 0
    while f"W{n_layers}" in params or f"b{n_layers}" in params:
        n_layers += 1
    expected = {f"{w}{i}" for i in range(n_layers) for w in "Wb"}
    expected |= {"Wpi", "bpi", "Wv", "bv"}
    if kind == "seq":
        expected |= {"rWx", "rWh", "rb"}
    missing = sorted(expected - set(params)) or ([] if n_layers else ["W0", "b0"])
    if missing:
        raise PolicyFormatError(f"{where}: missing weight arrays {missing}")
    extra = sorted(set(params) - expected)
    if extra:
        raise PolicyFormatError(f"{where}: unexpected weight arrays {extra}")

    def shape_is(name: str, shape: tuple[int | None, ...]) -> tuple[int, ...]:
        got = params[name].shape
        if len(got) != len(shape) or any(
                w is not None and g != w for g, w in zip(got, shape, strict=True)):
            want = "(" + ", ".join("n" if w is None else str(w) for w in shape) + \
                ("," if len(shape) == 1 else "") + ")"
            raise PolicyFormatError(f"{where}: {name} has shape {got}; "
                                    f"expected {want} for a {KINDS[kind]} router")
        return tuple(got)

    if kind == "seq":
        hidden = shape_is("rb", (None,))[0]
        shape_is("rWx", (len(SEQ_INPUTS), hidden))
        shape_is("rWh", (hidden, hidden))
        d = hidden + len(SEQ_INPUTS)
    else:
        d = len(AGG_FEATURES)
    for i in range(n_layers):
        h = shape_is(f"W{i}", (d, None))[1]
        shape_is(f"b{i}", (h,))
        d = h
    shape_is("Wpi", (d, 2))
    shape_is("bpi", (2,))
    shape_is("Wv", (d, 1))
    shape_is("bv", (1,))
    for name, arr in params.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PolicyFormatError(f"{where}: weight array {name!r} has a non-finite value "
                                    f"{arr[idx]} at index {idx}")


def router_from_saved(kind: Any, entry: Any, params: dict[str, NDArray],
                      where: str) -> RLRouter:
    """An :class:`RLRouter` from a saved entry (``lam``, ``token_scale``, ``metadata``) and
    its weights, every field checked (:func:`check_weights`)."""
    check_weights(kind, params, where)
    lam = _field_number(entry, "lam", where, positive=False)
    token_scale = _field_number(entry, "token_scale", where, positive=True)
    metadata = entry.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise PolicyFormatError(f"{where}: field 'metadata' must be an object or null; got "
                                f"{type(metadata).__name__}")
    return RLRouter(kind, params, lam=lam, token_scale=token_scale, metadata=metadata)
