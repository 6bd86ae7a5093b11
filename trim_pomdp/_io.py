"""Artefact I/O: the ``.npz`` + JSON format every saved model shares, and atomic saving.

The format: a ``.npz`` holding the arrays plus JSON metadata (``kind``,
``format_version``, the object's scalars), either as a string inside the archive or as a
sidecar ``.json`` next to it, read with ``allow_pickle=False`` so a file handed to us is
never unpickled.  An :class:`Artefact` declares one such format (its kind, version, error
type and required arrays); its :meth:`~Artefact.save` / :meth:`~Artefact.load` are the
one writer and reader every saved model, policy and bank goes through, with the one
``kind``/``format_version`` check (:meth:`~Artefact.check`).  :func:`_need` checks one
array of a fitted model (presence, dtype, shape, finiteness, range).  Every failure is
the artefact's typed error, one line naming the file.

Atomic saving: every artefact trim_pomdp writes goes through :func:`atomic_files`.

A save writes each file to a temporary file in the *same folder* (so the final rename
cannot cross a file system), flushes and ``fsync``s it, and only then ``os.replace``s it
over the target.  A failure at any point before the rename (disk full, I/O error, an
exception while serialising) removes the temporary files and leaves the previous file at
the target path untouched; several files saved together (a bank's ``.npz`` and its JSON
sidecar) are all renamed only after all of them were written.

:func:`check_output_path` checks an output path *before* a long computation (solve,
solve-grid, fit), so a missing or read-only folder is reported before the work, not after.

Strict JSON: :func:`strict_json` turns non-finite floats (NaN, +-inf) into ``null`` and
NumPy scalars/arrays into plain values, so every JSON file written is RFC 8259 JSON.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from trim_pomdp import _validate as _v
from trim_pomdp.errors import ModelValidationError, OutputPathError, OutputWriteError

__all__ = [
    "Artefact",
    "read_json_file",
    "atomic_files",
    "atomic_write",
    "savez_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "strict_json",
    "npz_path",
    "check_output_path",
]


def npz_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``.npz`` appended when missing (what ``np.savez`` does)."""
    p = Path(path)
    return p if p.name.endswith(".npz") else p.with_name(p.name + ".npz")


def _fsync_dir(folder: Path) -> None:
    # Makes the renames durable; not all file systems support it, and the data itself is
    # already on disk, so a failure here is not an error of the save.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


@contextmanager
def atomic_files(paths: Sequence[str | os.PathLike[str]], mode: str = "wb",
                 encoding: str | None = None) -> Iterator[list[IO[Any]]]:
    """Open temporary files for ``paths``; on success replace every target at once.

    Yields one open file per path (``mode`` ``"wb"`` or ``"w"``).  On leaving the block
    normally every file is flushed, ``fsync``-ed and closed, then renamed over its target
    (in the order given).  On any exception the temporary files are deleted, the targets are
    untouched, and an ``OSError`` is re-raised as :class:`OutputWriteError` naming the file.
    """
    targets = [Path(p) for p in paths]
    tmps: list[Path] = []
    handles: list[IO[Any]] = []
    current = targets[0] if targets else Path()
    try:
        for target in targets:
            current = target
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
            # O_EXCL: never follow or reuse an existing file; 0o666 & ~umask like open()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            tmps.append(tmp)
            handles.append(os.fdopen(fd, mode, encoding=encoding))
        yield handles
        for target, fh in zip(targets, handles, strict=True):
            current = target
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        for target, tmp in zip(targets, tmps, strict=True):
            current = target
            os.replace(tmp, target)
        tmps.clear()
        for folder in {t.parent for t in targets}:
            _fsync_dir(folder)
    except OSError as exc:
        if isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(
            f"cannot write {current}: {_describe(exc)}; the previous file (if any) is unchanged"
        ) from None
    finally:
        for fh in handles:
            try:
                fh.close()
            except OSError:
                pass  # a close that fails (disk full) after an earlier error: already failing
        for tmp in tmps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], Any],
                 mode: str = "wb", encoding: str | None = None) -> Path:
    """``write(fh)`` into a temporary file, then atomically replace ``path``."""
    with atomic_files([path], mode, encoding) as (fh,):
        write(fh)
    return Path(path)


def savez_atomic(path: str | os.PathLike[str], arrays: dict[str, Any]) -> Path:
    """``np.savez`` (uncompressed, no pickles) to ``path`` (``.npz`` appended) atomically."""
    target = npz_path(path)
    return atomic_write(target, lambda fh: np.savez(fh, **arrays))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda fh: fh.write(text), mode="w", encoding="utf-8")


def strict_json(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: NaN and +-inf
    become ``None`` (JSON ``null``), NumPy scalars and arrays become plain values, tuples
    become lists."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    tolist = getattr(obj, "tolist", None)  # NumPy scalar or array
    if callable(tolist):
        return strict_json(tolist())
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``strict_json(obj)`` atomically (non-finite numbers are written as null)."""
    text = json.dumps(strict_json(obj), indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def check_output_path(path: str | os.PathLike[str], *, what: str = "--out",
                      is_dir: bool = False, create: bool = False) -> Path:
    """Check, before any long computation, that ``path`` can be written.

    Parameters
    ----------
    path : path-like
        The output file (or folder with ``is_dir=True``).
    what : str
        How the path was given, for the message (e.g. ``"--out"``).
    is_dir : bool
        ``path`` is an output folder (created when missing if ``create``).
    create : bool
        Create the missing folder (with its parents) instead of refusing.

    Raises
    ------
    OutputPathError
        The folder is missing (and not created), is not a folder, or a probe file cannot
        be created in it; or a file target is an existing folder.
    """
    p = Path(path)
    folder = p if is_dir else (p.parent if str(p.parent) else Path("."))
    if not is_dir and p.is_dir():
        raise OutputPathError(f"{what} {p}: is a folder; expected a file path")
    if not folder.exists():
        if not create:
            raise OutputPathError(f"{what} {p}: folder {folder} does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(
                f"{what} {p}: cannot create folder {folder}: {_describe(exc)}") from None
    if not folder.is_dir():
        raise OutputPathError(f"{what} {p}: {folder} is not a folder")
    probe = folder / f".trim-pomdp-write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(
            f"{what} {p}: folder {folder} is not writable: {_describe(exc)}") from None
    return p


# ----------------------------------------------------------------------------- npz + JSON
def _json_type(v: Any) -> str:
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return "null" if v is None else type(v).__name__


@dataclass(frozen=True, kw_only=True)
class Artefact:
    """One saved artefact format: ``.npz`` arrays plus JSON metadata naming its ``kind``
    and ``format_version``, never unpickled, saved atomically.

    Every artefact trim_pomdp saves is one of these; a class declares its format once and
    calls :meth:`save` / :meth:`load`, so the reading, the version check and the error
    messages are the same for all of them.  The metadata is either a unicode string array
    ``meta_key`` inside the ``.npz``, or (``meta_key=None``) a JSON sidecar
    ``<name>.json`` next to ``<name>.npz``, written and renamed together with it.

    Parameters
    ----------
    kind : str
        The value of the metadata field ``kind_key`` that marks this format.
    version : int
        The ``format_version`` written, and the newest one read.
    what : str
        What the file is, for messages (``"policy file"``).  For a sidecar format the
        messages say ``"<what> metadata"`` and ``"<what> arrays"``.
    error : type
        The :mod:`trim_pomdp.errors` type raised for every failure; messages are one line
        and start with the file's path.
    arrays : tuple of str
        Arrays every file holds (dtype and shape are the reader's to check, with
        :mod:`trim_pomdp._validate`).
    meta_key : str or None
        The ``.npz`` member holding the metadata JSON; ``None`` for a sidecar.
    kind_key : str
        The metadata field holding ``kind``.
    oldest : int, optional
        The oldest ``format_version`` read (default: only ``version``).
    suffix : bool
        :meth:`save` appends ``.npz`` to a path without it (as ``np.savez`` does).  Reading
        takes the path as given, except for a sidecar format, whose two paths always are
        ``<stem>.npz`` and ``<stem>.json``.
    allow_nan : bool
        Write non-finite floats as JSON's ``NaN``/``Infinity`` extension; ``False`` refuses
        them (``ValueError``).  Only for formats whose metadata always held them.
    indent : int, optional
        Indentation of the JSON text (a sidecar is meant to be read by people).
    """

    kind: str
    version: int
    what: str
    error: type[Exception] = ModelValidationError
    arrays: tuple[str, ...] = ()
    meta_key: str | None = "metadata_json"
    kind_key: str = "kind"
    oldest: int | None = None
    suffix: bool = True
    allow_nan: bool = False
    indent: int | None = None

    def _what(self, part: str) -> str:
        return self.what if self.meta_key is not None else f"{self.what} {part}"

    def paths(self, path: str | os.PathLike[str]) -> tuple[Path, Path | None]:
        """The ``.npz`` a save writes and its sidecar (``None`` without one)."""
        npz = npz_path(path) if self.suffix or self.meta_key is None else Path(path)
        return npz, (None if self.meta_key is not None else npz.with_suffix(".json"))

    def save(self, path: str | os.PathLike[str], arrays: dict[str, Any],
             meta: dict[str, Any]) -> Path:
        """Write ``arrays`` and ``meta`` (plus ``kind`` and ``format_version``) atomically:
        a failed save (disk full) leaves the previous file(s) untouched.  Returns the
        ``.npz`` path written."""
        npz, sidecar = self.paths(path)
        text = json.dumps({self.kind_key: self.kind, "format_version": self.version, **meta},
                          allow_nan=self.allow_nan, indent=self.indent)
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        if sidecar is None:
            assert self.meta_key is not None
            payload[self.meta_key] = np.array(text)
            atomic_write(npz, lambda fh: np.savez(fh, **payload))
        else:
            with atomic_files([npz, sidecar], "wb") as (fh_npz, fh_meta):
                np.savez(fh_npz, **payload)
                fh_meta.write((text + "\n").encode("utf-8"))
        return npz

    def holds(self, meta: Any) -> bool:
        """Whether ``meta`` says it is of this kind (whatever its version)."""
        return isinstance(meta, dict) and meta.get(self.kind_key) == self.kind

    def check(self, meta: Any, where: str, label: str = "metadata") -> None:
        """Raise unless ``meta`` is a JSON object of this ``kind`` and a ``format_version``
        read here (an integer, never ``True``); ``label`` names the metadata in the
        message."""
        if not isinstance(meta, dict):
            raise self.error(f"{where}: {label} must be a JSON object; got a JSON "
                             f"{_json_type(meta)}")
        if self.kind_key not in meta:
            raise self.error(f"{where}: field {self.kind_key!r} is missing; expected "
                             f"{self.kind!r}")
        got_kind = meta[self.kind_key]
        if got_kind != self.kind:
            raise self.error(f"{where}: field {self.kind_key!r} is {_v._short(got_kind)}; "
                             f"expected {self.kind!r}")
        got = meta.get("format_version")
        oldest = self.version if self.oldest is None else self.oldest
        if isinstance(got, bool) or not isinstance(got, int) or not oldest <= got <= self.version:
            reads = self.version if oldest == self.version else f"{oldest}..{self.version}"
            raise self.error(f"{where}: format_version {_v._short(got)} is not supported "
                             f"(this trim_pomdp reads {reads})")

    def read_meta(self, path: str | os.PathLike[str], *, check: bool = True) -> Any:
        """A sidecar format's metadata (checked with :meth:`check` unless ``check`` is
        false).  ``FileNotFoundError`` when the sidecar is missing."""
        sidecar = self.paths(path)[1]
        if sidecar is None:
            raise TypeError(f"{self.kind} keeps its metadata inside the .npz: use load()")
        meta = read_json_file(sidecar, self.error, self._what("metadata"))
        if check:
            self.check(meta, str(sidecar))
        return meta

    def read_arrays(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        """A sidecar format's arrays, every one of :attr:`arrays` present."""
        npz = self.paths(path)[0]
        arrays = _v.read_npz(npz, self.error, self._what("arrays"))
        self._require(arrays, npz, self.arrays)
        return arrays

    def _require(self, arrays: dict[str, np.ndarray], where: Path,
                 names: Sequence[str]) -> None:
        missing = [k for k in names if k not in arrays]
        if missing:
            raise self.error(f"{where}: malformed {self._what('arrays')}: missing "
                             f"{', '.join(missing)}")

    def load(self, path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, metadata)`` of a file written by :meth:`save`, checked: a readable
        archive (``allow_pickle=False``, size-capped), metadata that is a JSON object of
        this ``kind`` and a ``format_version`` read here, every array of :attr:`arrays`
        present.  The metadata keeps its ``kind`` and ``format_version`` fields.

        Raises
        ------
        FileNotFoundError
            A file is missing.
        error
            Anything else, one line naming the file and what is wrong.
        """
        if self.meta_key is None:
            meta = self.read_meta(path)
            return self.read_arrays(path), meta
        p = Path(path)
        key = self.meta_key
        arrays = _v.read_npz(p, self.error, self.what)
        if key not in arrays:  # not this kind of file at all: say everything it lacks
            self._require(arrays, p, (*self.arrays, key))
        raw = arrays.pop(key)
        if raw.shape != () or raw.dtype.kind != "U":
            raise self.error(f"{p}: {key!r} must be a JSON string; got a {raw.dtype} array of "
                             f"shape {raw.shape}")
        try:
            meta = json.loads(str(raw))
        except RecursionError:
            raise self.error(f"{p}: {key!r} is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, the int digit limit
            raise self.error(f"{p}: {key!r} is not valid JSON "
                             f"({str(exc).splitlines()[0][:200]})") from None
        self.check(meta, str(p), repr(key))
        self._require(arrays, p, self.arrays)
        return arrays, meta


def _need(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...] | None,
          name: str, *, integer: bool = False, lo: float | None = None,
          finite: bool = True) -> np.ndarray:
    """A saved array, checked: present, real (or integer) dtype, shape, finite, ``>= lo``.

    Returns float64 (int64 with ``integer=True``, range-checked before the cast).
    """
    if key not in arrays:
        raise ModelValidationError(f"{name}: missing array {key!r}")
    a = arrays[key]
    if shape is not None and a.shape != shape:
        raise ModelValidationError(f"{name}: array {key!r} must have shape {shape}; got {a.shape}")
    if integer:
        return _v.int_array(a, key, name, ModelValidationError,
                            lo=None if lo is None else int(lo))
    return _v.float_array(a, key, name, ModelValidationError, lo=lo, finite=finite)


def read_json_file(path: Path, error: type[Exception], what: str) -> Any:
    """Decode a small JSON file (a sidecar); any failure is ``error`` naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise error(f"{path}: cannot read {what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise error(f"{path}: cannot read {what}: not valid JSON "
                    f"({str(exc).splitlines()[0][:200]})") from None
