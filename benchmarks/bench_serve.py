"""``trim-pomdp serve`` under load (issue 16).

Three processes: the fake cheap/strong/PRM backends (``tests/fake_server.py``, fixed
latencies), the server (``python -m trim_pomdp serve``, exactly as a user starts it) and this
load generator: ``clients`` concurrent aiohttp clients, each sending ``rounds`` chat
completions in sequence (non-streaming, then streaming).  Every request is the same 8-step
problem whose drafts 3 and 6 score 0.1, so TRIM-Thr(0.5) regenerates exactly those two steps
and every request's backend latency sum is known:

    ideal = n_steps * (l_cheap + l_prm) + 2 * l_strong

Client ``i`` starts ``i / clients`` of the ideal latency after the first (``stagger``, the
default), so the 64 requests are in flight together but arrive as independent clients do,
not all in the same millisecond; ``--lockstep`` starts them together (every step of every
request then hits the backends and the server in the same instant: the worst case, reported
too).

Reported: end-to-end latency per request (median, p95, max) over the ideal (target: within
10 %), and the server process's CPU time per routed request (from /proc, user + system) and
per upstream call.  The load generator uses bare aiohttp rather than the ``openai`` client so
that its own CPU (pydantic parsing) does not compete with the server on a small machine; the
tests drive the server with the ``openai`` client.

Run:  nice python benchmarks/bench_serve.py [--json out.json]
or:   python -m pytest benchmarks/bench_serve.py --benchmark-only
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trim_pomdp.serving.endpoints import QWEN_MATH_PROMPT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import _proc_cpu_s  # noqa: E402  (one /proc CPU reader for both benchmarks)

ASSISTANT = "<|im_start|>assistant\n"
PROBLEM = "What is the sum of the first 8 positive integers?"
REGENERATED = (3, 6)


def _synthetic_hash(problem: str) -> str:
    # tests/fake_server.py names synthetic steps by the hash of the prompt head (everything
    # before the assistant marker)
    head = QWEN_MATH_PROMPT.replace("{problem}", problem).split(ASSISTANT, 1)[0]
    return hashlib.sha1(head.encode()).hexdigest()[:8]


def _start(args: list[str], ready: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)  # noqa: S603
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"{args[1]} did not start: {line!r}")
    return proc, line


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    proc.stdout.close()


async def _load(base: str, clients: int, rounds: int, stream: bool,
                stagger_s: float = 0.0) -> list[float]:
    import aiohttp

    body = {"model": "trim", "messages": [{"role": "user", "content": PROBLEM}],
            "stream": stream}
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def client(i: int) -> None:
            await asyncio.sleep(i * stagger_s / clients)
            for _ in range(rounds):
                t0 = time.perf_counter()
                async with session.post(base + "/v1/chat/completions", json=body) as r:
                    raw = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {raw[:300]!r}")
                lat.append(time.perf_counter() - t0)
                if stream:
                    events = [e for e in raw.decode().split("\n\n") if e]
                    assert events[-1] == "data: [DONE]"
                    final = json.loads(events[-2][6:])
                else:
                    final = json.loads(raw)
                assert final["trim"]["regenerations"] == len(REGENERATED), final["trim"]

        await asyncio.gather(*(client(i) for i in range(clients)))
    return lat


def serve_load(clients: int = 64, rounds: int = 3, n_steps: int = 8, l_cheap: float = 0.2,
               l_prm: float = 0.05, l_strong: float = 0.4, stagger: bool = True) -> dict:
    h = _synthetic_hash(PROBLEM)
    fake_args = [sys.executable, str(REPO / "tests" / "fake_server.py"), "--n-steps",
                 str(n_steps), "--latency", f"completions:cheap={l_cheap}",
                 "--latency", f"completions:strong={l_strong}", "--latency", f"pooling={l_prm}"]
    for k in REGENERATED:
        fake_args += ["--score", f"[cheap] step {k} of {h}=0.1"]
    fake, line = _start(fake_args, "PORT ")
    up = f"http://127.0.0.1:{line.split()[1]}/v1"
    server = None
    try:
        server, line = _start(
            [sys.executable, "-m", "trim_pomdp", "serve", "--cheap", f"{up}/cheap",
             "--strong", f"{up}/strong", "--prm", f"{up}/prm", "--threshold", "0.5",
             "--port", "0", "--max-concurrency", str(clients), "--retries", "0"],
            "listening on")
        base = line.split("listening on ", 1)[1].split()[0].removesuffix("/v1")
        ideal = n_steps * (l_cheap + l_prm) + len(REGENERATED) * l_strong
        asyncio.run(_load(base, 1, 1, False))  # warm-up: imports, first connections
        out: dict = {"clients": clients, "rounds": rounds, "steps_per_request": n_steps,
                     "regenerated_steps": list(REGENERATED),
                     "latency_s": {"cheap": l_cheap, "prm": l_prm, "strong": l_strong},
                     "ideal_s": ideal}
        calls_per_request = 2 * n_steps + len(REGENERATED)
        out["stagger_s"] = stagger_s = ideal if stagger else 0.0
        for stream in (False, True):
            c0 = _proc_cpu_s(server.pid)
            t0 = time.perf_counter()
            lat = asyncio.run(_load(base, clients, rounds, stream, stagger_s))
            wall = time.perf_counter() - t0
            cpu = _proc_cpu_s(server.pid) - c0
            lat.sort()
            n = len(lat)
            out["stream" if stream else "non_stream"] = {
                "requests": n,
                "wall_s": wall,
                "latency_median_s": statistics.median(lat),
                "latency_p95_s": lat[min(n - 1, int(0.95 * n))],
                "latency_max_s": lat[-1],
                "ratio_median_to_ideal": statistics.median(lat) / ideal,
                "ratio_p95_to_ideal": lat[min(n - 1, int(0.95 * n))] / ideal,
                "server_cpu_ms_per_request": 1e3 * cpu / n,
                "server_cpu_ms_per_upstream_call": 1e3 * cpu / (n * calls_per_request),
                "requests_per_s": n / wall,
            }
        out["load_average_1min"] = os.getloadavg()[0]
        return out
    finally:
        if server is not None:
            _stop(server)
        _stop(fake)


@pytest.mark.parametrize("latency", [(0.2, 0.05, 0.4)], ids=["0.2-0.05-0.4s"])
def test_serve_64_clients(benchmark, latency):
    l_cheap, l_prm, l_strong = latency
    res = benchmark.pedantic(serve_load, rounds=1, iterations=1,
                             kwargs=dict(l_cheap=l_cheap, l_prm=l_prm, l_strong=l_strong))
    benchmark.extra_info.update(res)
    for mode in ("non_stream", "stream"):
        assert res[mode]["ratio_median_to_ideal"] < 1.10, res[mode]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-cheap", type=float, default=0.2)
    ap.add_argument("--latency-prm", type=float, default=0.05)
    ap.add_argument("--latency-strong", type=float, default=0.4)
    ap.add_argument("--skip-50ms", action="store_true", help="skip the 50 ms profile")
    ap.add_argument("--skip-lockstep", action="store_true", help="skip the lockstep run")
    args = ap.parse_args(argv)
    res = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                       "load_average_1min_at_start": os.getloadavg()[0]},
           "command": " ".join(["python", "benchmarks/bench_serve.py", *(argv or sys.argv[1:])])}
    res["model_like"] = serve_load(args.clients, args.rounds, l_cheap=args.latency_cheap,
                                   l_prm=args.latency_prm, l_strong=args.latency_strong)
    if not args.skip_lockstep:
        res["model_like_lockstep"] = serve_load(
            args.clients, args.rounds, l_cheap=args.latency_cheap, l_prm=args.latency_prm,
            l_strong=args.latency_strong, stagger=False)
    if not args.skip_50ms:
        res["fast_50ms"] = serve_load(args.clients, args.rounds, l_cheap=0.05, l_prm=0.05,
                                      l_strong=0.05)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
