"""Issue 19, engine and simulation: input built to cost memory, time or a traceback gets a
one-line typed error (or a documented bounded behaviour), never a crash or a wrong number.

Every hostile file is written by the test itself.  CLI cases run in a subprocess where the
exit status, the stderr line count or the process's peak memory is what is checked.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trim_pomdp import _core
from trim_pomdp.engine.model import POMDP
from trim_pomdp.engine.policy import AlphaVectorPolicy
from trim_pomdp.engine.solver import SolverConfig, _solve_arrays, solver_memory_bytes
from trim_pomdp.errors import (
    MemoryLimitError,
    ModelValidationError,
    PolicyFormatError,
    PomdpFormatError,
)

ROOT = Path(__file__).resolve().parents[1]
# the module (monkeypatched below), not the function `trim_pomdp.simulate`
simulate_mod = importlib.import_module("trim_pomdp.engine.montecarlo")

# The 116-byte file of the issue: valid, 16,383 states, 2 GiB of dense T.
HUGE = (
    "discount: 0.95\nvalues: reward\nstates: 16383\nactions: 1\nobservations: 1\n"
    "T: * uniform\nO: * uniform\nR: * : * : * : * 1\n"
)

TIGER = """discount: 0.95
values: reward
states: tiger-left tiger-right
actions: listen open-left open-right
observations: tiger-left tiger-right
start: uniform
T: listen
identity
T: open-left
uniform
T: open-right
uniform
O: listen
0.85 0.15
0.15 0.85
O: open-left
uniform
O: open-right
uniform
R: listen : * : * : * -1
R: open-left : tiger-left : * : * -100
R: open-left : tiger-right : * : * 10
R: open-right : tiger-left : * : * 10
R: open-right : tiger-right : * : * -100
"""

# Runs the CLI and then prints this process's peak resident memory (KiB) as the last line
# of stdout, so a test can check the memory of exactly this run.  VmHWM, not ru_maxrss:
# Linux carries ru_maxrss over from the forked parent (pytest) across exec.
_RUN_CLI = (
    "import sys\n"
    "from trim_pomdp.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "try:\n"
    "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "except OSError:\n"
    "    hwm = 0\n"
    "print('maxrss_kib', hwm, flush=True)\n"
    "sys.exit(rc)\n"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*argv: str, timeout: float = 300) -> tuple[int, str, str, int]:
    """(exit status, stdout without the memory line, stderr, peak RSS in MiB)."""
    proc = subprocess.run([sys.executable, "-c", _RUN_CLI, *argv], capture_output=True,
                          text=True, timeout=timeout, env=_env(), cwd=ROOT)
    lines = proc.stdout.splitlines()
    assert lines and lines[-1].startswith("maxrss_kib "), (proc.stdout, proc.stderr)
    return proc.returncode, "\n".join(lines[:-1]), proc.stderr, int(lines[-1].split()[1]) // 1024


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- memory


def test_huge_header_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.pomdp"
    path.write_text(HUGE)
    assert path.stat().st_size == 116
    # dense storage: refused from the header
    with pytest.raises(MemoryLimitError) as e:
        POMDP.from_file(path, max_memory_mb=500, storage="dense")
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: model too large: 1 action x 16383 states x (16383 states "
                          "+ 1 observation) needs about 2048.7 MB")
    assert "over max_memory_mb=500" in msg
    # the default (sparse, as the dense arrays exceed the limit): refused at the statement
    # that would write 16383**2 entries, before it writes any
    with pytest.raises(MemoryLimitError) as e:
        POMDP.from_file(path, max_memory_mb=500)
    msg = str(e.value)
    assert msg.startswith(f"{path}:6: model too large: this T: entry writes 268402689 "
                          "probabilities, taking the sparse rows of T and Z to about 6145.1 MB "
                          "(0 entries held), over max_memory_mb=500;"), msg


def test_parse_memory_estimate_is_the_arrays_it_allocates():
    # 8 bytes per double of T, Z, R, b0 and one S x O reward grid; per (a, s) row two ints
    # and one std::vector (24 bytes with libstdc++).
    S, A, O = 7, 3, 5  # noqa: E741
    dense = 8 * (A * S * S + A * S * O + A * S + S + S * O)
    assert _core.parse_memory_bytes(S, A, O) == dense + A * S * (8 + 24)
    text = f"discount: 0.9\nstates: {S}\nactions: {A}\nobservations: {O}\nT: * uniform\n"
    _core.parse_pomdp(text + "O: * uniform\n", "ok", max_memory_mb=1.0)  # 0.01 MB: fits
    with pytest.raises(MemoryLimitError, match=r"^tiny:2: model too large: .*over "
                                               r"max_memory_mb=0\.001;"):
        _core.parse_pomdp(text, "tiny", max_memory_mb=0.001)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cli_solve_on_the_116_byte_file_refuses_within_the_limit(tmp_path):
    path = tmp_path / "huge.pomdp"
    path.write_text(HUGE)
    rc, out, err, peak_mb = run_cli("solve", str(path), "--max-memory-mb", "500")
    assert rc == 2
    line = one_line(err)
    assert line.startswith("trim-pomdp solve: error: ") and "model too large" in line
    assert "max_memory_mb=500" in line
    assert peak_mb < 500, peak_mb  # refused from the header: nothing was allocated


def test_solver_entry_refuses_a_model_whose_copy_exceeds_the_limit():
    S = 2000  # T uniform: 48 MB of sparse rows (the solver keeps no dense copy)
    T = np.full((1, S, S), 1.0 / S)
    Z = np.ones((1, S, 1))
    parts = solver_memory_bytes(T, Z)
    assert parts["model"] == 8.0 * (S + S)
    assert parts["sparse"] == 12.0 * (S * S + S) + 16.0 * S
    # the same figures from the compressed rows of the same model
    sparse = POMDP(T, Z, np.zeros((1, S)), 0.9).to_sparse()
    assert solver_memory_bytes(sparse.T_csr, sparse.Z_csr) == parts
    t0 = time.perf_counter()
    with pytest.raises(MemoryLimitError, match=r"^the solver needs at least 46\.\d MB for a "
                                               r"model of 2000 states.*above max_memory_mb=40;"):
        _solve_arrays(T, Z, np.zeros((1, S)), 0.9, np.full(S, 1.0 / S),
                      SolverConfig(max_memory_mb=40, time_limit=60))
    # refused up front, not after a 60 s solve (generous bound: the machine is shared)
    assert time.perf_counter() - t0 < 30


def test_solver_storage_limit_still_stops_a_growing_solve():
    # Above the up-front estimate, the solver's own accounting stops the belief tree.
    rng = np.random.default_rng(7)
    S, A, O = 40, 4, 6  # noqa: E741
    T = rng.random((A, S, S)) * (rng.random((A, S, S)) > 0.7) + 1e-3
    T /= T.sum(axis=2, keepdims=True)
    Z = rng.random((A, S, O)) + 0.05
    Z /= Z.sum(axis=2, keepdims=True)
    R = rng.normal(size=(A, S))
    start_mb = sum(solver_memory_bytes(T, Z).values()) / 2**20
    limit = start_mb + 0.5
    with pytest.raises(MemoryLimitError, match=r"^solver storage reached .* above "
                                               r"max_memory_mb="):
        _solve_arrays(T, Z, R, 0.95, np.full(S, 1 / S),
                      SolverConfig(max_memory_mb=limit, time_limit=60, target_gap=1e-12))


_OOM = (
    "import resource, sys\n"
    "from trim_pomdp.cli import main\n"
    "vm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize')][0]\n"
    "resource.setrlimit(resource.RLIMIT_AS, (vm * 1024 + 300 * 2**20, resource.RLIM_INFINITY))\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_out_of_memory_while_parsing_is_one_typed_line(tmp_path):
    # 9000 states: 618 MB of dense T, so read as sparse rows: 81e6 entries (1.8 GB), under
    # the default limit but over the 300 MB of address space left to the process:
    # std::bad_alloc inside the parser.
    path = tmp_path / "big.pomdp"
    path.write_text("discount: 0.95\nstates: 9000\nactions: 1\nobservations: 1\n"
                    "T: * uniform\nO: * uniform\n")
    proc = subprocess.run([sys.executable, "-c", _OOM, "solve", str(path)], capture_output=True,
                          text=True, timeout=300, env=_env(), cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith(f"trim-pomdp solve: error: {path}: out of memory while parsing (the "
                           "model's sparse rows of T and Z and R need about 1855.")
    assert "bad_alloc" not in line


# --------------------------------------------------------------------------- rewards


def test_reward_whose_backups_overflow_is_refused_at_its_line():
    text = TIGER.replace("R: open-left : tiger-left : * : * -100",
                         "R: open-left : tiger-left : * : * -1e306")
    with pytest.raises(PomdpFormatError) as e:
        POMDP.from_string(text, "big.pomdp")
    assert e.value.line == 21
    assert str(e.value) == (
        "big.pomdp:21: R[a=1, s=0] = -1e+306 is too large: |R| / (1 - discount) = 2e+307 "
        "must be at most 1e+100 so that the solver's values stay finite; rescale the rewards "
        "(a=open-left, s=tiger-left) (the last R: entry for this action and state)"
    )


def test_reward_bound_scales_with_the_discount():
    T, Z = np.ones((1, 1, 1)), np.ones((1, 1, 1))
    POMDP(T, Z, [[5e99]], 0.5)  # 1e100 exactly: allowed
    with pytest.raises(ModelValidationError, match=r"R\[a=0, s=0\] = 6e\+99 is too large: "
                                                   r"\|R\| / \(1 - discount\) = 1\.2e\+100"):
        POMDP(T, Z, [[6e99]], 0.5)
    POMDP(T, Z, [[-1e100]], 1.0)
    with pytest.raises(ModelValidationError, match=r"= -2e\+100 is too large: \|R\| must be "
                                                   r"at most 1e\+100"):
        POMDP(T, Z, [[-2e100]], 1.0)
    assert _core.MAX_VALUE == 1e100


def test_cli_solve_refuses_overflowing_rewards_up_front(tmp_path):
    path = tmp_path / "r.pomdp"
    path.write_text(TIGER.replace("-1\n", "1e307\n", 1))
    rc, out, err, _ = run_cli("solve", str(path), "--time-limit", "600", "--json")
    assert rc == 2 and out == ""
    line = one_line(err)
    assert f"{path}:20: R[a=0, s=0] = 1e+307 is too large" in line


# --------------------------------------------------------------------------- line endings


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_line_endings_lf_crlf_cr(eol):
    # comments must stop at the line end whatever it is (with CR only, one '#' used to
    # swallow the rest of the file: "missing 'discount:'")
    text = ("# tiger, with comments\n" + TIGER.replace("uniform\n", "uniform # all equal\n"))
    ref = POMDP.from_string(text)
    m = POMDP.from_string(text.replace("\n", eol))
    for name in ("T", "Z", "R", "b0"):
        np.testing.assert_array_equal(getattr(m, name), getattr(ref, name))
    assert m.state_names == ("tiger-left", "tiger-right")
    bad = text.replace("O: open-left", "O: open-middle").replace("\n", eol)
    with pytest.raises(PomdpFormatError, match=r"^e:17: unknown action 'open-middle'") as e:
        POMDP.from_string(bad, "e")
    assert e.value.line == 17


def test_mixed_line_endings_count_lines_as_an_editor_does():
    text = "discount: 0.9\r\nstates: 2\ractions: 1\nobservations: 1\r\rT: 0 : 0 : 5 1\n"
    with pytest.raises(PomdpFormatError, match=r"^m:6: state index '5' out of range"):
        POMDP.from_string(text, "m")


# --------------------------------------------------------------------------- simulate


@pytest.fixture()
def tiger_policy(tmp_path):
    problem = tmp_path / "tiger.pomdp"
    problem.write_text(TIGER)
    # always listen: a fixed, valid policy of the right size
    policy = AlphaVectorPolicy(np.array([[-20.0, -20.0]]), [0])
    policy.save(tmp_path / "listen.npz")
    return POMDP.from_file(problem), policy, problem, tmp_path / "listen.npz"


def test_keeping_1e11_returns_is_refused_with_the_memory_it_needs(tiger_policy):
    model, policy, _, _ = tiger_policy
    with pytest.raises(MemoryLimitError, match=r"keeping the returns of 100000000000 episodes "
                                               r"needs 745\.1 GiB \(8 bytes each\)"):
        simulate_mod.simulate(model, policy, 10**11, 10, 0)


def test_chunked_simulation_is_the_same_stream(tiger_policy, monkeypatch):
    model, _, _, _ = tiger_policy
    # always opens the left door: returns vary with where the tiger is
    policy = AlphaVectorPolicy(np.array([[1.0, 0.0], [0.0, 0.5]]), [1, 2])
    whole = simulate_mod.simulate(model, policy, 3001, 20, 5)
    monkeypatch.setattr(simulate_mod, "STEPS_PER_CHUNK", 7 * 20 + 3)  # 7 episodes a chunk
    seen = []
    chunked = simulate_mod.simulate(model, policy, 3001, 20, 5,
                                    progress=lambda *a: seen.append(a))
    np.testing.assert_array_equal(chunked.returns, whole.returns)
    assert (chunked.mean, chunked.stderr) == (whole.mean, whole.stderr)
    assert [d for d, *_ in seen] == [*range(7, 3001, 7), 3001]
    assert all(total == 3001 for _, total, _, _ in seen)
    streamed = simulate_mod.simulate(model, policy, 3001, 20, 5, keep_returns=False)
    assert streamed.returns is None and streamed.episodes == 3001
    r = whole.returns
    assert np.std(r) > 10  # a real spread for the running moments to get right
    assert streamed.mean == pytest.approx(np.mean(r), rel=1e-12, abs=1e-12)
    assert streamed.stderr == pytest.approx(np.std(r, ddof=1) / math.sqrt(r.size), rel=1e-9)


def test_interrupt_between_chunks_reports_the_episodes_done(tiger_policy, monkeypatch):
    model, policy, _, _ = tiger_policy
    monkeypatch.setattr(simulate_mod, "STEPS_PER_CHUNK", 100 * 20)

    def stop_after_three(done, total, mean, stderr):
        if done >= 300:
            raise KeyboardInterrupt

    res = simulate_mod.simulate(model, policy, 10**6, 20, 1, progress=stop_after_three)
    assert res.interrupted and res.episodes == 300 and res.returns.shape == (300,)
    full = simulate_mod.simulate(model, policy, 300, 20, 1)
    np.testing.assert_array_equal(res.returns, full.returns)
    assert res.mean == full.mean


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cli_simulate_1e11_episodes_runs_in_bounded_memory(tiger_policy):
    # Not run to the end: wait for the first progress line, then Ctrl-C.  The run must not
    # have allocated for 1e11 episodes, and must report the estimate of those it did.
    from proc_utils import sigint_default

    _, _, problem, policy_path = tiger_policy
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_CLI, "simulate", str(problem), str(policy_path),
         "--episodes", "100000000000", "--horizon", "20", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
        preexec_fn=sigint_default)
    try:
        from proc_utils import DEADLINE, LineReader, reap

        assert proc.stderr is not None and proc.stdout is not None
        stderr, stdout = LineReader(proc.stderr), LineReader(proc.stdout)
        # the first progress line is the readiness signal (waited for with a deadline)
        first = stderr.wait_for(lambda ln: True)
        assert first.startswith("simulated ") and " of 100000000000 episodes" in first, first
        proc.send_signal(signal.SIGINT)
        out, err = stdout.rest(DEADLINE), first + stderr.rest(DEADLINE)
        proc.wait(timeout=DEADLINE)
    finally:
        reap(proc)
    assert proc.returncode == 130, err
    lines = out.splitlines()
    peak_mb = int(lines[-1].split()[1]) // 1024
    res = json.loads(lines[0])
    assert res["interrupted"] is True and res["episodes_requested"] == 10**11
    assert 2 <= res["episodes"] < 10**11
    # listening forever in tiger: exactly -sum_{t<20} 0.95^t, every episode, so the running
    # moments must give no spread at all (not rounding noise)
    assert res["mean"] == pytest.approx(-(1 - 0.95**20) / 0.05, rel=1e-12)
    assert res["stderr"] == 0.0
    assert peak_mb < 1000, peak_mb  # 1e11 returns would be 745 GiB


# --------------------------------------------------------------------------- SARSOP XML

LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
              for i in range(1, 10))
    + ']>\n<Policy version="0.1" type="value" model="x">&lol9;</Policy>\n'
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize(
    "text",
    [
        '<!DOCTYPE Policy [<!ENTITY a "aaaa">]><Policy>&a;</Policy>',
        '<!DOCTYPE Policy SYSTEM "file:///etc/passwd"><Policy/>',
        '<!DOCTYPE Policy><Policy/>',
        LAUGHS,
    ],
    ids=["entity", "external-dtd", "empty-dtd", "billion-laughs"],
)
def test_sarsop_reader_refuses_any_dtd_in_any_encoding(tmp_path, encoding, text):
    path = tmp_path / "evil.policy"
    # utf-16 starts with a BOM: no '<!DOCTYPE' byte string for a byte search to find
    path.write_bytes(text.encode(encoding))
    assert encoding == "utf-8" or b"<!DOCTYPE" not in path.read_bytes()
    with pytest.raises(PolicyFormatError, match=r"DTD/entity declarations are not allowed in "
                                                r"a policy file; found a DTD \(<!DOCTYPE>\)"):
        AlphaVectorPolicy.from_sarsop_policy(path)


def test_sarsop_reader_still_reads_utf16_and_rejects_undefined_entities(tmp_path):
    pol = AlphaVectorPolicy(np.array([[1.5, -2.0], [0.25, 3.0]]), [0, 2])
    path = pol.to_sarsop_policy(tmp_path / "p.policy")
    text = path.read_text(encoding="iso-8859-1").replace("ISO-8859-1", "UTF-16")
    path.write_bytes(text.encode("utf-16"))
    back = AlphaVectorPolicy.from_sarsop_policy(path)
    np.testing.assert_array_equal(back.alphas, pol.alphas)
    path.write_bytes("<Policy>&lol;</Policy>".encode("utf-16"))
    with pytest.raises(PolicyFormatError, match=r"malformed XML: undefined entity"):
        AlphaVectorPolicy.from_sarsop_policy(path)


def test_cli_simulate_with_a_utf16_dtd_policy_is_one_line(tiger_policy):
    _, _, problem, policy_path = tiger_policy
    evil = policy_path.with_name("evil.policy")
    evil.write_bytes(LAUGHS.encode("utf-16"))
    rc, out, err, _ = run_cli("simulate", str(problem), str(evil))
    assert rc == 2 and out == ""
    assert "DTD/entity declarations are not allowed" in one_line(err)


# --------------------------------------------------------------------------- RL banks


def _router(kind: str):
    from trim_pomdp.rl import nn
    from trim_pomdp.rl.agents import RLRouter

    if kind == "agg":
        params = nn.init_actor_critic(5, hidden=(8, 6), seed=1)
    else:
        params = {**nn.init_actor_critic(4 + 5, hidden=(8, 6), seed=1),
                  **nn.init_rnn(5, 4, seed=2)}
    return RLRouter(kind, params, lam=1e-3, token_scale=100.0)


def _rewrite(path: Path, edit) -> None:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta = edit(meta, arrays)
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)


def _drop(name):
    def edit(meta, arrays):
        del arrays[name]
        return meta
    return edit


def _set(name, value):
    def edit(meta, arrays):
        arrays[name] = np.asarray(value)
        return meta
    return edit


def _nan_at(name, idx):
    def edit(meta, arrays):
        arrays[name] = arrays[name].copy()
        arrays[name][idx] = np.nan
        return meta
    return edit


def _meta(key, value):
    def edit(meta, arrays):
        meta[key] = value
        return meta
    return edit


@pytest.mark.parametrize(
    "kind,edit,match",
    [
        ("agg", _drop("Wv"), r": missing weight arrays \['Wv'\]"),
        ("agg", _drop("b1"), r": missing weight arrays \['b1'\]"),
        ("agg", _set("bpi", np.zeros(3)), r": bpi has shape \(3,\); expected \(2,\)"),
        ("agg", _set("W1", np.zeros((8, 5))), r": b1 has shape \(6,\); expected \(5,\)"),
        ("agg", _set("W0", np.zeros((9, 8))), r": W0 has shape \(9, 8\); expected \(5, n\)"),
        ("agg", _set("Wpi", [["a", "b"]]), r": weight array 'Wpi' must hold real numbers"),
        ("agg", _set("W9", np.zeros(2)), r": unexpected weight arrays \['W9'\]"),
        ("agg", _nan_at("W1", (3, 2)), r": weight array 'W1' has a non-finite value nan at "
                                       r"index \(3, 2\)"),
        ("seq", _drop("rWh"), r": missing weight arrays \['rWh'\]"),
        ("seq", _set("rWh", np.zeros((4, 3))), r": rWh has shape \(4, 3\); expected \(4, 4\)"),
        ("seq", _nan_at("rb", 1), r": weight array 'rb' has a non-finite value nan"),
        ("agg", _meta("lam", float("nan")), r": field 'lam' must be a finite number >= 0"),
        ("agg", _meta("lam", "0.1"), r": field 'lam' must be a finite number >= 0; got '0.1'"),
        ("agg", _meta("token_scale", 0), r": field 'token_scale' must be a finite number > 0"),
        ("agg", _meta("kind", "deep"), r": field 'kind' must be one of \['agg', 'seq'\]"),
    ],
)
def test_rl_router_file_checked_on_load(tmp_path, kind, edit, match):
    from trim_pomdp.rl.agents import RLRouter

    path = tmp_path / "r.npz"
    _router(kind).save(path)
    RLRouter.load(path)  # the untouched file loads
    _rewrite(path, edit)
    with pytest.raises(PolicyFormatError, match="^" + str(path).replace(".", r"\.") + match):
        RLRouter.load(path)


def test_rl_router_truncated_or_non_object_meta(tmp_path):
    from trim_pomdp.rl.agents import RLRouter

    path = tmp_path / "r.npz"
    _router("agg").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyFormatError, match=r"r\.npz: cannot read trim_pomdp RL router file "
                                                r"\(truncated or corrupt\?\): BadZipFile"):
        RLRouter.load(path)
    with zipfile.ZipFile(path, "w") as z:
        with z.open("__meta__.npy", "w") as f:
            np.save(f, np.array("[1, 2]"))
    with pytest.raises(PolicyFormatError,
                       match=r"r\.npz: '__meta__' must be a JSON object; got a JSON array$"):
        RLRouter.load(path)


def test_rl_bank_checked_on_load_naming_the_router(tmp_path):
    from trim_pomdp.banks import load_bank
    from trim_pomdp.rl.grid import RLRouterBank

    routers = [_router("agg") for _ in range(2)]
    routers[1].lam = 2e-3
    path = tmp_path / "bank.npz"
    RLRouterBank(routers).save(path)
    assert load_bank(path).lambdas == [1e-3, 2e-3]
    _rewrite(path, _nan_at("1/Wv", (0, 0)))
    with pytest.raises(PolicyFormatError, match=r"bank\.npz: router 1: weight array 'Wv' has a "
                                                r"non-finite value nan"):
        RLRouterBank.load(path)
    RLRouterBank(routers).save(path)
    _rewrite(path, _set("7/W0", np.zeros((5, 8))))
    with pytest.raises(PolicyFormatError, match=r"arrays \['7/W0'\] belong to no router"):
        RLRouterBank.load(path)

    def nan_lambda(meta, arrays):
        meta["routers"][0]["lam"] = float("nan")
        return meta

    RLRouterBank(routers).save(path)
    _rewrite(path, nan_lambda)
    with pytest.raises(PolicyFormatError, match=r"router 0: field 'lam' must be a finite"):
        RLRouterBank.load(path)
    routers[0].lam = float("nan")
    with pytest.raises(PolicyFormatError, match=r"every router's lambda must be finite"):
        RLRouterBank(routers)


def test_policy_bank_rejects_non_finite_lambdas():
    from trim_pomdp.routing.bank import PolicyBank, solve_grid
    from trim_pomdp.routing.model import TrimModel

    model = TrimModel.from_parameters(p_w=0.8, p_s=0.9, hazard=[0.25, 1.0],
                                      obs_matrix=((0.5, 0.5), (0.5, 0.5), (0.5, 0.5)),
                                      strong_tokens=[1.0])
    bank = solve_grid(model, [1e-3, 1e-1])
    for bad in (float("nan"), float("inf")):
        policies = [bank[0], dataclasses.replace(bank[1], lam=bad)]
        with pytest.raises(PolicyFormatError, match=r"policy 1 of the PolicyBank has lambda "
                                                    rf"{bad}; every lambda must be finite"):
            PolicyBank(model, policies)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_out_of_memory_in_the_solver_is_one_typed_line(tmp_path):
    # 4000 states: 122 MB of T parse within the 300 MB of address space left; the solver's
    # dense copy and 183 MB of sparse rows do not (its 4096 MB limit would allow them).
    path = tmp_path / "mid.pomdp"
    path.write_text("discount: 0.95\nstates: 4000\nactions: 1\nobservations: 1\n"
                    "T: * uniform\nO: * uniform\n")
    proc = subprocess.run([sys.executable, "-c", _OOM, "solve", str(path), "--json",
                           "--threads", "1"],  # few thread stacks under the limit
                          capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("trim-pomdp solve: error: out of memory in the solver "
                           "(std::bad_alloc) below max_memory_mb=4096"), line
