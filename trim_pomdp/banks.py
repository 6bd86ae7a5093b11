"""Load a saved router bank of any kind: it alone knows every kind of bank there is
(:class:`~trim_pomdp.routing.bank.PolicyBank` and :class:`~trim_pomdp.rl.grid.RLRouterBank`),
so the routing layer does not have to know about the RL layer above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trim_pomdp import _validate as _v
from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.routing.bank import _FORMAT as _BANK_FORMAT
from trim_pomdp.routing.bank import PolicyBank

__all__ = ["load_bank"]


def load_bank(path: str | Path) -> Any:
    """Load any saved bank of routers, one per budget, whatever wrote it.

    * a :class:`PolicyBank` (``bank.save(path)``: ``.npz`` + ``.json`` sidecar) of a
      :class:`~trim_pomdp.routing.model.TrimModel` (TRIM-POMDP) or of a
      :class:`~trim_pomdp.routing.latent_model.LatentTrimModel`
      (TRIM-POMDP+);
    * a :class:`~trim_pomdp.rl.grid.RLRouterBank` (TRIM-Agg / TRIM-Seq: one ``.npz``, as
      ``trim-pomdp train`` writes it).

    Every kind has ``.family()`` for :func:`trim_pomdp.evaluation.sweep.evaluate` and ``lambdas``.
    Nothing is unpickled.

    Raises
    ------
    FileNotFoundError
        Neither ``path`` nor ``path.npz`` exists.
    PolicyFormatError
        The file is none of these (the message says what was found).
    """
    npz, meta_path = PolicyBank._paths(path)
    sidecar = "no PolicyBank sidecar " + meta_path.name
    if meta_path.exists():
        try:
            meta = _BANK_FORMAT.read_meta(npz, check=False)
        except PolicyFormatError as exc:
            meta, sidecar = None, f"unreadable sidecar ({exc})"
        if _BANK_FORMAT.holds(meta):  # a PolicyBank's: its own reader says what is wrong
            return PolicyBank.load(npz)
    if not npz.exists():
        raise FileNotFoundError(f"{path}: no such router bank (looked for {npz})")
    from trim_pomdp.rl.grid import RLRouterBank  # NumPy-only, but not needed for PolicyBanks

    try:
        return RLRouterBank.load(npz)
    except (PolicyFormatError, *_v.NPZ_ERRORS) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise PolicyFormatError(
            f"{npz}: not a saved router bank: {sidecar} and not an RL router bank ({detail})"
        ) from None
