"""Benchmarks of the point-based solver against SARSOP's figures in ../shared/pomdp/README.md.

Per problem:

* ``lb_30s``: lower (and upper) bound at b0 after a 30 s solve with a target gap of 1e-9, so
  the time limit (or convergence to 1e-9) ends it, vs SARSOP's 30 s lower bound;
* ``time_to_gap``: seconds to reach gap 1e-3 (the default target, SARSOP's precision) on the
  problems SARSOP converged on, median of 5 runs, vs SARSOP's time;
* memory: peak RSS of a fresh process that loads the problem and solves it (``ru_maxrss``)
  and the solver's own storage accounting (``SolveInfo.memory_mb``);
* the 30 s policy simulated (``trim_pomdp.simulate``, 10,000 episodes): its mean return must be
  within 3 standard errors of the claimed lower bound or above it (issue 20); the script
  exits 1 when a policy misses it.

Run:  python benchmarks/bench_solver.py [--time-limit 30] [--out bench_solver.json]
      (each problem in a fresh process; prints a markdown table, writes JSON)
or:   python benchmarks/bench_solver.py --generated rocksample:7,8 [--pomdpsol PATH]
      [--episodes N]  (a benchmarks/gen_pomdp.py instance: our parse time, bounds and peak
      RSS, and SARSOP's on the same file; our 30 s policy simulated for N episodes, 0: not)
or:   python benchmarks/bench_solver.py --sarsop /path/to/pomdpsol [--times 5,30] [PROBLEMS]
      side by side with C++ SARSOP in the same run: for each problem and time limit,
      ``trim-pomdp solve FILE --time-limit T`` and then ``pomdpsol FILE --timeout T`` (one at
      a time, each in a fresh process, as a user runs them), recording both lower and upper
      bounds at b0 and both peak RSS; the longest time limit's policy is also simulated
      (``trim-pomdp simulate``, its own process).  The load average is recorded before
      every run.
or:   python -m pytest benchmarks/bench_solver.py --benchmark-only \
          --benchmark-json=bench_solver.json   (time to gap 1e-3, pytest-benchmark)

The solver is deterministic; timings on a shared machine are noisy (report medians).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))  # the in-place build

SHARED = Path(os.environ.get("TRIM_POMDP_SHARED", _REPO.parent / "shared"))
PROBLEMS = SHARED / "pomdp"

# ../shared/pomdp/README.md: SARSOP 30 s LB, UB, time to its LB (None: hit the 30 s limit);
# keys are paths under ../shared/pomdp/.
SARSOP = {
    "problems/tiger.95.POMDP": (19.3711, 19.3721, 0.01),
    "problems/shuttle.95.POMDP": (32.8890, 32.8897, 0.01),
    "problems/cheese.95.POMDP": (3.48525, 3.48624, 0.01),
    "problems/4x3.95.POMDP": (1.88988, 1.89085, 0.59),
    "problems/network.POMDP": (293.185, 293.319, None),
    "problems/RockSample_4_4.pomdp": (17.9245, 17.9245, 0.22),
    "problems/hallway.POMDP": (0.98746, 1.20943, None),
    "large/Hallway2.pomdp": (0.348614, 0.907672, None),
    "large/TagAvoid.pomdp": (-6.20107, -1.8017, None),
}
SIM_EPISODES = 10_000
CONVERGED = [name for name, (_, _, t) in SARSOP.items() if t is not None]


def _vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak RSS (VmHWM) of a process since its exec, in MiB; None off Linux.

    ``ru_maxrss`` is not used: the kernel carries the pre-exec image's peak into it, so a
    process started from a Python parent reports at least the parent's RSS (pomdpsol on
    tiger showed 29 MB that way)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _load(name: str):
    from trim_pomdp.engine.model import POMDP

    return POMDP.from_file(PROBLEMS / name)


def _solve(model, time_limit: float, gap: float):
    from trim_pomdp.engine.solver import SolverConfig, solve_info

    return solve_info(model, SolverConfig(time_limit=time_limit, target_gap=gap))


def simulate_check(model, policy, lower_bound: float, episodes: int = SIM_EPISODES) -> dict:
    """Simulated return of ``policy`` against its claimed ``lower_bound``: ``ok`` when the
    mean (plus the truncated discounted tail) is within 3 standard errors of it or above."""
    from trim_pomdp.engine.montecarlo import simulate

    sim = simulate(model, policy, episodes=episodes, seed=1)
    z = (sim.mean - lower_bound) / sim.stderr if sim.stderr > 0 else math.inf
    return {"sim_mean": sim.mean, "sim_stderr": sim.stderr, "sim_z": z,
            "sim_ok": bool(sim.mean + sim.truncation_bound >= lower_bound - 3 * sim.stderr)}


def measure_one(name: str, time_limit: float, episodes: int = SIM_EPISODES,
                time_to_gap: bool = True) -> dict:
    """All figures for one problem (run in a fresh process for a clean peak RSS)."""
    model = _load(name)
    row: dict = {"problem": name, "S": model.n_states, "A": model.n_actions,
                 "O": model.n_observations}
    policy, info = _solve(model, time_limit, 1e-9)
    # Peak RSS of parse + solve, before the simulator's arrays and JIT add their own.
    hwm = _vm_hwm_mb()
    row["peak_rss_mb"] = (hwm if hwm is not None
                          else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    row.update(lb_30s=info.lower_bound, ub_30s=info.upper_bound, time_30s=info.time_s,
               n_alpha=info.n_alpha, n_beliefs=info.n_beliefs, solver_mb=info.memory_mb)
    if episodes > 0:
        row.update(simulate_check(model, policy, info.lower_bound, episodes))
    if time_to_gap and name in CONVERGED:
        runs = [_solve(model, time_limit, 1e-3)[1] for _ in range(5)]
        row["time_to_gap"] = statistics.median(r.time_s for r in runs)
        row["lb_at_gap"] = runs[0].lower_bound
        row["ub_at_gap"] = runs[0].upper_bound
    return row


def _run_child(cmd: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """``(stdout, wall s, peak RSS MB)`` of one command in its own process (``os.wait4``
    gives this child's own rusage; RUSAGE_CHILDREN would keep the largest so far)."""
    import tempfile
    import time

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.DEVNULL, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if rc not in (0,):
            raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {rc}")
        f.seek(0)
        return f.read(), wall, usage.ru_maxrss / 1024.0


def cli_solve(path: Path, time_limit: float, policy: Path | None = None) -> dict:
    """``trim-pomdp solve PATH --time-limit T --json`` in its own process, as a user runs it:
    its JSON summary plus ``wall_s`` and ``peak_rss_mb`` (the whole process: interpreter,
    NumPy, the parsed model and the solver)."""
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    cmd = [sys.executable, "-m", "trim_pomdp", "solve", str(path), "--time-limit",
           str(time_limit), "--json"]
    if policy is not None:
        cmd += ["--out", str(policy)]
    out, wall, rss = _run_child(cmd, env)
    res = json.loads(out.strip().splitlines()[-1])
    res.update(wall_s=wall, peak_rss_mb=rss)
    return res


def cli_simulate(path: Path, policy: Path, lower_bound: float, episodes: int) -> dict:
    """``trim-pomdp simulate PATH POLICY --episodes N --seed 1 --json`` in its own process;
    ``sim_ok`` as in :func:`simulate_check`."""
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    out, wall, rss = _run_child([sys.executable, "-m", "trim_pomdp", "simulate", str(path),
                                 str(policy), "--episodes", str(episodes), "--seed", "1",
                                 "--json"], env)
    sim = json.loads(out.strip().splitlines()[-1])
    trunc = sim["truncation_bound"] or 0.0
    z = (sim["mean"] - lower_bound) / sim["stderr"] if sim["stderr"] > 0 else math.inf
    return {"sim_mean": sim["mean"], "sim_stderr": sim["stderr"], "sim_z": z,
            "sim_ok": bool(sim["mean"] + trunc >= lower_bound - 3 * sim["stderr"]),
            "sim_episodes": sim["episodes"], "sim_wall_s": wall, "sim_peak_rss_mb": rss}


def ours_cli(name: str, time_limit: float, episodes: int) -> dict:
    """Our side of the side-by-side run: the CLI solve (and, with ``episodes``, the CLI
    simulation of its policy), in the field names of :func:`measure_one`."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench_solver_"))
    try:
        policy = tmp / "policy.npz"
        res = cli_solve(PROBLEMS / name, time_limit, policy if episodes > 0 else None)
        row = {"problem": name, "lb_30s": res["lower_bound"], "ub_30s": res["upper_bound"],
               "time_30s": res["time_s"], "n_alpha": res["n_alpha"],
               "n_beliefs": res["n_beliefs"], "peak_rss_mb": res["peak_rss_mb"],
               "wall_s": res["wall_s"], "via": "trim-pomdp solve"}
        if episodes > 0:
            row.update(cli_simulate(PROBLEMS / name, policy, res["lower_bound"], episodes))
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure_generated(spec: str, time_limit: float, pomdpsol: str | None,
                      episodes: int = SIM_EPISODES) -> dict:
    """``--generated rocksample:7,8`` (or ``tag:9,7``): write the instance with
    benchmarks/gen_pomdp.py, then, one solver at a time in fresh processes, time our parse,
    run ``trim-pomdp solve FILE --time-limit T --out POLICY --json`` and, when ``pomdpsol`` is
    given, ``pomdpsol FILE --timeout T``; peak RSS of each from ``ru_maxrss`` of its process.
    With ``episodes > 0`` our policy is then simulated, ``trim-pomdp simulate FILE POLICY
    --episodes N --seed 1 --json`` in its own process (from the model's compressed rows: a
    sparse RockSample[7,8] has no 16 GB dense ``T`` to build), with its wall time and peak
    RSS, and ``sim_ok`` as in :func:`simulate_check`.  The temporary folder (the policy of a
    RockSample[7,8] takes ~400 MB) is removed afterwards."""
    import re
    import shutil
    import tempfile
    import time

    sys.path.insert(0, str(_REPO / "benchmarks"))
    import gen_pomdp

    kind, _, args = spec.partition(":")
    a, b = (int(x) for x in args.split(","))
    text = gen_pomdp.rocksample(a, b) if kind == "rocksample" else gen_pomdp.tag(a, b)
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    parse = ("import sys, time; from trim_pomdp.engine.model import POMDP; t = time.perf_counter();"
             " m = POMDP.from_file(sys.argv[1]); print(time.perf_counter() - t, m.storage)")

    def child(cmd: list[str]) -> tuple[str, float, float]:
        return _run_child(cmd, env)

    tmp = Path(tempfile.mkdtemp(prefix="bench_gen_"))
    try:
        path = tmp / f"{kind}_{a}_{b}.pomdp"
        path.write_text(text, encoding="ascii")
        row: dict = {"problem": f"{kind}[{a},{b}]", "file_mb": path.stat().st_size / 2**20}
        out, _, _ = child([sys.executable, "-c", parse, str(path)])
        row["parse_s"], row["storage"] = float(out.split()[0]), out.split()[1]
        policy = tmp / "policy.npz"
        out, wall, rss = child([sys.executable, "-m", "trim_pomdp", "solve", str(path),
                                "--time-limit", str(time_limit), "--out", str(policy),
                                "--json"])
        res = json.loads(out.strip().splitlines()[-1])
        row.update(S=res["n_states"], A=res["n_actions"], O=res["n_observations"],
                   lb=res["lower_bound"], ub=res["upper_bound"], solve_s=res["time_s"],
                   wall_s=wall, peak_rss_mb=rss, n_alpha=res["n_alpha"])
        if episodes > 0:
            out, wall, rss = child([sys.executable, "-m", "trim_pomdp", "simulate", str(path),
                                    str(policy), "--episodes", str(episodes), "--seed", "1",
                                    "--json"])
            sim = json.loads(out.strip().splitlines()[-1])
            trunc = sim["truncation_bound"] or 0.0
            z = (sim["mean"] - row["lb"]) / sim["stderr"] if sim["stderr"] > 0 else math.inf
            row.update(sim_mean=sim["mean"], sim_stderr=sim["stderr"], sim_z=z,
                       sim_ok=bool(sim["mean"] + trunc >= row["lb"] - 3 * sim["stderr"]),
                       sim_episodes=sim["episodes"], sim_wall_s=wall, sim_peak_rss_mb=rss)
        if pomdpsol:
            out, wall, rss = child([pomdpsol, str(path), "--timeout", str(time_limit),
                                    "-o", str(tmp / "out.policy")])
            rows = re.findall(r"^\s*([\d.]+)\s+\d+\s+\d+\s+(-?[\d.e+-]+)\s+(-?[\d.e+-]+)",
                              out, re.M)
            load = re.search(r"loading time : ([\d.]+)s", out)
            row.update(sarsop_lb=float(rows[-1][1]), sarsop_ub=float(rows[-1][2]),
                       sarsop_load_s=float(load.group(1)) if load else None,
                       sarsop_wall_s=wall, sarsop_peak_rss_mb=rss)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def sarsop_one(binary: str, name: str, time_limit: float) -> dict:
    """Run ``pomdpsol`` on one problem in this (fresh) process and parse its final bounds.

    SARSOP prints a table whose last row (after the ``Time |#Trial |...`` header) holds the
    time, trials, backups, lower bound, upper bound, precision, alphas and beliefs.  Its peak
    RSS is its VmHWM, read every 5 ms while it runs (monotone, so the last reading misses at
    most the last 5 ms of growth)."""
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "stdout", "w+") as log:
            proc = subprocess.Popen(
                [binary, str(PROBLEMS / name), "--timeout", str(time_limit), "-o",
                 str(Path(tmp) / "out.policy")],
                stdout=log, stderr=subprocess.STDOUT, text=True,
            )
            rss = 0.0
            try:
                while proc.poll() is None:
                    hwm = _vm_hwm_mb(proc.pid)
                    if hwm is not None:
                        rss = max(rss, hwm)
                    time.sleep(0.005)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            log.seek(0)
            out = log.read()
    if proc.returncode != 0:
        raise RuntimeError(f"pomdpsol exited with {proc.returncode} on {name}:\n{out[-2000:]}")
    lines = out.splitlines()
    heads = [i for i, line in enumerate(lines)
             if line.lstrip().startswith("Time") and "#Trial" in line]
    if not heads:
        raise RuntimeError(f"no bounds table in pomdpsol's output for {name}:\n{out[-2000:]}")
    rows = [line.split() for line in lines[heads[-1] + 1:]]
    rows = [r for r in rows if len(r) >= 8 and r[0].replace(".", "", 1).isdigit()]
    t, trials, backups, lb, ub, _, n_alpha, n_bel = rows[-1][:8]
    return {"problem": name, "time_limit": time_limit, "lb": float(lb), "ub": float(ub),
            "time_s": float(t), "trials": int(trials), "n_alpha": int(n_alpha),
            "n_beliefs": int(n_bel), "peak_rss_mb": rss}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def side_by_side(binary: str, problems: list[str], times: list[float],
                 episodes: int) -> list[dict]:
    """Our solver and SARSOP, one at a time, at each time limit; markdown table + JSON rows."""
    rows = []
    for name in problems:
        for t in times:
            sim = episodes if t == max(times) else 0
            load_ours = os.getloadavg()[0]
            ours = ours_cli(name, t, sim)
            load_sarsop = os.getloadavg()[0]
            theirs = _child(["--sarsop-one", binary, name, "--time-limit", str(t)])
            rows.append({"problem": name, "time_limit": t, "ours": ours, "sarsop": theirs,
                         "load_ours": load_ours, "load_sarsop": load_sarsop})
            print(f"done {name} {t:g} s", file=sys.stderr, flush=True)
    print("| problem | time | our LB | SARSOP LB | our UB | SARSOP UB | our peak RSS MB "
          "| SARSOP peak RSS MB | RSS ratio | simulated return (z vs LB) | load (ours/SARSOP) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, s_ = r["ours"], r["sarsop"]
        simtxt = (f"{o['sim_mean']:.4f} ± {o['sim_stderr']:.4f} ({o['sim_z']:+.1f})"
                  if "sim_mean" in o else "-")
        print(f"| {Path(r['problem']).name} | {r['time_limit']:g} s | {o['lb_30s']:.5g} "
              f"| {s_['lb']:.5g} | {o['ub_30s']:.5g} | {s_['ub']:.5g} | {o['peak_rss_mb']:.0f} "
              f"| {s_['peak_rss_mb']:.0f} | {o['peak_rss_mb'] / s_['peak_rss_mb']:.2f} "
              f"| {simtxt} | {r['load_ours']:.1f} / {r['load_sarsop']:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generated", default=None, metavar="KIND:A,B",
                   help="measure a generated instance instead (rocksample:7,8 or tag:9,7)")
    p.add_argument("--pomdpsol", default=None, metavar="PATH",
                   help="with --generated: SARSOP's pomdpsol, run on the same file")
    p.add_argument("--time-limit", type=float, default=30.0)
    p.add_argument("--out", default="bench_solver.json")
    p.add_argument("--episodes", type=int, default=SIM_EPISODES,
                   help="episodes simulated per 30 s policy (the simulator costs O(K |supp b|) "
                   "per step: Hallway2's ~5,000-vector policy took over 15 min for 10,000)")
    p.add_argument("--sarsop", default=None, metavar="PATH",
                   help="a pomdpsol binary: run it side by side (see the module docstring)")
    p.add_argument("--times", default="5,30",
                   help="time limits of the side-by-side run, comma separated (default 5,30)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-gap", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sarsop-one", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("problems", nargs="*", default=None)
    args = p.parse_args(argv)
    if args.generated:
        r = measure_generated(args.generated, args.time_limit, args.pomdpsol, args.episodes)
        print(json.dumps(r, indent=1))
        Path(args.out).write_text(json.dumps({"time_limit": args.time_limit, "rows": [r]},
                                             indent=2))
        return 0
    if args.one:
        print(json.dumps(measure_one(args.one, args.time_limit, args.episodes,
                                     time_to_gap=not args.no_gap)))
        return 0
    if args.sarsop_one:
        print(json.dumps(sarsop_one(args.sarsop_one[0], args.sarsop_one[1], args.time_limit)))
        return 0
    if args.sarsop:
        times = [float(x) for x in args.times.split(",")]
        rows = side_by_side(args.sarsop, args.problems or list(SARSOP), times, args.episodes)
        Path(args.out).write_text(json.dumps({"times": times, "sarsop": args.sarsop,
                                              "rows": rows}, indent=2))
        missed = [f"{r['problem']} ({r['time_limit']:g} s)" for r in rows
                  if not r["ours"].get("sim_ok", True)]
        if missed:
            print(f"policies simulated more than 3 standard errors below their lower bound: "
                  f"{', '.join(missed)}", file=sys.stderr)
            return 1
        return 0
    args.problems = args.problems or list(SARSOP)
    rows = []
    for name in args.problems:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--time-limit", str(args.time_limit),
             "--episodes", str(args.episodes)],
            check=True, capture_output=True, text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"done {name}", file=sys.stderr, flush=True)
    print("| problem | S/A/O | our LB (30 s) | SARSOP 30 s LB | our UB (30 s) | SARSOP UB "
          "| time to gap 1e-3 (ours, median of 5) | SARSOP time | alphas | peak RSS MB "
          "| solver MB | simulated return (z vs LB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s_lb, s_ub, s_t = SARSOP[r["problem"]]
        ttg = f"{r['time_to_gap']:.4f} s" if "time_to_gap" in r else "-"
        st = f"{s_t} s" if s_t is not None else "30 s (limit)"
        name = Path(r["problem"]).name
        print(f"| {name} | {r['S']}/{r['A']}/{r['O']} | {r['lb_30s']:.5f} | {s_lb} "
              f"| {r['ub_30s']:.5f} | {s_ub} | {ttg} | {st} | {r['n_alpha']} "
              f"| {r['peak_rss_mb']:.0f} | {r['solver_mb']:.2f} "
              f"| {r['sim_mean']:.4f} ± {r['sim_stderr']:.4f} ({r['sim_z']:+.1f}) |")
    Path(args.out).write_text(json.dumps({"time_limit": args.time_limit, "rows": rows}, indent=2))
    missed = [r["problem"] for r in rows if not r["sim_ok"]]
    if missed:
        print(f"policies simulated more than 3 standard errors below their lower bound: "
              f"{', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------- pytest-benchmark entry


def _problem_or_skip(name: str):
    import pytest

    if not (PROBLEMS / name).exists():
        pytest.skip(f"{PROBLEMS / name} not present")
    return _load(name)


try:
    import pytest

    @pytest.mark.parametrize("name", CONVERGED)
    def test_time_to_gap(benchmark, name):
        model = _problem_or_skip(name)
        policy, info = benchmark.pedantic(_solve, args=(model, 30.0, 1e-3), rounds=5,
                                          iterations=1)
        assert info.gap <= 1e-3
        assert simulate_check(model, policy, info.lower_bound)["sim_ok"]
        benchmark.extra_info.update(lower_bound=info.lower_bound, upper_bound=info.upper_bound,
                                    sarsop_time_s=SARSOP[name][2])

    def _sparse_model(S: int, A: int = 8, n_obs: int = 10, nnz: int = 10):
        from types import SimpleNamespace

        import numpy as np

        rng = np.random.default_rng(0)
        T = np.zeros((A, S, S))
        for a in range(A):
            cols = rng.integers(0, S, (S, nnz))
            for s in range(S):
                T[a, s, cols[s]] += rng.random(nnz)
        T /= T.sum(axis=2, keepdims=True)
        Z = rng.random((A, S, n_obs)) ** 4
        Z /= Z.sum(axis=2, keepdims=True)
        return SimpleNamespace(T=T, Z=Z, R=rng.normal(size=(A, S)), discount=0.95,
                               b0=np.full(S, 1.0 / S))

    @pytest.mark.parametrize("n_threads", [1, 2])
    @pytest.mark.parametrize("nnz", [10, 40])
    def test_initial_bounds_threads(benchmark, nnz, n_threads):
        """FIB + blind-policy start on a random sparse model (S=1000, A=8, O=10, nnz
        transitions per row; 6.4e6 / 2.6e7 multiply-adds per FIB sweep, the second above the
        threading threshold): one thread vs two."""
        from trim_pomdp.engine.solver import SolverConfig, _solve_arrays

        m = _sparse_model(1000, nnz=nnz)
        cfg = SolverConfig(time_limit=600.0, max_iterations=0, n_threads=n_threads)
        benchmark.pedantic(_solve_arrays, args=(m.T, m.Z, m.R, m.discount, m.b0, cfg),
                           rounds=3, iterations=1)

except ImportError:  # pragma: no cover - script use without pytest
    pass


if __name__ == "__main__":
    sys.exit(main())
