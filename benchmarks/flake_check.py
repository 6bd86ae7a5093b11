"""Flake check: run the test files that spawn processes, servers or threads REPEAT times in a
row while CPU-burning processes compete for the cores, and count the runs that fail.

    python benchmarks/flake_check.py --repeat 20 --burners 2 [--json flake.json] [FILES...]

Each burner is ``python -c "while True: pass"`` at nice 0 (the same priority as the tests);
they are started by this script and killed by their pid when it ends, whatever happens.
Each run is a fresh ``python -m pytest -q -p no:cacheprovider FILES`` in the repository
root; its exit status, pass/fail counts and wall time are recorded.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: the test files that start a child process, a server thread, a timer or a thread pool
DEFAULT_FILES = [
    "tests/test_cli_solve.py", "tests/test_demo.py", "tests/test_package.py",
    "tests/test_calibration.py", "tests/test_parser_fuzz.py", "tests/test_simulate.py",
    "tests/test_solver.py", "tests/test_rl.py", "tests/test_serving_endpoints.py",
    "tests/test_serving_cli.py", "tests/test_serving_prm.py", "tests/test_serving_runner.py",
    "tests/test_journey.py", "tests/test_extras_missing.py",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", default=DEFAULT_FILES)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--burners", type=int, default=2, help="CPU-burning processes (default 2)")
    ap.add_argument("--json", help="write the per-run records here")
    args = ap.parse_args(argv)

    # SIGTERM ends the script through its finally, so the burners it started die with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.burners)]
    runs = []
    try:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   *args.files], cwd=REPO, capture_output=True, text=True,
                                  timeout=3600)
            wall = time.perf_counter() - t0
            tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)",
                                                       tail)}
            failed = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
            runs.append({"run": i + 1, "rc": proc.returncode, "wall_s": round(wall, 1),
                         **counts, "failures": failed})
            print(f"run {i + 1}/{args.repeat}: rc {proc.returncode}  {tail}", flush=True)
            for ln in failed:
                print(f"    {ln}", flush=True)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    n_bad = sum(r["rc"] != 0 for r in runs)
    walls = [r["wall_s"] for r in runs]
    print(f"{len(runs)} runs, {len(runs) - n_bad} green, {n_bad} red; wall per run "
          f"{min(walls):.0f}-{max(walls):.0f} s, with {args.burners} CPU burners")
    if args.json:
        Path(args.json).write_text(json.dumps({"files": args.files, "burners": args.burners,
                                               "runs": runs}, indent=1) + "\n")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
