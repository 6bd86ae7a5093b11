"""Monte Carlo simulation of a model held as compressed rows (issue 17).

``simulate`` draws successors and observations from compressed rows (``row_cumsum`` +
``sample_row``) whichever way the model is stored, and never builds the dense ``T``:

* the row sampler against a NumPy reference (dense ``np.cumsum`` + ``searchsorted``, the
  rule of the dense ``_sample``) on rows with zeros at the ends and in the middle, for
  random uniforms and the uniforms that hit a cumulative sum exactly;
* a whole-episode NumPy reference (dense ``T``/``Z`` cumulative sums, the same uniforms)
  against the compiled returns, bit for bit;
* the same model held densely and sparsely: identical returns, compiled and Python-policy
  paths, on random models and the shared classics;
* a sparse model with ``DENSE_VIEW_MAX_MB`` below its dense ``T`` simulates (so ``T`` is never
  made dense) and a too-large dense ``Z`` is a ``MemoryLimitError``; the CLI on a generated
  RockSample[7,8] (16 GB dense ``T``) runs in well under 1 GiB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from brute_force import random_pomdp
from conftest import REPO, shared_path

from trim_pomdp.engine import model as model_mod
from trim_pomdp.engine.belief import update_belief_numpy
from trim_pomdp.engine.model import POMDP
from trim_pomdp.engine.montecarlo import _sample, row_cumsum, sample_row, simulate
from trim_pomdp.engine.policy import AlphaVectorPolicy
from trim_pomdp.errors import MemoryLimitError, ModelValidationError


def _gen():
    spec = importlib.util.spec_from_file_location("gen_pomdp", REPO / "benchmarks" / "gen_pomdp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(dense: np.ndarray):
    """(indptr, indices, data) of a 2-d array's non-zero entries, row by row."""
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.count_nonzero(dense, axis=1))
    r, c = np.nonzero(dense)
    return indptr, c.astype(np.int64), dense[r, c].copy()


def _reference_choice(row: np.ndarray, u: float) -> int:
    """First column whose dense cumulative mass exceeds ``u * total`` (NumPy)."""
    cum = np.cumsum(row)
    return int(np.searchsorted(cum, u * cum[-1], side="right"))


def test_row_sampler_matches_the_dense_cumulative_sums():
    rng = np.random.default_rng(17)
    rows = [
        np.array([0.0, 0.0, 0.3, 0.0, 0.7, 0.0]),  # zeros before, between and after
        np.array([1.0, 0.0, 0.0]),
        np.array([0.0, 0.0, 1.0]),
        np.array([0.1] * 10),  # sums to 0.9999999999999999, not 1
        np.array([0.25, 0.0, 0.25, 0.0, 0.25, 0.25]),
    ]
    for _ in range(40):
        x = rng.random(int(rng.integers(1, 30)))
        x[rng.random(x.size) < 0.5] = 0.0
        if not x.any():
            x[int(rng.integers(x.size))] = 1.0
        rows.append(x / x.sum())
    dense = np.zeros((len(rows), max(r.size for r in rows)))
    for i, r in enumerate(rows):
        dense[i, : r.size] = r
    indptr, indices, data = _rows(dense)
    cum = np.empty_like(data)
    row_cumsum(indptr, data, cum)
    n_checked = 0
    for i, r in enumerate(rows):
        lo, hi = int(indptr[i]), int(indptr[i + 1])
        dense_cum = np.cumsum(r)
        # the stored cumulative sums are the dense ones at the stored columns, bit for bit
        np.testing.assert_array_equal(cum[lo:hi], dense_cum[indices[lo:hi]])
        # uniforms: random, the extremes, and those landing exactly on a cumulative sum
        us = [*rng.random(200), 0.0, 1.0 - 2.0**-53, 0.5]
        us += [c / dense_cum[-1] for c in dense_cum]
        us += [np.nextafter(c / dense_cum[-1], 0.0) for c in dense_cum]
        for u in us:
            if not 0.0 <= u < 1.0:
                continue
            want = _reference_choice(r, u)
            assert r[want] > 0.0, (i, u)  # a zero-probability entry is never chosen
            assert sample_row(cum, indices, lo, hi, u) == want, (i, u)
            assert _sample(dense_cum, u) == want, (i, u)  # the dense sampler's rule
            n_checked += 1
    assert n_checked > 10_000


def _reference_returns(m, pol: AlphaVectorPolicy, episodes: int, horizon: int, seed: int):
    """Plain-NumPy simulate(): dense cumulative sums, the same uniforms in the same order."""
    T, Z, R, b0 = m.T, m.Z, m.R, m.b0
    u = np.random.default_rng(seed).random(episodes * (1 + 2 * horizon))
    T_cum, Z_cum, b0_cum = np.cumsum(T, axis=2), np.cumsum(Z, axis=2), np.cumsum(b0)

    def draw(cum, x):
        return int(np.searchsorted(cum, x * cum[-1], side="right"))

    out = np.empty(episodes)
    k = 0
    for ep in range(episodes):
        b = b0.copy()
        s = draw(b0_cum, u[k])
        k += 1
        g, disc = 0.0, 1.0
        for _ in range(horizon):
            a = int(pol.actions[int(np.argmax(pol.alphas @ b))])
            g += disc * R[a, s]
            s = draw(T_cum[a, s], u[k])
            o = draw(Z_cum[a, s], u[k + 1])
            k += 2
            b = update_belief_numpy(T, Z, b, a, o)
            disc *= m.discount
        out[ep] = g
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_returns_equal_a_numpy_reference(seed):
    rng = np.random.default_rng(100 + seed)
    am = random_pomdp(rng, 7, 3, 3, discount=0.9, sparsity=0.5)
    m = POMDP(am.T, am.Z, am.R, am.discount, am.b0 / am.b0.sum())
    pol = AlphaVectorPolicy(rng.normal(size=(6, 7)), rng.integers(0, 3, size=6))
    want = _reference_returns(m, pol, 300, 12, seed)
    for model in (m, m.to_sparse()):
        got = simulate(model, pol, 300, 12, seed).returns
        np.testing.assert_array_equal(got, want)
    assert np.unique(want).size > 50  # the trajectories really differ


class _PythonPolicy:
    def __init__(self, pol):
        self.pol = pol

    def action(self, b):
        return self.pol.action(b)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sparse_model_gives_the_dense_returns_random(seed):
    rng = np.random.default_rng(seed)
    am = random_pomdp(rng, 9, 3, 4, discount=0.95, sparsity=0.6)
    dense = POMDP(am.T, am.Z, am.R, am.discount, am.b0 / am.b0.sum())
    sparse = dense.to_sparse()
    assert sparse.storage == "sparse" and dense.storage == "dense"
    pol = AlphaVectorPolicy(rng.normal(size=(5, 9)), rng.integers(0, 3, size=5))
    a = simulate(dense, pol, 2000, 40, seed)
    b = simulate(sparse, pol, 2000, 40, seed)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert (a.mean, a.stderr) == (b.mean, b.stderr) and a.stderr > 0
    # the Python-policy path takes the same draws from the same rows
    c = simulate(sparse, _PythonPolicy(pol), 200, 40, seed)
    np.testing.assert_array_equal(c.returns, a.returns[:200])


@pytest.mark.parametrize("name", ["tiger.95.POMDP", "4x4.95.POMDP", "RockSample_4_4.pomdp",
                                  "hallway.POMDP", "network.POMDP"])
def test_sparse_model_gives_the_dense_returns_shared(name):
    path = shared_path("pomdp", "problems", name)
    dense = POMDP.from_file(path, storage="dense")
    sparse = POMDP.from_file(path, storage="sparse")
    # one vector per action (its immediate rewards): a belief-dependent policy for any file
    pol = AlphaVectorPolicy(dense.R, np.arange(dense.n_actions))
    a = simulate(dense, pol, 1000, 60, 3)
    b = simulate(sparse, pol, 1000, 60, 3)
    np.testing.assert_array_equal(a.returns, b.returns)
    c = simulate(sparse, _PythonPolicy(pol), 50, 60, 3)
    np.testing.assert_array_equal(c.returns, a.returns[:50])


def _east_and_sample(m, rocks):
    """RockSample policy: sample at a rock not yet sampled, else move east (to the exit).

    ``sample``'s vector is +1 where the robot stands on a good rock, -0.5 on a bad one and -1
    elsewhere, ``east``'s is 0: on a rock with P(good) = 1/2 sampling is worth 0.25, after
    it (the rock turns bad) -0.5.  Returns vary with the sampled rocks' hidden states."""
    k = len(rocks)
    rock_at = {c: i for i, c in enumerate(rocks)}
    sample = np.full(m.n_states, -1.0)
    for j, name in enumerate(m.state_names):
        if name == "st":
            continue
        x, y, bits = int(name[1]), int(name[2]), name[3:]  # n <= 10: one digit a coordinate
        assert len(bits) == k
        i = rock_at.get((x, y))
        if i is not None:
            sample[j] = 1.0 if bits[i] == "1" else -0.5
    acts = [m.action_names.index("ame"), m.action_names.index("as")]
    return AlphaVectorPolicy(np.stack([np.zeros(m.n_states), sample]), acts)


def _rocksample_55():
    return _gen().rocksample(5, 5, layout="random", seed=1)


def test_sparse_model_simulates_without_its_dense_T(monkeypatch):
    # RockSample[5,5]: dense T 10 x 801 x 801 doubles = 48.9 MiB, dense Z 0.18 MiB.  With
    # the dense-view limit at 1 MiB, building T densely raises, so a run that succeeds
    # never built it.
    text = _rocksample_55()
    dense = POMDP.from_string(text, "rs55", storage="dense")
    sparse = POMDP.from_string(text, "rs55", storage="sparse")
    pol = _east_and_sample(dense, _gen().rocksample_layout(5, 5, "random", seed=1)[1])
    want = simulate(dense, pol, 300, 50, 9)
    monkeypatch.setattr(model_mod, "DENSE_VIEW_MAX_MB", 1.0)
    with pytest.raises(MemoryLimitError, match="a dense T of shape"):
        sparse.T  # noqa: B018
    got = simulate(sparse, pol, 300, 50, 9)
    np.testing.assert_array_equal(got.returns, want.returns)
    assert np.unique(got.returns).size == 4  # two rocks on the start row: 4 outcomes
    py = simulate(sparse, _PythonPolicy(pol), 20, 50, 9)
    np.testing.assert_array_equal(py.returns, want.returns[:20])


def test_dense_Z_too_large_is_a_memory_limit_error(monkeypatch):
    sparse = POMDP.from_string(_rocksample_55(), "rs55", storage="sparse")
    pol = AlphaVectorPolicy(sparse.R, np.arange(sparse.n_actions))
    monkeypatch.setattr(model_mod, "DENSE_VIEW_MAX_MB", 0.1)
    with pytest.raises(MemoryLimitError, match=r"simulate filters beliefs with a dense Z: this "
                       r"sparse model's Z of shape \(10, 801, 3\) would take 0\.2 MB, above "
                       r"DENSE_VIEW_MAX_MB=0\.1"):
        simulate(sparse, pol, 10, 5, 0)


def test_a_row_without_entries_is_a_model_error():
    am = random_pomdp(np.random.default_rng(0), 3, 2, 2)
    am.T[1, 2, :] = 0.0
    pol = AlphaVectorPolicy(np.zeros((1, 3)), [0])
    with pytest.raises(ModelValidationError, match=r"T\[a=1, s=2, :\] has no non-zero entry "
                                                   r"\(1 such rows\)"):
        simulate(am, pol, 10, 5, 0)
    am = random_pomdp(np.random.default_rng(0), 3, 2, 2)
    am.Z[0, 1, :] = 0.0
    with pytest.raises(ModelValidationError, match=r"Z\[a=0, s'=1, :\] has no non-zero entry"):
        simulate(am, pol, 10, 5, 0)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_cli_simulates_a_rocksample_7_8(tmp_path):
    # RockSample[7,8]: 12,545 states, 13 actions; its dense T would take 16 GB, so the file
    # is read sparsely and must be simulated from its rows.
    problem = tmp_path / "rs78.pomdp"
    problem.write_text(_gen().rocksample(7, 8))
    m = POMDP.from_file(problem)
    assert (m.storage, m.n_states, m.n_actions) == ("sparse", 12545, 13)
    pol = _east_and_sample(m, _gen().rocksample_layout(7, 8)[1])  # rock 3 on its way east
    pol.save(tmp_path / "pol.npz")
    want = simulate(m, pol, 40, 30, 5, keep_returns=False)
    code = (
        "import sys\n"
        "from trim_pomdp.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('maxrss_kib', hwm, flush=True)\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", code, "simulate", str(problem), str(tmp_path / "pol.npz"),
         "--episodes", "40", "--horizon", "30", "--seed", "5", "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    out = json.loads(lines[0])
    assert (out["episodes"], out["horizon"]) == (40, 30)
    assert out["mean"] == want.mean and out["stderr"] == want.stderr > 0
    assert int(lines[1].split()[1]) < 1024 * 1024  # KiB: far below the 16 GB dense T


def test_cli_dense_Z_too_large_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from trim_pomdp.cli import main

    problem = tmp_path / "rs55.pomdp"
    problem.write_text(_rocksample_55())
    m = POMDP.from_file(problem, storage="sparse")
    _east_and_sample(m, _gen().rocksample_layout(5, 5, "random", seed=1)[1]).save(
        tmp_path / "pol.npz")
    # below the dense T (48.9 MiB) the file is read sparsely; below Z (0.18 MiB) it cannot
    # be filtered
    monkeypatch.setattr(model_mod, "DENSE_MAX_MB", 1.0)
    monkeypatch.setattr(model_mod, "DENSE_VIEW_MAX_MB", 0.1)
    rc = main(["simulate", str(problem), str(tmp_path / "pol.npz"), "--episodes", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("trim-pomdp simulate: error: simulate filters beliefs with a "
                             "dense Z: this sparse model's Z of shape (10, 801, 3)"), err
