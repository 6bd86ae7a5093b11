"""Serving benchmarks (issue 6).

1. Router overhead per step: everything the runner does per step except waiting for models —
   the router's filter + decision, the trace bookkeeping, the asyncio plumbing — measured by
   running episodes against in-memory models that answer instantly; compared with a 50 ms model
   call (target: < 1 %, i.e. < 500 us per step).  Three routers: TRIM-Thr, the project's
   TRIM-POMDP ``trim_pomdp.router.Router`` (Numba Bayes filter + alpha lookup) on a solved
   TRIM-sized model (3 token bins, 4 x 3 observation bins, 30 steps), and a plain-NumPy
   belief-tracking alpha-vector router for comparison.
2. 64 concurrent episodes over HTTP against the fake server (separate process, fixed
   latencies); wall time vs the ideal = the latency sum of one episode (all episodes are
   identical and fully concurrent).  Target: within 20 % of ideal.  Run with each HTTP client
   (aiohttp, the default, and httpx) at three latency profiles.

Run:  python benchmarks/bench_serving.py [--json out.json]
or:   python -m pytest benchmarks/bench_serving.py --benchmark-only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trim_pomdp.routing.baselines import ThresholdPolicy
from trim_pomdp.serving import (  # noqa: E402
    CompletionModel,
    EndpointConfig,
    GeneratedStep,
    Problem,
    VLLMPRMScorer,
    run_batch,
    run_episode,
)

# ---- in-memory models (no I/O) ---------------------------------------------------------------


class InstantModel:
    def __init__(self, name: str, n_steps: int) -> None:
        self.name = name
        self.n_steps = n_steps

    async def generate_step(self, problem, steps):
        k = len(steps)
        final = k + 1 >= self.n_steps
        text = f"step {k + 1} \\boxed{{1}}" if final else f"step {k + 1} of the solution"
        return GeneratedStep(text=text, tokens=40, is_final=final, finish_reason="stop",
                             latency_s=0.0)

    async def aclose(self):
        return None


class InstantPRM:
    name = "prm"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    async def score(self, problem, steps):
        return [float(x) for x in self.rng.uniform(0.0, 1.0, size=len(steps))]

    async def aclose(self):
        return None


class AlphaRouter:
    """Belief-tracking router: Bayes filter over S0/S1/S2 + argmax over alpha vectors."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.T = np.empty((2, 3, 3))
        self.T[0] = [[0.85, 0.0, 0.15], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
        self.T[1] = [[0.8, 0.08, 0.12], [0.0, 1.0, 0.0], [0.8, 0.08, 0.12]]
        self.edges = np.linspace(0, 1, 11)[1:-1]
        self.Z = rng.dirichlet(np.ones(10), size=3)  # P(score bin | state)
        self.alphas = rng.normal(size=(64, 3))
        self.actions = rng.integers(0, 2, size=64)
        self.belief = np.empty(3)
        self._tmp = np.empty(3)

    def reset(self):
        self.belief[:] = (1.0, 0.0, 0.0)
        self.last = -1

    def step(self, prm_score, tokens, is_final):
        b = self.belief
        if self.last >= 0:
            np.dot(b, self.T[self.last], out=self._tmp)
            b[:] = self._tmp
        o = int(np.searchsorted(self.edges, prm_score))
        b *= self.Z[:, o]
        b /= b.sum()
        self.last = int(self.actions[int(np.argmax(self.alphas @ b))])
        return "regenerate" if self.last == 1 else "continue"

    def executed(self, action):
        self.last = 1 if action == "regenerate" else 0


async def _episodes(router_factory, n_episodes: int, n_steps: int) -> tuple[float, int, float]:
    cheap, strong, prm = InstantModel("c", n_steps), InstantModel("s", n_steps), InstantPRM()
    steps = 0
    router_s = 0.0
    t0 = time.perf_counter()
    for i in range(n_episodes):
        r = await run_episode(Problem(str(i), "p"), router_factory(), cheap, strong, prm, 30)
        steps += len(r.steps)
        router_s += r.router_s
    return time.perf_counter() - t0, steps, router_s


def pomdp_router():
    """The project's TRIM-POMDP Router (Numba filter) on a solved TRIM-sized model."""
    from trim_pomdp.routing.bank import solve_grid
    from trim_pomdp.routing.model import TrimModel
    from trim_pomdp.routing.router import Router

    rng = np.random.default_rng(0)
    obs = rng.dirichlet(np.ones(12), size=3)  # 4 score bins x 3 min-previous-score bins
    model = TrimModel.from_parameters(
        p_w=0.87, p_s=0.93, hazard=np.linspace(0.02, 0.4, 30), obs_matrix=obs,
        score_edges=[0.2, 0.5, 0.8], min_edges=[0.3, 0.6], token_probs=[0.3, 0.4, 0.3],
        strong_tokens=[20.0, 45.0, 90.0], token_edges=[25.0, 60.0])
    return Router(solve_grid(model, [1e-3])[0])


def router_overhead(n_episodes: int = 400, n_steps: int = 20, repeats: int = 5) -> dict:
    out = {}
    for name, factory in (("threshold", lambda: ThresholdPolicy(0.3)),
                          ("pomdp_router", "pomdp"),
                          ("alpha_vector_numpy", "alpha")):
        if isinstance(factory, str):
            # reset() per episode: one object is enough, built once (not timed)
            shared = pomdp_router() if factory == "pomdp" else AlphaRouter()
            factory = lambda shared=shared: shared  # noqa: E731
        per_step, router_only = [], []
        for _ in range(repeats):
            wall, steps, rs = asyncio.run(_episodes(factory, n_episodes, n_steps))
            per_step.append(wall / steps)
            router_only.append(rs / steps)
        med = statistics.median(per_step)
        out[name] = {
            "per_step_us_median": med * 1e6,
            "router_step_us_median": statistics.median(router_only) * 1e6,
            "fraction_of_50ms_call": med / 0.050,
            "steps_per_repeat": steps,
        }
    return out


# ---- 64 concurrent episodes over HTTP ----------------------------------------------------------


class EveryThirdRouter(ThresholdPolicy):
    """Regenerates steps 3 and 6 (deterministic, so every episode has the same latency sum)."""

    def __init__(self):
        super().__init__(0.0)

    def reset(self):
        super().reset()
        self.n = 0

    def step(self, prm_score, tokens, is_final):
        super().step(prm_score, tokens, is_final)
        self.n += 1
        return "regenerate" if self.n in (3, 6) else "continue"


def start_server(latency: dict[str, float], n_steps: int) -> tuple[subprocess.Popen, int]:
    args = [sys.executable, str(REPO / "tests" / "fake_server.py"), "--n-steps", str(n_steps)]
    for k, v in latency.items():
        args += ["--latency", f"{k}={v}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)  # noqa: S603
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, int(line.split()[1])


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a child process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def concurrent_episodes(n_episodes: int = 64, n_steps: int = 8, l_cheap: float = 0.2,
                        l_prm: float = 0.05, l_strong: float = 0.4, repeats: int = 3,
                        http_client: str = "aiohttp") -> dict:
    """``repeats`` rounds; each round builds new endpoint objects and runs the 64 episodes
    twice: first with fresh connection pools (every episode's first request opens its TCP
    connections: 3 x 64 connects), then again on the pools the first run left open, as they
    are during a long batch.  Each run has its own problem ids, so nothing is skipped."""
    latency = {"completions:cheap": l_cheap, "completions:strong": l_strong, "pooling": l_prm}
    from trim_pomdp.serving.http import _import_client

    _import_client(http_client)  # the library's import is a one-off, not part of a run
    proc, port = start_server(latency, n_steps)
    cpu_client = 0.0
    n_requests = 0
    n_runs = 0
    try:
        ideal = n_steps * (l_cheap + l_prm) + 2 * l_strong
        fresh, warm = [], []

        def cfg(m):
            return EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model=m,
                                  max_connections=2 * n_episodes, http_client=http_client)

        async def round_(k: int) -> None:
            nonlocal cpu_client, n_requests, n_runs
            cheap, strong = CompletionModel(cfg("cheap")), CompletionModel(cfg("strong"))
            prm = VLLMPRMScorer(cfg("prm"))
            for walls in (fresh, warm):
                c0 = time.process_time()
                problems = [Problem(f"q{i}-{k}-{len(walls)}", f"Problem {i} of run {k}?")
                            for i in range(n_episodes)]
                s = await run_batch(problems, EveryThirdRouter, cheap, strong, prm,
                                    concurrency=n_episodes, progress=False, close=False)
                assert s.n_done == n_episodes and s.max_in_flight == n_episodes
                assert all(r.n_regenerations == 2 and len(r.steps) == n_steps
                           for r in s.results)
                walls.append(s.wall_s)
                cpu_client += time.process_time() - c0
                n_runs += 1
            n_requests += sum(t.transport.stats.requests for t in (cheap, strong, prm))
            for t in (cheap, strong, prm):
                await t.aclose()

        for k in range(repeats):
            asyncio.run(round_(k))
        med_fresh, med_warm = statistics.median(fresh), statistics.median(warm)
        return {
            "http_client": http_client,
            "episodes": n_episodes,
            "steps_per_episode": n_steps,
            "latency_s": latency,
            "ideal_s": ideal,
            "wall_s_fresh_pools": fresh,
            "wall_s_warm_pools": warm,
            "ratio_to_ideal_fresh_pools": med_fresh / ideal,
            "ratio_to_ideal_warm_pools": med_warm / ideal,
            # the headline: the worse of the two
            "ratio_to_ideal": max(med_fresh, med_warm) / ideal,
            "requests_per_run": n_requests // n_runs,
            # client CPU per request (HTTP library + runner): the part of the gap to the ideal
            # that scales with machine load; on a 2-core box shared with other jobs it dominates
            "client_cpu_ms_per_request": 1e3 * cpu_client / max(n_requests, 1),
            "server_cpu_ms_per_request": 1e3 * _proc_cpu_s(proc.pid) / max(n_requests, 1),
            "load_average_1min": os.getloadavg()[0],
        }
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


# ---- the HTTP clients alone (no runner) --------------------------------------------------------


async def _bare_posts(http_client: str, url: str, payload: dict, n_clients: int,
                      n_requests: int, warmup: int = 0) -> tuple[float, float]:
    """``n_clients`` coroutines, each POSTing ``n_requests`` times in sequence on a shared
    keep-alive pool and decoding the JSON body: the client library's work and nothing else.
    ``warmup`` requests per client first, on the same pool (not measured).  Returns the
    measured part's (wall seconds, CPU seconds)."""
    if http_client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * n_clients))

        async def one(_i: int, n: int) -> None:
            for _ in range(n):
                async with session.post(url, json=payload) as r:
                    await r.json()

        async def close() -> None:
            await session.close()
    else:
        import httpx

        # sharded pools of 8, as JsonTransport uses httpx (encode/httpcore#1035)
        clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=8,
                                                         max_keepalive_connections=8))
                   for _ in range(-(-n_clients // 8))]

        async def one(i: int, n: int) -> None:
            for _ in range(n):
                (await clients[i % len(clients)].post(url, json=payload)).json()

        async def close() -> None:
            for c in clients:
                await c.aclose()

    try:
        if warmup:
            await asyncio.gather(*[one(i, warmup) for i in range(n_clients)])
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*[one(i, n_requests) for i in range(n_clients)])
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        await close()


def client_floor(n_clients: int = 64) -> dict:
    """What the HTTP library alone costs, without the runner, against the same fake server:

    * CPU per request, 64 clients x 20 sequential POSTs each at zero latency (after 2 warm-up
      requests per client that open the connections);
    * the lockstep floor: 64 clients x 18 sequential POSTs at 50 ms each on warm connections,
      as wall time / the 0.9 s ideal: what the 64-episode run at 50 ms could reach on warm
      pools with a runner that cost nothing (median of 3).
    """
    payload = {"model": "cheap", "prompt": "<|im_start|>user\nProblem 1?<|im_end|>\n"
               "<|im_start|>assistant\nstep one\n\n", "max_tokens": 1024,
               "temperature": 0.0, "stop": ["\n\n"]}
    out: dict = {}
    for latency in (0.0, 0.05):
        proc, port = start_server({"completions": latency}, 8)
        url = f"http://127.0.0.1:{port}/v1/completions"
        try:
            for client in ("aiohttp", "httpx"):
                if latency == 0.0:
                    _, cpu = asyncio.run(_bare_posts(client, url, payload, n_clients, 20,
                                                     warmup=2))
                    out[f"{client}_cpu_ms_per_request"] = 1e3 * cpu / (n_clients * 20)
                elif client == "aiohttp":
                    ratios = []
                    for _ in range(3):
                        wall, _ = asyncio.run(_bare_posts(client, url, payload, n_clients, 18,
                                                          warmup=1))
                        ratios.append(wall / (18 * latency))
                    out["aiohttp_lockstep_50ms_ratio_runs"] = ratios
                    out["aiohttp_lockstep_50ms_ratio"] = statistics.median(ratios)
        finally:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
    return out


# ---- pytest-benchmark entry points -------------------------------------------------------------


def test_router_overhead(benchmark):
    res = benchmark.pedantic(router_overhead, kwargs={"n_episodes": 100, "repeats": 3},
                             rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    assert res["pomdp_router"]["fraction_of_50ms_call"] < 0.01


@pytest.mark.parametrize("latency", [(0.2, 0.05, 0.4), (0.05, 0.05, 0.05)],
                         ids=["0.2-0.05-0.4s", "50ms"])
def test_concurrent_64(benchmark, latency):
    l_cheap, l_prm, l_strong = latency
    res = benchmark.pedantic(concurrent_episodes, rounds=1, iterations=1,
                             kwargs=dict(l_cheap=l_cheap, l_prm=l_prm, l_strong=l_strong))
    benchmark.extra_info.update(res)
    if l_cheap >= 0.2:
        # the target, at model-like latencies
        assert res["ratio_to_ideal"] < 1.2
    # at 50 ms per call the ratio is reported, not asserted: it sits at the 1.2 boundary
    # (1.13-1.22 on the quiet 2-core machine; docs/readme_http.md says why)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--latency-cheap", type=float, default=0.2)
    ap.add_argument("--latency-prm", type=float, default=0.05)
    ap.add_argument("--latency-strong", type=float, default=0.4)
    ap.add_argument("--http-clients", default="aiohttp,httpx",
                    help="comma-separated HTTP clients to run the concurrency test with")
    ap.add_argument("--skip-overhead", action="store_true", help="only the concurrency test")
    ap.add_argument("--skip-many", action="store_true", help="skip the 512-episode run")
    args = ap.parse_args(argv)
    res = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_average_1min_at_start": os.getloadavg()[0]},
    }
    if not args.skip_overhead:
        res["router_overhead"] = router_overhead()
        res["client_floor"] = client_floor()
    for client in args.http_clients.split(","):
        res[f"concurrent_{client}"] = concurrent_episodes(
            l_cheap=args.latency_cheap, l_prm=args.latency_prm, l_strong=args.latency_strong,
            http_client=client)
        res[f"concurrent_50ms_{client}"] = concurrent_episodes(
            l_cheap=0.05, l_prm=0.05, l_strong=0.05, http_client=client)
        res[f"concurrent_slow_{client}"] = concurrent_episodes(
            l_cheap=1.0, l_prm=0.25, l_strong=2.0, repeats=1, http_client=client)
    if not args.skip_many:
        # 512 episodes in flight: ~3,300 requests/s, where this machine's two cores (one
        # event loop for the client, one for the fake server) are the limit
        res["concurrent_512_aiohttp"] = concurrent_episodes(
            n_episodes=512, l_cheap=args.latency_cheap, l_prm=args.latency_prm,
            l_strong=args.latency_strong, repeats=1)
    print(json.dumps(res, indent=2))
    if "client_floor" in res:
        f = res["client_floor"]
        print(f"\nHTTP library alone: aiohttp {f['aiohttp_cpu_ms_per_request']:.2f} ms, httpx "
              f"{f['httpx_cpu_ms_per_request']:.2f} ms CPU per request; aiohttp lockstep at "
              f"50 ms {f['aiohttp_lockstep_50ms_ratio']:.3f} of ideal", file=sys.stderr)
    print("\nratio to ideal (fresh pools / warm pools), client CPU per request:",
          file=sys.stderr)
    for key, r in res.items():
        if isinstance(r, dict) and "ratio_to_ideal" in r:
            ls = r["latency_s"]
            lat = "/".join(f"{ls[k]:g}" for k in ("completions:cheap", "pooling",
                                                     "completions:strong"))
            print(f"  {key:32s} {r['episodes']:4d} ep  {lat:>14s} s  "
                  f"{r['ratio_to_ideal_fresh_pools']:.3f} / {r['ratio_to_ideal_warm_pools']:.3f}"
                  f"  {r['client_cpu_ms_per_request']:.2f} ms", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
