"""End to end: ``trim-pomdp solve`` on tiger, then ``trim-pomdp simulate`` of the policy it
wrote; the Monte Carlo mean must agree with the solver's value within 3 standard errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from trim_pomdp.cli import main
from trim_pomdp.engine.policy import AlphaVectorPolicy

TIGER_EXACT = 19.37137  # ../shared/pomdp/README.md (exact value iteration)
TIGER_SARSOP_LB, TIGER_SARSOP_UB = 19.3711, 19.3721


@pytest.fixture(scope="module")
def solved_tiger(tmp_path_factory):
    """Solve tiger.95 once through the CLI (--json) and keep the outputs."""
    from conftest import shared_path

    problem = shared_path("pomdp", "problems", "tiger.95.POMDP")
    out = tmp_path_factory.mktemp("tiger")
    argv = [
        "solve", str(problem), "--time-limit", "10", "--gap", "1e-3", "--json",
        "--out", str(out / "tiger.npz"), "--sarsop-policy", str(out / "tiger.policy"),
    ]  # fmt: skip
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    assert rc == 0
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1, "--json prints exactly one JSON object"
    return problem, out, json.loads(lines[0])


def test_solve_json_fields_and_values(solved_tiger):
    _, out, info = solved_tiger
    for key in ("lower_bound", "upper_bound", "gap", "time_s", "n_alpha", "iterations"):
        assert key in info
    assert abs(info["lower_bound"] - TIGER_EXACT) <= 1e-3
    assert info["lower_bound"] <= TIGER_SARSOP_UB
    assert info["upper_bound"] >= TIGER_SARSOP_LB
    assert info["gap"] <= 1e-3 + 1e-12
    assert info["gap"] == pytest.approx(info["upper_bound"] - info["lower_bound"], abs=1e-9)
    assert info["interrupted"] is False
    assert info["policy"] == str(out / "tiger.npz")


def test_saved_policies_agree_with_solver(solved_tiger):
    problem, out, info = solved_tiger
    from trim_pomdp.engine.model import POMDP

    model = POMDP.from_file(problem)
    pol = AlphaVectorPolicy.load(out / "tiger.npz").check_model(model)
    assert pol.n_vectors == info["n_alpha"]
    # the solver's lower bound at b0 is the policy's value there
    assert pol.value(model.b0) == pytest.approx(info["lower_bound"], abs=1e-9)
    assert pol.metadata["lower_bound"] == info["lower_bound"]
    assert pol.action_names == ["listen", "open-left", "open-right"]
    assert pol.action(model.b0) == 0  # listen first
    sarsop = AlphaVectorPolicy.from_sarsop_policy(out / "tiger.policy").check_model(model)
    assert sarsop.alphas.tobytes() == pol.alphas.tobytes()
    assert np.array_equal(sarsop.actions, pol.actions)
    assert sarsop.metadata["model"] == "tiger.95.POMDP"


def test_simulate_solved_policy_matches_solver_value(solved_tiger, capsys):
    problem, out, info = solved_tiger
    rc = main(
        [
            "simulate",
            str(problem),
            str(out / "tiger.npz"),
            "--episodes",
            "20000",
            "--seed",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    sim = json.loads(capsys.readouterr().out)
    assert sim["episodes"] == 20000 and sim["horizon"] == 283
    assert sim["truncation_bound"] <= 1e-3
    assert sim["stderr"] > 0
    # V^pi(b0) lies in [LB, V*] and the gap is <= 1e-3: the mean must match within 3 s.e.
    assert abs(sim["mean"] - info["lower_bound"]) < 3 * sim["stderr"], sim
    assert sim["solver_lower_bound"] == info["lower_bound"]
    # the SARSOP XML copy of the policy simulates identically (same vectors, same seed)
    means = []
    for policy_file in ("tiger.npz", "tiger.policy"):
        argv = ["simulate", str(problem), str(out / policy_file), "--episodes", "2000", "--json"]
        assert main(argv) == 0
        means.append(json.loads(capsys.readouterr().out)["mean"])
    assert means[0] == means[1]


def test_solve_progress_table(solved_tiger, tmp_path, capsys):
    problem, _, _ = solved_tiger
    rc = main(["solve", str(problem), "--time-limit", "5", "--out", str(tmp_path / "p.npz")])
    assert rc == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "solving tiger.95.POMDP: 2 states, 3 actions, 2 observations, discount 0.95"
    assert lines[1].split() == ["time_s", "lower", "upper", "gap", "alphas", "iteration"]
    rows = [ln.split() for ln in lines[2:] if ln[:1] == " "]
    assert rows, "at least the final row"
    lb, ub = float(rows[-1][1]), float(rows[-1][2])
    assert abs(lb - TIGER_EXACT) <= 1e-3 and ub >= TIGER_SARSOP_LB
    assert "value at b0 in [" in text
    assert f"policy written to {tmp_path / 'p.npz'}" in text


def test_simulate_text_output(solved_tiger, capsys):
    problem, out, _ = solved_tiger
    rc = main(
        [
            "simulate",
            str(problem),
            str(out / "tiger.npz"),
            "--episodes",
            "200",
            "--seed",
            "3",
            "--horizon",
            "50",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "over 200 episodes of 50 steps, seed 3" in text
    assert "standard error" in text


def test_simulate_rejects_policy_of_another_model(solved_tiger, tmp_path, capsys):
    problem, _, _ = solved_tiger
    AlphaVectorPolicy(np.zeros((1, 3)), [0]).save(tmp_path / "other.npz")
    rc = main(["simulate", str(problem), str(tmp_path / "other.npz"), "--episodes", "10"])
    assert rc == 2  # bad input
    err = capsys.readouterr().err
    assert "trim-pomdp simulate: error:" in err
    assert "alpha vectors have length 3 but the model has 2 states" in err


def test_solve_missing_file_is_reported(tmp_path, capsys):
    rc = main(["solve", str(tmp_path / "missing.pomdp"), "--json"])
    assert rc == 2
    assert "trim-pomdp solve: error:" in capsys.readouterr().err


def test_simulate_errors_are_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.policy"
    bad.write_text("<Policy>")
    good = tmp_path / "t.pomdp"
    good.write_text(
        "discount: 0.9\nvalues: reward\nstates: 1\nactions: 1\nobservations: 1\n"
        "T: 0 : 0 : 0 1.0\nO: 0 : 0 : 0 1.0\nR: 0 : 0 : * : * 1.0\n"
    )
    rc = main(["simulate", str(good), str(bad)])
    assert rc == 2  # bad input
    assert "malformed XML" in capsys.readouterr().err


def test_console_entry_point_runs(solved_tiger, tmp_path):
    # The real process path: python -m trim_pomdp solve ... --json
    problem, _, _ = solved_tiger
    out = subprocess.run(
        [sys.executable, "-m", "trim_pomdp", "solve", str(problem), "--time-limit", "5", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    info = json.loads(out.stdout)
    assert abs(info["lower_bound"] - TIGER_EXACT) <= 1e-3


def test_bad_option_values(tmp_path, capsys):
    assert main(["solve", str(tmp_path / "x.pomdp"), "--time-limit", "-1"]) == 2
    assert "time_limit must be > 0" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "x.pomdp"), "--gap", "0"]) == 2
    assert "target_gap must be finite and > 0" in capsys.readouterr().err
    rc = main(["simulate", "x.pomdp", "p.npz", "--episodes", "1", "--horizon", "0", "--seed", "-3"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "trim-pomdp simulate: error: --episodes must be >= 2; got 1; --horizon must be >= 1; "
        "got 0; --seed must be in 0..2**32-1; got -3"
    )


def test_ctrl_c_returns_best_policy_so_far(tmp_path):
    # SIGINT while solving hallway (far from converged in 600 s): the solver stops, the CLI
    # reports it, still writes the policy, and exits with 130.  The signal is sent once the
    # first progress row is out -- the explicit sign that the solver's loop, which polls for
    # Ctrl-C, is running -- not after a fixed sleep that a loaded machine can outlast.
    import signal

    from conftest import shared_path
    from proc_utils import DEADLINE, LineReader, reap, sigint_default

    problem = shared_path("pomdp", "problems", "hallway.POMDP")
    out = tmp_path / "hallway.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trim_pomdp", "solve", str(problem), "--time-limit", "600",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        stdout = LineReader(proc.stdout)
        stderr = LineReader(proc.stderr)
        header = stdout.wait_for(lambda ln: ln.split()[:1] == ["time_s"])
        assert header.split()[:2] == ["time_s", "lower"], header
        stdout.wait_for(lambda ln: _is_number(ln.split()[0]) if ln.split() else False)
        proc.send_signal(signal.SIGINT)
        rest = stdout.rest(DEADLINE)
        err = stderr.rest(DEADLINE)
        proc.wait(timeout=DEADLINE)
    finally:
        reap(proc)
    assert proc.returncode == 130, err
    assert "interrupted: returning the best policy found so far" in rest
    pol = AlphaVectorPolicy.load(out)
    assert pol.metadata["interrupted"] is True
    assert pol.n_states == 60


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# Converged problems of ../shared/pomdp/README.md: the solved policy's Monte Carlo return
# must fall inside [LB - 3 s.e., UB + 3 s.e.] (its true value lies in [LB, V*] within [LB, UB]).
@pytest.mark.parametrize("name", ["cheese.95.POMDP", "shuttle.95.POMDP", "4x3.95.POMDP"])
def test_simulated_return_within_solver_bounds(name, pomdp_problems_dir):
    from trim_pomdp.engine.model import POMDP
    from trim_pomdp.engine.montecarlo import simulate
    from trim_pomdp.engine.solver import SolverConfig, solve_info

    model = POMDP.from_file(pomdp_problems_dir / name)
    policy, info = solve_info(model, SolverConfig(time_limit=10, target_gap=1e-3))
    assert info.gap <= 1e-3 + 1e-12
    res = simulate(model, policy, episodes=4000, horizon=None, seed=7)
    assert info.lower_bound - 3 * res.stderr < res.mean < info.upper_bound + 3 * res.stderr, (
        res.mean,
        res.stderr,
        info.lower_bound,
        info.upper_bound,
    )


def test_solve_keeps_compressed_rows_only_when_smaller():
    # The solver holds rows whatever it is given: a mostly-zero dense parse is converted (and
    # its dense arrays dropped), a dense one stays dense (its rows would be 1.5x larger).
    from trim_pomdp.commands.solve import _rows_if_smaller
    from trim_pomdp.engine.model import POMDP

    S = 40
    T = np.zeros((2, S, S))
    T[:, np.arange(S), (np.arange(S) + 1) % S] = 1.0
    Z = np.zeros((2, S, 3))
    Z[:, :, 0] = 1.0
    sparse_like = POMDP(T, Z, np.zeros((2, S)), 0.9, np.full(S, 1.0 / S))
    rows = _rows_if_smaller(sparse_like)
    assert rows.storage == "sparse"
    np.testing.assert_array_equal(rows.T, T)
    dense = POMDP(np.full((2, S, S), 1.0 / S), np.full((2, S, 3), 1.0 / 3), np.zeros((2, S)),
                  0.9, np.full(S, 1.0 / S))
    assert _rows_if_smaller(dense).storage == "dense"
