"""Benchmark of the finite-horizon MOMDP solver on a TRIM-sized synthetic model.

The model follows the TrimModel transition rules of the spec (piece `router`): hidden states
S0 (all correct so far, draft included), S1 (an earlier step wrong), S2 (the current draft
wrong); actions 0 = continue, 1 = regenerate; observed x = start | (is_final, token bin) |
terminal; epoch 0 is the free "start" epoch that produces the first draft; epochs 1..30 are
the steps, H = 31.  Targets (issue 4): one lambda in <= 50 ms, a 32-lambda grid in <= 1 s on
2 cores.

``test_bench_default_model_grid_32``: the default scenario's model with the score-bin count
chosen by solved value and the default lambda grid (issue 15).

Run:
    python -m pytest benchmarks/bench_finite.py --benchmark-only -q
    python benchmarks/bench_finite.py            # prints a JSON summary (median of 5 runs)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trim_pomdp.engine.finite import FiniteHorizonPOMDP, solve_finite, solve_finite_many

MAX_STEPS = 30
LAMBDAS = np.linspace(0.0, 0.01, 32)


def trim_like_model(
    lam: float,
    *,
    n_token_bins: int = 4,
    n_obs: int = 20,
    p_w: float = 0.95,
    p_s: float = 0.97,
    seed: int = 0,
) -> FiniteHorizonPOMDP:
    """A synthetic TRIM POMDP: X = 2 * n_token_bins + 2, S = 3, A = 2, H = 31.

    Observation matrix: PRM score bins from Beta-shaped histograms per hidden state (S0 high,
    S1 low, S2 lowish); hazard rising over the steps; token bins equally likely, expected
    strong tokens growing with the bin.
    """
    rng = np.random.default_rng(seed)
    K, O, S, A = n_token_bins, n_obs, 3, 2  # noqa: E741 (O: observations, as in the maths)
    X = 2 * K + 2
    START, TERM = 0, X - 1
    H = MAX_STEPS + 1

    def draft(final: int, k: int) -> int:
        return 1 + final * K + k

    centers = (np.arange(O) + 0.5) / O
    obs = np.empty((S, O))
    for s, (a, b) in enumerate([(6.0, 1.5), (1.5, 4.0), (2.0, 3.0)]):
        dens = centers ** (a - 1) * (1 - centers) ** (b - 1)
        obs[s] = dens / dens.sum()
    hazard = np.clip(0.02 + 0.01 * np.arange(1, MAX_STEPS + 1) + 0.01 * rng.random(MAX_STEPS), 0, 1)
    hazard[-1] = 1.0  # hazard[t-1] = P(step t is final)
    q_tok = np.full(K, 1.0 / K)
    strong_tokens = 30.0 * (1.0 + np.arange(K)) ** 1.2

    # next draft's hidden state given the state after this step's outcome
    T = np.zeros((H, A, X, S, X, S))
    good_next = np.array([p_w, 0.0, 1.0 - p_w])  # from a correct prefix: S0 or S2
    for t in range(H):
        h_next = hazard[t] if t < MAX_STEPS else 1.0  # draft at step t+1 is final w.p. h(t+1)
        xs_next = [(draft(1, k), h_next * q_tok[k]) for k in range(K)]
        xs_next += [(draft(0, k), (1.0 - h_next) * q_tok[k]) for k in range(K)]
        for a in range(A):
            for x in range(X):
                for s in range(S):
                    if x == TERM or (x != START and x >= draft(1, 0) and x < TERM) or t == H - 1:
                        T[t, a, x, s, TERM, s] = 1.0  # ends (final draft, terminal, last epoch)
                        continue
                    if x == START:
                        nxt = good_next
                    elif a == 0:  # continue a non-final draft
                        nxt = good_next if s == 0 else np.array([0.0, 1.0, 0.0])
                    else:  # regenerate: strong step right w.p. p_s unless already S1
                        nxt = (
                            p_s * good_next + (1 - p_s) * np.array([0.0, 1.0, 0.0])
                            if s != 1
                            else np.array([0.0, 1.0, 0.0])
                        )
                    for xp, px in xs_next:
                        T[t, a, x, s, xp, :] += px * nxt
    Z = np.zeros((A, X, S, O))
    Z[:, :, :, 0] = 1.0
    for final in (0, 1):
        for k in range(K):
            Z[:, draft(final, k)] = obs
    R = np.zeros((A, X, S))
    for k in range(K):
        for final in (0, 1):
            R[1, draft(final, k), :] = -lam * strong_tokens[k]
        R[0, draft(1, k), 0] += 1.0  # continue on a final correct draft
        R[1, draft(1, k), [0, 2]] += p_s  # regenerate the final step: right w.p. p_s
    b0 = np.zeros((X, S))
    b0[:, 0] = 1.0
    return FiniteHorizonPOMDP(T, Z, R, horizon=H, x0=START, b0=b0)


def _median_time(fn, repeats: int = 5) -> tuple[float, float]:
    """Median wall and CPU (process) time of `fn` over `repeats` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def test_bench_one_lambda(benchmark):
    model = trim_like_model(0.003)
    pol = benchmark(lambda: solve_finite(model))
    benchmark.extra_info.update(lower=pol.lower_bound, upper=pol.upper_bound, gap=pol.gap)
    assert pol.lower_bound <= pol.upper_bound


def test_bench_grid_32(benchmark):
    base = trim_like_model(0.0)
    models = [trim_like_model(lam) for lam in LAMBDAS]
    del base
    pols = benchmark(lambda: solve_finite_many(models, n_threads=2))
    benchmark.extra_info.update(max_gap=max(p.gap for p in pols))
    assert len(pols) == 32


def default_model_and_grid():
    """The default scenario's TRIM model with the score-bin count chosen by solved value
    (as ``trim-pomdp solve-grid --scenario default`` builds it) and the default 32-lambda
    grid (``lambda = 0`` first)."""
    from trim_pomdp.routing.bank import default_lambdas
    from trim_pomdp.routing.binning import choose_n_bins
    from trim_pomdp.routing.model import TrimModel
    from trim_pomdp.simulation.scenario import default_scenario

    sc = default_scenario()
    n = choose_n_bins(lambda k: TrimModel.from_scenario(sc, n_score_bins=k)).n_bins
    model = TrimModel.from_scenario(sc, n_score_bins=n)
    return model, default_lambdas(model, 32)


def test_bench_default_model_grid_32(benchmark):
    from trim_pomdp.routing.bank import solve_grid

    model, lams = default_model_and_grid()
    bank = benchmark(lambda: solve_grid(model, lams, n_threads=2))
    benchmark.extra_info.update(n_score_bins=model.n_score_bins)
    assert len(bank) == 32 and bank.lambdas[0] == 0.0


def main() -> None:
    model = trim_like_model(0.003)
    models = [trim_like_model(lam) for lam in LAMBDAS]
    pol = solve_finite(model)
    pols = solve_finite_many(models, n_threads=2)
    ref = solve_finite(model, grid_resolution=12, n_samples=256, n_refine=2)
    timings = {
        "one_lambda_1thread": _median_time(lambda: solve_finite(model, n_threads=1)),
        "one_lambda_2threads": _median_time(lambda: solve_finite(model, n_threads=2)),
        "grid32_2threads": _median_time(lambda: solve_finite_many(models, n_threads=2), 3),
        "grid32_1thread": _median_time(lambda: solve_finite_many(models, n_threads=1), 3),
    }
    from trim_pomdp.routing.bank import solve_grid

    dmodel, dlams = default_model_and_grid()
    timings["default_model_grid32_2threads"] = _median_time(
        lambda: solve_grid(dmodel, dlams, n_threads=2), 3)
    out = {
        "model": repr(model),
        "default_model": repr(dmodel),
        "load_average": list(__import__("os").getloadavg()),
        "wall_s": {k: v[0] for k, v in timings.items()},
        "cpu_s": {k: v[1] for k, v in timings.items()},
        "one_lambda": {
            "lower": pol.lower_bound,
            "upper": pol.upper_bound,
            "gap": pol.gap,
            "n_alpha": pol.n_alpha,
            "n_beliefs": pol.info.n_beliefs if pol.info else None,
            "reference_lower": ref.lower_bound,
            "reference_upper": ref.upper_bound,
        },
        "grid_max_gap": max(p.gap for p in pols),
        "grid_max_rel_gap": max(p.gap / max(abs(p.upper_bound), 1e-12) for p in pols),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
