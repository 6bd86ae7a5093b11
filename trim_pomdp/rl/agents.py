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

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.baselines import _StepPolicy
from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.rl import nn
from trim_pomdp.rl.env import AGG_FEATURES, DEFAULT_TOKEN_SCALE, agg_features
from trim_pomdp.scenario import MAX_STEPS

FORMAT_VERSION = 1
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


def read_npz_meta(path: Path, expected_type: str, what: str
                  ) -> tuple[dict[str, Any], dict[str, NDArray]]:
    """Read a ``.npz`` written with a JSON ``__meta__`` string (never unpickles).

    Returns ``(metadata, arrays)``; raises :class:`PolicyFormatError` naming the file when it
    is not such a file, is of another ``type`` or of an unsupported ``format_version``.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["__meta__"]))
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
    except (KeyError, ValueError, OSError) as exc:
        raise PolicyFormatError(f"{path}: not a {what} ({exc})") from exc
    if meta.get("type") != expected_type:
        raise PolicyFormatError(f"{path}: type is {meta.get('type')!r}; expected "
                                f"{expected_type!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PolicyFormatError(f"{path}: format_version {meta.get('format_version')!r} "
                                f"is not supported (expected {FORMAT_VERSION})")
    return meta, arrays


class RLRouter(_StepPolicy):
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
        meta = {"format_version": FORMAT_VERSION, "type": "trim_pomdp.RLRouter",
                "kind": self.kind, "lam": self.lam, "token_scale": self.token_scale,
                "metadata": self.metadata}
        from trim_pomdp._io import savez_atomic  # temp file + fsync + rename

        savez_atomic(path, {"__meta__": np.array(json.dumps(meta)), **self.params})

    @classmethod
    def load(cls, path: str | Path) -> RLRouter:
        """Read a router written by :meth:`save` (never unpickles)."""
        path = Path(path)
        meta, params = read_npz_meta(path, "trim_pomdp.RLRouter", "trim_pomdp RL router file")
        kind = meta.get("kind")
        need = {"W0", "b0", "W1", "b1", "Wpi", "bpi", "Wv", "bv"}
        if kind == "seq":
            need |= {"rWx", "rWh", "rb"}
        missing = need - set(params)
        if missing:
            raise PolicyFormatError(f"{path}: missing weight arrays {sorted(missing)}")
        router = cls(kind, params, lam=meta["lam"], token_scale=meta["token_scale"],
                     metadata=meta.get("metadata"))
        router._check_shapes(str(path))
        return router

    def _check_shapes(self, where: str) -> None:
        p = self.params
        n_in = len(AGG_FEATURES) if self.kind == "agg" else self.rnn_hidden + len(SEQ_INPUTS)
        if p["W0"].shape[0] != n_in:
            raise PolicyFormatError(f"{where}: W0 has shape {p['W0'].shape}; expected "
                                    f"({n_in}, hidden) for a {KINDS[self.kind]} router")
        if p["Wpi"].shape[1] != 2:
            raise PolicyFormatError(f"{where}: Wpi has shape {p['Wpi'].shape}; expected "
                                    f"(hidden, 2)")
