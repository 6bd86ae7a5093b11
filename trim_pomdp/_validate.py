"""One validation layer for artefacts a user hands us (banks, fitted models, traces, JSON
lines, sidecars).

Every helper takes ``where`` (a file, ``file:line`` or ``file: field`` prefix) and the error
class to raise (a :mod:`trim_pomdp.errors` type), and says what was expected and what was
found.  The rules:

* arrays that decide actions or probabilities are numeric (never strings or objects), of
  the expected shape, and finite (the first non-finite entry is named);
* integers are range-checked *before* any cast, so ``10**30`` is an error, not a wrapped
  int64;
* JSON fields are type-checked (``bool`` is not a number; ``null`` only where allowed);
* ``.npz`` files are opened with ``allow_pickle=False`` and anything a corrupt archive
  raises (``BadZipFile``, ``EOFError``, ``zlib.error``, a bad ``.npy`` header ...) becomes
  one typed error naming the file.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "read_npz",
    "float_array",
    "int_array",
    "json_number",
    "json_int",
    "json_bool",
    "json_str",
    "json_dict",
    "MAX_NPZ_BYTES",
]

#: refuse ``.npz`` archives whose members unpack to more than this (a flipped size byte
#: or a zip bomb must not take the machine's memory); saved banks and models are MBs
MAX_NPZ_BYTES = 4 * 1024**3

# What reading a corrupt or hostile archive can raise, from zipfile, zlib, numpy's .npy
# header parser (ValueError, SyntaxError from its literal_eval), struct unpacking, or an
# absurd declared size (MemoryError, OverflowError).
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
               NotImplementedError, RuntimeError, struct.error, OverflowError, MemoryError,
               SyntaxError, TypeError, IndexError, AttributeError)


def _name(dtype: np.dtype) -> str:
    return {"U": "string", "S": "bytes", "O": "object", "b": "bool", "c": "complex",
            "V": "void/record", "M": "datetime", "m": "timedelta"}.get(dtype.kind, str(dtype))


def read_npz(path: str | os.PathLike[str], error: type[Exception],
             what: str = ".npz file") -> dict[str, NDArray[Any]]:
    """All arrays of a ``.npz`` archive, read with ``allow_pickle=False``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist: ``"<path>: cannot read <what>: no such file"``.
    error
        The file is not a readable ``.npz`` (truncated, byte-flipped, pickled object arrays,
        members larger than :data:`MAX_NPZ_BYTES` in total): ``"<path>: cannot read <what>
        (truncated or corrupt?): <exception>: <detail>"``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: cannot read {what}: no such file")
    try:
        with zipfile.ZipFile(p) as zf:
            total = sum(info.file_size for info in zf.infolist())
        if total > MAX_NPZ_BYTES:
            raise error(f"{p}: cannot read {what}: its arrays would take {total} bytes "
                        f"(limit {MAX_NPZ_BYTES})")
        # our own handle: np.load leaves a file it opened itself open when the archive
        # is corrupt
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except NPZ_ERRORS as exc:
        if isinstance(exc, error):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{p}: cannot read {what} (truncated or corrupt?): {type(exc).__name__}: "
                    f"{detail[:200]}") from None


def float_array(value: Any, name: str, where: str, error: type[Exception], *,
                shape: tuple[int | None, ...] | None = None, finite: bool = True,
                lo: float | None = None, hi: float | None = None) -> NDArray[np.float64]:
    """``value`` as a float64 array after checking dtype (real numbers only), shape
    (``None`` entries are free), finiteness and bounds ``[lo, hi]``."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise error(f"{where}: array {name!r} must hold real numbers; got {_name(arr.dtype)} "
                    f"values")
    _check_shape(arr, name, where, error, shape)
    out = arr.astype(np.float64)
    if finite and out.size and not np.all(np.isfinite(out)):
        i = tuple(int(v) for v in np.argwhere(~np.isfinite(out))[0])
        raise error(f"{where}: array {name!r} must be finite; got {float(out[i])!r} at index "
                    f"{i if len(i) != 1 else i[0]}")
    if lo is not None and out.size and np.nanmin(out) < lo:
        raise error(f"{where}: array {name!r} must be >= {lo}; got {float(np.nanmin(out))!r}")
    if hi is not None and out.size and np.nanmax(out) > hi:
        raise error(f"{where}: array {name!r} must be <= {hi}; got {float(np.nanmax(out))!r}")
    return out


def int_array(value: Any, name: str, where: str, error: type[Exception], *,
              shape: tuple[int | None, ...] | None = None, lo: int | None = None,
              hi: int | None = None) -> NDArray[np.int64]:
    """``value`` as an int64 array: integer dtype, shape, and ``[lo, hi]`` checked on the
    stored values before the cast (a uint64 above 2**63 is an error, not a negative)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise error(f"{where}: array {name!r} must hold integers; got {_name(arr.dtype)} values")
    _check_shape(arr, name, where, error, shape)
    if arr.size:
        mn, mx = int(arr.min()), int(arr.max())  # Python ints: exact for any int dtype
        lo_ = -(2**63) if lo is None else lo
        hi_ = 2**63 - 1 if hi is None else hi
        if mn < lo_ or mx > hi_:
            bad = mn if mn < lo_ else mx
            raise error(f"{where}: array {name!r} must lie in [{lo_}, {hi_}]; got {bad}")
    return arr.astype(np.int64)


def _check_shape(arr: NDArray[Any], name: str, where: str, error: type[Exception],
                 shape: tuple[int | None, ...] | None) -> None:
    if shape is None:
        return
    if arr.ndim != len(shape) or any(w is not None and w != g
                                     for w, g in zip(shape, arr.shape, strict=False)):
        want = "(" + ", ".join("n" if w is None else str(w) for w in shape) + \
            ("," if len(shape) == 1 else "") + ")"
        raise error(f"{where}: array {name!r} must have shape {want}; got {arr.shape}")


_MISSING = object()


def _get(meta: Mapping[str, Any], key: str, where: str, error: type[Exception],
         default: Any) -> Any:
    if not isinstance(meta, Mapping):
        raise error(f"{where}: expected a JSON object; got {type(meta).__name__}")
    if key not in meta:
        if default is _MISSING:
            raise error(f"{where}: field {key!r} is missing")
        return default
    return meta[key]


def json_number(meta: Mapping[str, Any], key: str, where: str, error: type[Exception], *,
                lo: float | None = None, hi: float | None = None, nullable: bool = False,
                default: Any = _MISSING) -> float | None:
    """A finite JSON number (int or float, never a bool) in ``[lo, hi]``."""
    v = _get(meta, key, where, error, default)
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise error(f"{where}: field {key!r} must be a number{' or null' if nullable else ''}; "
                    f"got {_short(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise error(f"{where}: field {key!r} is too large; got {_short(v)}") from None
    if not math.isfinite(f):
        raise error(f"{where}: field {key!r} must be finite; got {v!r}")
    if (lo is not None and f < lo) or (hi is not None and f > hi):
        raise error(f"{where}: field {key!r} must lie in [{lo}, {hi}]; got {v!r}")
    return f


def json_int(meta: Mapping[str, Any], key: str, where: str, error: type[Exception], *,
             lo: int | None = None, hi: int | None = None, default: Any = _MISSING) -> int:
    """A JSON integer (never a bool or a float) in ``[lo, hi]``."""
    v = _get(meta, key, where, error, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise error(f"{where}: field {key!r} must be an integer; got {_short(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise error(f"{where}: field {key!r} must lie in [{lo}, {hi}]; got {_short(v)}")
    return v


def json_bool(meta: Mapping[str, Any], key: str, where: str, error: type[Exception], *,
              default: Any = _MISSING) -> bool:
    v = _get(meta, key, where, error, default)
    if not isinstance(v, bool):
        raise error(f"{where}: field {key!r} must be true or false; got {_short(v)}")
    return v


def json_str(meta: Mapping[str, Any], key: str, where: str, error: type[Exception], *,
             default: Any = _MISSING) -> str:
    v = _get(meta, key, where, error, default)
    if not isinstance(v, str) or not v:
        raise error(f"{where}: field {key!r} must be a non-empty string; got {_short(v)}")
    return v


def json_dict(meta: Mapping[str, Any], key: str, where: str, error: type[Exception], *,
              default: Any = _MISSING) -> dict[str, Any]:
    v = _get(meta, key, where, error, default)
    if not isinstance(v, dict):
        raise error(f"{where}: field {key!r} must be a JSON object; got {_short(v)}")
    return v


def _short(v: Any) -> str:
    """``repr`` of a user value, bounded (an int of 10**6 digits must not be printed, nor
    converted: Python refuses str() of ints over 4300 digits)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v).bit_length() > 64:
        return f"an integer of about {int(abs(v).bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(v)
    except ValueError:
        return type(v).__name__
    return text if len(text) <= 80 else text[:77] + "..."
