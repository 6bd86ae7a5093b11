"""``trim-pomdp train``: train TRIM-Agg or TRIM-Seq routers over a budget grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train RL routers (TRIM-Agg / TRIM-Seq) over a budget grid",
        description="Train one PPO router per lambda on a scenario (or on a scenario fitted "
                    "from labelled traces) and write the bank and its learning curves.",
    )
    p.add_argument("--policy", choices=("agg", "seq"), default="agg",
                   help="TRIM-Agg (MLP on aggregated features) or TRIM-Seq (recurrent)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", default=None,
                     help="scenario JSON file or built-in name (default: the built-in default)")
    src.add_argument("--traces", default=None,
                     help="labelled cheap-model traces (JSONL); a scenario is fitted from them")
    p.add_argument("--strong", default=None,
                   help="labelled strong-model traces (JSONL), with --traces")
    p.add_argument("--p-s", type=float, default=None,
                   help="strong next-step accuracy when no --strong traces are given")
    p.add_argument("--lambdas", default="1e-4,3e-4,1e-3,3e-3",
                   help="comma-separated prices per strong token (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--iterations", type=int, default=None, help="PPO iterations per lambda")
    p.add_argument("--envs", type=int, default=None, help="episodes per PPO rollout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per core)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    return p


def _scenario_from_traces(path: str, strong: str | None, p_s: float | None) -> Any:
    """Fit p_w, p_s, hazard, token log-normals and per-state Beta score models."""
    import numpy as np

    from trim_pomdp.fit.observation import beta_mle
    from trim_pomdp.fit.transition import TransitionModel
    from trim_pomdp.simulation.scenario import Scenario
    from trim_pomdp.traces.records import load_traces
    from trim_pomdp.traces.table import hidden_state_labels

    cheap = list(load_traces(path))
    strong_tr = list(load_traces(strong)) if strong else None
    tm = TransitionModel(p_s=p_s).fit(cheap, strong_tr) if p_s is not None else \
        TransitionModel().fit(cheap, strong_tr)
    scores: list[list[float]] = [[], [], []]
    for tr in cheap:
        labels = hidden_state_labels(tr)
        for st, lab in zip(tr.steps, labels, strict=True):
            if lab >= 0 and st.prm_score is not None:
                scores[int(lab)].append(st.prm_score)
    prm = {}
    for s, name in enumerate(("S0", "S1", "S2")):
        a, b = beta_mle(np.clip(np.asarray(scores[s]), 1e-4, 1 - 1e-4), where=f"{path}: {name}")
        prm[name] = {"a": a, "b": b}
    ct = tm.cheap_tokens_
    st_ = tm.strong_tokens_ if tm.strong_tokens_ is not None else ct
    mu_s = st_.mu_all if tm.strong_tokens_ is not None else ct.mu_all + np.log(
        tm.strong_cheap_ratio_)
    data = {
        "format_version": 1, "name": f"fitted:{Path(path).name}",
        "description": f"fitted from {path}",
        "p_w": {"mean": float(tm.p_w_), "concentration": None},
        "p_s": {"mean": float(tm.p_s_), "concentration": None},
        "hazard": {"kind": "list", "values": [float(h) for h in tm.hazard_]},
        "tokens": {"cheap": {"mu": float(ct.mu_all), "sigma": float(ct.sigma_all)},
                   "strong": {"mu": float(mu_s), "sigma": float(st_.sigma_all)}},
        "prm": prm, "n_problems": 10000, "seed": 0,
    }
    return Scenario.from_dict(data, source=path)


def run(args: argparse.Namespace) -> int:
    import sys
    from concurrent.futures import ProcessPoolExecutor

    from trim_pomdp.rl.grid import train_grid
    from trim_pomdp.rl.ppo import PPOConfig
    from trim_pomdp.simulation.scenario import default_scenario, load_scenario

    try:
        lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"--lambdas must be comma-separated numbers; got {args.lambdas!r}") \
            from exc
    if args.traces:
        scenario = _scenario_from_traces(args.traces, args.strong, args.p_s)
    elif args.scenario:
        scenario = load_scenario(args.scenario)
    else:
        scenario = default_scenario()
    over: dict[str, Any] = {"seed": args.seed}
    if args.iterations is not None:
        over["iterations"] = args.iterations
    if args.envs is not None:
        over["n_envs"] = args.envs
    cfg = PPOConfig(**over)
    from trim_pomdp._io import check_output_path

    out = check_output_path(args.out, is_dir=True, create=True)  # before training
    executor = ProcessPoolExecutor(max_workers=args.workers) if args.workers else None
    print(f"training {len(lambdas)} {args.policy} router(s) on scenario {scenario.name!r} "
          f"({cfg.iterations} PPO iterations x {cfg.n_envs} episodes each)", file=sys.stderr)
    try:
        bank = train_grid(scenario, lambdas, kind=args.policy, config=cfg, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()
    bank_path = out / f"trim-{args.policy}.npz"
    bank.save(bank_path)
    png = bank.plot_learning_curves(out / f"learning_curves_{args.policy}.png")
    rows = [{"lambda": r.lam, "best_iteration": r.metadata["best_iteration"],
             "val_objective": r.metadata["best_val_objective"]} for r in bank.routers]
    if args.json:
        print(json.dumps({"bank": str(bank_path), "learning_curves": str(png), "routers": rows}))
    else:
        print(f"{'lambda':>10}  {'best iter':>9}  {'val objective':>13}")
        for r in rows:
            print(f"{r['lambda']:>10.3g}  {r['best_iteration']:>9d}  {r['val_objective']:>13.4f}")
        print(f"wrote {bank_path} and {png}")
    return 0
