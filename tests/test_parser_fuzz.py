"""Bounded mutation fuzzing of the C++ parser over the shared `.pomdp` files.

Each mutated file must either parse to a valid model (which the POMDP constructor accepts
and the writer round-trips bit for bit) or raise PomdpFormatError naming "file:line" -- never
another exception, a crash or a hang.  The loop runs in a child process so that a crash or
a hang is reported as a test failure instead of killing pytest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()

# Replacements for a number token: boundary values, garbage and other token kinds.
NUMBER_SUBS = ["0", "1", "2", "3", "0.5", "-1", "-0.5", "1.5", "1e999", "1e-999", "nan", "inf",
               "0x10", "1..2", "1e", "+", "-", "*", ":", "", "uniform", "identity", "x", "7 7"]
WORD_SUBS = ["*", ":", "", "0", "99", "unknown-name", "T", "O", "R", "start", "include",
             "exclude", "uniform", "identity", "reset", "values", "#", "\x00", "\xff"]
TOKEN_RE = re.compile(r"[^\s:#*]+|[:*]")


def mutate(text: str, rng: np.random.Generator) -> str:
    """One random edit: token delete/duplicate/replace, line delete/swap/duplicate,
    truncation, or inserted bytes."""
    kind = int(rng.integers(9))
    if kind <= 3:
        # The token at or after a random position (or the first one).
        def token_at(pos: int) -> tuple[int, int] | None:
            m = TOKEN_RE.search(text, pos) or TOKEN_RE.search(text)
            return m.span() if m else None

        span = token_at(int(rng.integers(len(text) + 1)))
        if span is None:
            return text + "x"
        a, b = span
        tok = text[a:b]
        if kind == 0:  # delete a token
            return text[:a] + text[b:]
        if kind == 1:  # duplicate a token
            return text[:b] + " " + tok + text[b:]
        if kind == 3:  # a name or number taken from elsewhere in the file
            c, d = token_at(int(rng.integers(len(text) + 1)))
            return text[:a] + text[c:d] + text[b:]
        subs = NUMBER_SUBS if re.fullmatch(r"[-+.\d][\w.+-]*", tok) else WORD_SUBS
        return text[:a] + subs[int(rng.integers(len(subs)))] + text[b:]
    lines = text.split("\n")
    i, j = (int(x) for x in rng.integers(len(lines), size=2))
    if kind == 4:  # delete a line
        del lines[i]
    elif kind == 5:  # swap two lines
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 6:  # duplicate a line
        lines.insert(j, lines[i])
    elif kind == 7:  # truncate
        return text[: int(rng.integers(len(text) + 1))]
    else:  # insert random characters
        pos = int(rng.integers(len(text) + 1))
        junk = "".join(chr(int(c)) for c in rng.integers(0, 256, size=int(rng.integers(1, 4))))
        return text[:pos] + junk + text[pos:]
    return "\n".join(lines)


def fuzz(files: list[str], n_mutants: int, seed: int, time_budget: float) -> dict:
    """Run the loop; returns counts.  Raises AssertionError on any contract violation."""
    from trim_pomdp import POMDP, PomdpFormatError, _core
    from trim_pomdp.engine.model import FILE_TOL

    rng = np.random.default_rng(seed)
    texts = [Path(f).read_text(encoding="latin-1") for f in files]
    counts = {"parsed": 0, "format_error": 0, "total": 0}
    start = time.perf_counter()
    for k in range(n_mutants):
        if time.perf_counter() - start > time_budget:
            break
        idx = int(rng.integers(len(texts)))
        text = texts[idx]
        for _ in range(int(rng.integers(1, 4))):  # 1 to 3 edits
            text = mutate(text, rng)
        label = f"mutant{k}"
        try:
            # A mutated count ("states: 11" -> "states: 99") must not allocate much.
            d = _core.parse_pomdp(text.encode("latin-1"), label, tol=FILE_TOL,
                                  max_entries=2_000_000)
        except PomdpFormatError as exc:
            msg = str(exc)
            assert re.match(rf"{label}:\d+: \S", msg), msg
            assert exc.filename == label and exc.line >= 1, (exc.filename, exc.line)
            counts["format_error"] += 1
        except Exception as exc:  # noqa: BLE001 -- the contract is "only PomdpFormatError"
            raise AssertionError(f"{label} from {files[idx]} raised {exc!r}:\n{text}") from exc
        else:
            # The parser's own validation and the constructor's must agree.
            m = POMDP(d["T"], d["Z"], d["R"], d["discount"], d["b0"],
                      state_names=d["state_names"], action_names=d["action_names"],
                      observation_names=d["observation_names"], tol=FILE_TOL)
            assert np.all(np.abs(m.T.sum(axis=2) - 1) <= FILE_TOL)
            assert np.all(np.isfinite(m.R))
            m2 = POMDP.from_string(m.to_string(), label, tol=FILE_TOL)
            for name in ("T", "Z", "R", "b0"):
                assert getattr(m, name).tobytes() == getattr(m2, name).tobytes(), (label, name)
            counts["parsed"] += 1
        counts["total"] += 1
    return counts


def test_mutated_shared_files_parse_or_raise_format_error(pomdp_problems_dir,
                                                          pomdp_collection_dir):
    files = sorted(
        str(p)
        for d in (pomdp_problems_dir, pomdp_collection_dir)
        for p in d.iterdir()
        if p.suffix.lower() == ".pomdp" and p.stat().st_size < 40_000
    )
    assert len(files) > 40
    args = json.dumps({"files": files, "n_mutants": 4000, "seed": 20261201, "time_budget": 5.0})
    proc = subprocess.run(
        [sys.executable, str(HERE), args], capture_output=True, text=True, timeout=300,
        cwd=HERE.parents[1],
    )
    assert proc.returncode == 0, f"fuzz child failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    # Both outcomes occur: the loop exercises the happy path and the error paths.
    assert counts["total"] >= 200, counts
    assert counts["parsed"] >= 20 and counts["format_error"] >= 100, counts


def test_mutated_large_file(pomdp_problems_dir):
    # A few mutants of the 260 KB RockSample file (long token streams, named states).
    args = json.dumps({"files": [str(pomdp_problems_dir / "RockSample_4_4.pomdp")],
                       "n_mutants": 60, "seed": 7, "time_budget": 3.0})
    proc = subprocess.run(
        [sys.executable, str(HERE), args], capture_output=True, text=True, timeout=300,
        cwd=HERE.parents[1],
    )
    assert proc.returncode == 0, f"fuzz child failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["total"] >= 10, counts


if __name__ == "__main__":
    # Child process: python tests/test_parser_fuzz.py '{"files": [...], ...}'
    sys.path.insert(0, str(HERE.parents[1]))
    cfg = json.loads(sys.argv[1])
    print(json.dumps(fuzz(cfg["files"], cfg["n_mutants"], cfg["seed"], cfg["time_budget"])))
