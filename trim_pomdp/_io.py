"""The artefact format shared by the saved models: one ``.npz`` holding the arrays plus a
JSON metadata string (``kind``, ``format_version``, the model's scalars), read with
``allow_pickle=False`` so a file handed to us is never unpickled.

:func:`save_npz` / :func:`load_npz` write and read it, checking the ``kind`` and the
``format_version`` on load; :func:`_need` checks one array's presence and shape.  Every
failure is a :class:`~trim_pomdp.errors.ModelValidationError` naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from trim_pomdp.errors import ModelValidationError

__all__ = ["save_npz", "load_npz", "check_format"]


def check_format(meta: Any, name: str, kind: str, format_version: int, *,
                 error: type[Exception] = ModelValidationError, kind_key: str = "kind") -> None:
    """Raise ``error`` naming ``name`` unless ``meta`` is a dict of kind ``kind`` and
    ``format_version`` (the version check every artefact reader shares)."""
    got_kind = meta.get(kind_key) if isinstance(meta, dict) else None
    if got_kind != kind:
        raise error(f"{name}: holds a {got_kind!r}, expected {kind!r}")
    got = meta.get("format_version")
    if got != format_version:
        raise error(f"{name}: format_version {got!r} is not supported "
                    f"(this version reads {format_version})")




def save_npz(path: str | os.PathLike[str], kind: str, arrays: dict[str, np.ndarray],
             meta: dict[str, Any], format_version: int) -> None:
    """Write ``arrays`` plus JSON metadata (``kind``, ``format_version``) to one ``.npz``.

    The metadata is stored as a unicode string array ``metadata_json`` so the file loads with
    ``allow_pickle=False``.
    """
    meta = {"kind": kind, "format_version": format_version, **meta}
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    payload["metadata_json"] = np.array(json.dumps(meta, allow_nan=False))
    with open(path, "wb") as fh:
        np.savez(fh, **payload)


def load_npz(path: str | os.PathLike[str], kind: str,
             format_version: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of :func:`save_npz`; checks ``kind`` and ``format_version``."""
    name = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ModelValidationError(f"{name}: not a readable .npz file ({exc})") from None
    if "metadata_json" not in arrays:
        raise ModelValidationError(f"{name}: missing 'metadata_json' (not a trim_pomdp model file)")
    try:
        meta = json.loads(str(arrays.pop("metadata_json")))
    except json.JSONDecodeError as exc:
        raise ModelValidationError(f"{name}: 'metadata_json' is not valid JSON ({exc})") from None
    check_format(meta, name, kind, format_version)
    return arrays, meta


def _need(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...] | None,
          name: str) -> np.ndarray:
    if key not in arrays:
        raise ModelValidationError(f"{name}: missing array {key!r}")
    a = arrays[key]
    if shape is not None and a.shape != shape:
        raise ModelValidationError(f"{name}: array {key!r} must have shape {shape}; got {a.shape}")
    return a
