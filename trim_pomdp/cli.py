"""Command-line interface: ``trim-pomdp <command> ...``.

Each sub-command lives in its own module under ``trim_pomdp.commands`` with two
functions, ``add_parser(subparsers)`` and ``run(args) -> int``.  Those modules import
their heavy dependencies inside ``run`` so that ``trim-pomdp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: top-level module of an optional dependency -> the extra that installs it
EXTRAS: dict[str, str] = {
    "matplotlib": "plot",
    "aiohttp": "http",
    "httpx": "httpx",
    "gymnasium": "rl",
    "dask": "dask",
    "distributed": "dask",
}


def missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """``(module, extra)`` when ``exc`` is an import error of an optional extra's module."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ImportError) or not isinstance(name, str):
        return None
    top = name.split(".", 1)[0]
    return (top, EXTRAS[top]) if top in EXTRAS else None


def extra_hint(module: str) -> str:
    """``pip install "trim_pomdp[EXTRA]"`` for ``module`` (an EXTRAS key)."""
    return f'pip install "trim_pomdp[{EXTRAS[module]}]"'


# command name -> module; the order is the order shown by --help
_COMMANDS: dict[str, str] = {
    "demo": "trim_pomdp.commands.demo",
    "solve": "trim_pomdp.commands.solve",
    "simulate": "trim_pomdp.commands.simulate",
    "fit": "trim_pomdp.commands.fit",
    "traces-from-processbench": "trim_pomdp.commands.processbench",
    "solve-grid": "trim_pomdp.commands.solve_grid",
    "evaluate": "trim_pomdp.commands.evaluate",
    "train": "trim_pomdp.commands.train",
    "route": "trim_pomdp.commands.route",
    "serve": "trim_pomdp.commands.serve",
}


def build_parser() -> argparse.ArgumentParser:
    from trim_pomdp import __version__

    parser = argparse.ArgumentParser(
        prog="trim-pomdp",
        description="Targeted stepwise routing (TRIM) and a point-based POMDP solver.",
    )
    parser.add_argument("--version", action="version", version=f"trim-pomdp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS.values():
        module = importlib.import_module(module_name)
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from trim_pomdp.errors import OutputWriteError, TrimPomdpError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    # A failed write (disk full) is not bad input: one line, exit status 1; the save was
    # atomic, so the previous file is intact.
    except OutputWriteError as exc:
        print(f"trim-pomdp {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    # Bad input (a typed trim_pomdp error, a ValueError from argument checking, a missing
    # or unreadable file) is reported as one line on stderr with exit status 2 (as argparse
    # does for a bad option), never a traceback.
    except (TrimPomdpError, ValueError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError) as exc:
        print(f"trim-pomdp {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    # Any other OS failure (an I/O error reading or writing): one line, exit status 1.
    except OSError as exc:
        print(f"trim-pomdp {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except ImportError as exc:
        # An optional extra that the command's main output needs is not installed: one line
        # saying what was not done and which extra brings it (parts that are optional, such as
        # fit's plots, are skipped by the commands themselves and do not get here).
        found = missing_extra(exc)
        if found is None:
            raise
        module, _ = found
        print(f"trim-pomdp {args.command}: error: {module} is not installed, so nothing was "
              f"written; {extra_hint(module)} brings it", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"trim-pomdp {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """The message on one line (a message may quote user text with newlines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
