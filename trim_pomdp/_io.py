"""Atomic saving: every artefact trim_pomdp writes goes through :func:`atomic_files`.

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
from pathlib import Path
from typing import IO, Any

from trim_pomdp.errors import OutputPathError, OutputWriteError

__all__ = [
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
    import numpy as np

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
