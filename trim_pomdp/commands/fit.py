"""``trim-pomdp fit TRACES.jsonl [--strong STRONG.jsonl] --out DIR [--observation kde|beta|hist]``.

Fits the TransitionModel (and, when the traces carry PRM scores, the ObservationModel and the
calibration diagnostics), prints the parameters, and writes to DIR:

* ``transition.npz`` (``TransitionModel.load``), ``observation.npz`` (``ObservationModel.load``),
* ``observation_matrix.npy``: the (3, O) discretised observation matrix for the chosen bins,
* ``summary.json``: every printed number,
* ``reliability.png``, ``state_histograms.png`` (unless ``--no-plots``).

``trim-pomdp fit --refit-from ROUTED.jsonl [--bank BANK.npz|DIR] --out DIR``: the online
refit (:mod:`trim_pomdp.fit.refit`).  From the traces ``trim-pomdp route`` wrote (scores,
decisions, final outcomes; no step labels) and the bank that routed them (default: the bank
path the traces record), re-estimate the observation model by outcome EM with the
transition model held, re-solve the bank on its lambdas and write to DIR:

* ``bank.npz`` (+ ``bank.json``): the refitted bank, default budget re-chosen for the old
  bank's target cost fraction; ``observation_matrix.npy``: its observation matrix;
* ``refit.json``: what changed (EM iterations, converged, log-likelihood before/after,
  per-bin changes, total-variation distance per state, old/new default budget, bank keys).

If the EM does not converge, nothing but ``refit.json`` (``"converged": false``,
``"fallback": "kept the old bank"``) is written, one line says so on stderr and the exit
status is 3: keep routing with the old bank.  A routed step without its score
(``file:line``) or traces routed by a bank of another fit or feature set (names both) are
bad input (exit 2).

Held-out comparison: every 5th trace (by position) is held out, each estimator is fitted on
the rest and scored by its mean held-out log-likelihood per step (continuous density and
discretised); the final model is then fitted on all traces.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from trim_pomdp._io import atomic_write


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit",
        help="fit TRIM's transition and observation models from labelled traces",
        description="Fit TRIM's transition model (p_w, p_s, hazard, tokens) and the PRM "
                    "observation model from labelled traces; write models, summary and plots.",
    )
    p.add_argument("traces", metavar="TRACES", nargs="?",
                   help="cheap-model traces (JSONL, or ProcessBench JSON with --format "
                   "processbench); not with --refit-from")
    p.add_argument("--refit-from", metavar="ROUTED.jsonl",
                   help="refit: re-estimate the observation model of --bank from the traces "
                   "`trim-pomdp route` wrote (outcome EM, transition held), re-solve, write "
                   "the new bank and refit.json to --out")
    p.add_argument("--bank", metavar="BANK.npz|DIR",
                   help="with --refit-from: the bank that routed the traces (or a folder "
                   "holding bank.npz); default: the bank path the traces record")
    p.add_argument("--em-max-iter", type=int, default=500, metavar="N",
                   help="with --refit-from: EM iterations before giving up (default 500)")
    p.add_argument("--refit-bins", default="auto", metavar="auto|keep|N",
                   help="with --refit-from: score bins of the refitted bank: 'auto' (default) "
                   "re-chooses their number from the routed traces by solved value, 'keep' "
                   "keeps the bank's, N uses N equal-width bins")
    p.add_argument("--strong", metavar="STRONG", help="strong-model traces (same format)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--observation", choices=("kde", "beta", "hist"), default="kde",
                   help="observation density estimator (default kde)")
    p.add_argument("--features", choices=("score", "score+min"), default="score+min",
                   help="observation features (default score+min, TRIM's pair)")
    p.add_argument("--score-bins", type=_score_bins, default="auto", metavar="N|auto",
                   help="PRM score bins (default auto: the smallest count whose solved "
                        "POMDP loses at most 1%% of the routing gain of a 64-bin one, "
                        "trim_pomdp.routing.binning; recorded in observation.npz)")
    p.add_argument("--min-bins", type=int, default=4,
                   help="bins of the earlier-steps minimum (default 4; score+min only)")
    p.add_argument("--p-s", type=float, default=None,
                   help="strong next-step accuracy when no strong traces are given")
    p.add_argument("--format", choices=("jsonl", "processbench"), default="jsonl",
                   help="input format (default jsonl)")
    p.add_argument("--generator", help="processbench: the cheap model's generator name")
    p.add_argument("--strong-generator", help="processbench: the strong model's generator name")
    p.add_argument("--hazard-smoothing", type=float, default=20.0,
                   help="hazard prior strength in pseudo-traces (default 20; 0 = raw ratios)")
    p.add_argument("--hazard-bandwidth", type=float, default=2.0,
                   help="kernel bandwidth in steps of the hazard's smooth curve (default 2)")
    p.add_argument("--lenient", action="store_true",
                   help="skip malformed trace records (and report them) instead of failing")
    p.add_argument("--first-error-only", action="store_true",
                   help="labels follow first-error annotation: reject 'correct' after "
                        "'incorrect'")
    p.add_argument("--outcome-em", choices=("auto", "on", "off"), default="auto",
                   help="fit p_w, p_s and the score model by EM over the hidden first wrong "
                        "step, from answer outcomes (final_correct) alone; auto (default): when "
                        "some answers are wrong but no step is labelled incorrect, as in the "
                        "traces trim-pomdp route writes")
    p.add_argument("--em-bins", type=int, default=20,
                   help="outcome EM: score histogram bins (default 20)")
    p.add_argument("--em-bootstrap", type=int, default=100,
                   help="outcome EM: bootstrap replicates for the p_w/p_s intervals "
                        "(default 100; 0: none)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _score_bins(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto'; got "
                                         f"{text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto'; got {n}")
    return n


def _resolve_score_bins(args: argparse.Namespace, tm: Any, om: Any, log: Any,
                        summary: dict[str, Any]) -> int:
    """``--score-bins``: the given count, or (``auto``) the count chosen by solved value
    (:func:`trim_pomdp.routing.binning.choose_score_bins`).  With ``score+min`` the
    choice is made with the min-score axis merged into one bin (4x cheaper to solve; the
    min bins stay as given)."""
    if args.score_bins != "auto":
        return int(args.score_bins)
    from trim_pomdp.routing.binning import choose_score_bins

    t0 = time.perf_counter()
    choice = choose_score_bins(tm, om, n_min_bins=1 if om.features == "score+min" else None)
    summary["score_bins_choice"] = choice.to_dict()
    log(f"  score bins: {choice.n_bins}, chosen by solved value in "
        f"{time.perf_counter() - t0:.1f} s (loses at most max(1% of the routing gain, "
        f"2e-4) of a {choice.reference}-bin model at {len(choice.probe_lambdas)} lambdas"
        + ("" if choice.met else "; no candidate met that, the largest is used") + ")")
    return choice.n_bins


def _load(path: str, args: argparse.Namespace, generator: str | None, log: Any) -> list[Any]:
    from trim_pomdp.errors import TraceFormatError
    from trim_pomdp.traces.processbench import read_processbench
    from trim_pomdp.traces.records import LoadReport, load_traces

    if args.format == "processbench":
        pb_rep = LoadReport()
        tr = read_processbench(path, generator=generator, lenient=args.lenient, report=pb_rep)
        if pb_rep.n_skipped:
            log(f"{path}: {pb_rep.summary()}")
        if not tr:
            raise TraceFormatError(f"{path}: no records" +
                                   (f" from generator {generator!r}" if generator else ""))
        return tr
    traces, rep = load_traces(path, lenient=args.lenient, first_error_only=args.first_error_only,
                              return_report=True)
    if rep.n_skipped:
        log(f"{path}: {rep.summary()}")
    if not traces:
        raise TraceFormatError(f"{path}: every record was malformed ({rep.n_skipped} skipped)")
    return traces


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from trim_pomdp.errors import InsufficientDataError
    from trim_pomdp.fit.observation import ObservationModel
    from trim_pomdp.fit.transition import TransitionModel
    from trim_pomdp.traces.table import traces_to_table

    quiet = args.json
    out_stream = sys.stderr if quiet else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=out_stream)

    t0 = time.perf_counter()
    from trim_pomdp._io import check_output_path

    if (args.traces is None) == (args.refit_from is None):
        print("trim-pomdp fit: error: give TRACES (a fit from labelled traces) or "
              "--refit-from ROUTED.jsonl (a refit of a bank), not both or neither",
              file=sys.stderr)
        return 2
    if args.bank is not None and args.refit_from is None:
        print("trim-pomdp fit: error: --bank goes with --refit-from", file=sys.stderr)
        return 2
    # before the (possibly long) fit: a folder we cannot write is reported now, not after
    out = check_output_path(args.out, is_dir=True, create=True)
    if args.refit_from is not None:
        return _run_refit(args, out, log, t0)
    cheap = _load(args.traces, args, args.generator, log)
    strong = _load(args.strong, args, args.strong_generator, log) if args.strong else None
    cheap_table = traces_to_table(cheap)
    strong_table = traces_to_table(strong) if strong is not None else None
    log(f"loaded {cheap_table.n_traces} cheap traces ({cheap_table.n_steps} steps)"
        + (f", {strong_table.n_traces} strong traces ({strong_table.n_steps} steps)"
           if strong_table is not None else "")
        + f" in {time.perf_counter() - t0:.2f} s")

    routed_strong = bool((cheap_table.writer == 1).any())  # routed traces hold strong steps
    if strong_table is None and args.p_s is None and not routed_strong:
        print("trim-pomdp fit: error: no strong traces; give --strong STRONG or --p-s P",
              file=sys.stderr)
        return 2
    n_wrong = sum(t.final_correct is False for t in cheap)
    if args.outcome_em == "on" or (
        args.outcome_em == "auto" and n_wrong and not (cheap_table.label == 0).any()
    ):
        n_right = sum(t.final_correct is True for t in cheap)
        return _run_outcome_em(args, cheap, strong, cheap_table, strong_table, out, log, t0,
                               n_right, n_wrong)
    try:
        tm = TransitionModel(p_s=args.p_s if strong_table is None else None,
                             hazard_smoothing=args.hazard_smoothing,
                             hazard_bandwidth=args.hazard_bandwidth)
        tm.fit(cheap_table, strong_table)
    except ValueError as exc:
        print(f"trim-pomdp fit: error: {exc}", file=sys.stderr)
        return 2
    tm.save(out / "transition.npz")
    summary: dict[str, Any] = {"transition": tm.summary()}
    log("")
    log("Transition model")
    log(f"  p_w = {tm.p_w_:.4f}  95% CI [{tm.p_w_ci_[0]:.4f}, {tm.p_w_ci_[1]:.4f}]  "
        f"({tm.k_w_} correct of {tm.n_w_} steps after a correct prefix)")
    if tm.n_s_:
        log(f"  p_s = {tm.p_s_:.4f}  95% CI [{tm.p_s_ci_[0]:.4f}, {tm.p_s_ci_[1]:.4f}]  "
            f"({tm.k_s_} correct of {tm.n_s_})")
    else:
        log(f"  p_s = {tm.p_s_:.4f}  (given)")
    _log_hazard_and_tokens(tm, log)

    n_scored = int((~np.isnan(cheap_table.score) & (cheap_table.state >= 0)).sum())
    if n_scored == 0:
        log("")
        log("no labelled step carries a PRM score: observation model and calibration skipped "
            "(score the steps with your PRM and fill 'prm_score')")
    else:
        nm = args.min_bins if args.features == "score+min" else None
        om = ObservationModel(estimator=args.observation, features=args.features).fit(cheap_table)
        n_score = _resolve_score_bins(args, tm, om, log, summary)
        # held-out comparison of the estimators
        idx = np.arange(len(cheap))
        train = [cheap[i] for i in idx if i % 5 != 4]
        test = [cheap[i] for i in idx if i % 5 == 4]
        comparison: dict[str, Any] = {}
        if len(test) and len(train):
            for est in ("kde", "beta", "hist"):
                try:
                    om_ = ObservationModel(estimator=est, features=args.features).fit(train)
                    comparison[est] = {
                        "heldout_loglik_per_step": om_.log_likelihood(test, average=True),
                        "heldout_discrete_loglik_per_step": om_.log_likelihood(
                            test, n_score_bins=n_score, n_min_bins=nm, average=True)}
                except InsufficientDataError as exc:
                    comparison[est] = {"error": str(exc)}
        om.set_binning(n_score, nm)  # travels with the file: solve-grid reads it
        om.save(out / "observation.npz")
        Z = om.discretize(n_score, nm)
        atomic_write(out / "observation_matrix.npy", lambda fh: np.save(fh, Z))
        summary["observation"] = om.describe()
        summary["observation"]["n_score_bins"] = n_score
        summary["observation"]["n_min_bins"] = nm
        summary["observation"]["matrix"] = Z.tolist()
        summary["observation_comparison"] = comparison
        log("")
        log(f"Observation model ({args.observation}, features {args.features})")
        d = om.describe()
        for st in ("S0", "S1", "S2"):
            log(f"  {st}: {json.dumps(d[st])}")
        if comparison:
            log("  held-out log-likelihood per step (every 5th trace held out):")
            log("    estimator  continuous  discrete")
            for est, v in comparison.items():
                if "error" in v:
                    log(f"    {est:9s}  {v['error']}")
                else:
                    log(f"    {est:9s}  {v['heldout_loglik_per_step']:10.4f}  "
                        f"{v['heldout_discrete_loglik_per_step']:8.4f}")
        log(f"  observation matrix {Z.shape} -> {out / 'observation_matrix.npy'}")

        from trim_pomdp.fit.prm_calibration import (
            calibration_report,
            plot_reliability,
            plot_state_histograms,
        )

        try:
            rep = calibration_report(cheap_table)
        except InsufficientDataError as exc:
            log(f"calibration skipped: {exc}")
        else:
            summary["calibration"] = rep.to_dict()
            log("")
            log(f"PRM calibration (step labels, n = {rep.n}): AUROC {rep.auroc:.4f}  "
                f"ECE {rep.ece:.4f}  Brier {rep.brier:.4f}")
            if not args.no_plots:
                try:
                    plot_reliability(rep, out / "reliability.png")
                    plot_state_histograms(rep, out / "state_histograms.png")
                except ImportError as exc:  # the plots are optional; the rest is written
                    from trim_pomdp.cli import extra_hint, missing_extra

                    found = missing_extra(exc)
                    if found is None:
                        raise
                    log(f"  plots skipped: {found[0]} is not installed ({extra_hint(found[0])}"
                        " brings it); models and summary are still written")
                    summary["plots_skipped"] = f"{found[0]} is not installed"
                else:
                    log(f"  plots: {out / 'reliability.png'}, {out / 'state_histograms.png'}")

    return _write_summary(summary, out, args, log, t0)


def _log_hazard_and_tokens(tm: Any, log: Any) -> None:
    """The fitted hazard and step lengths of a TransitionModel, as both fit paths print them."""
    log("  hazard h(t), t = 1..30: " + " ".join(f"{v:.3f}" for v in tm.hazard_))
    if tm.n_truncated_:
        log(f"  {tm.n_truncated_} traces longer than {tm.max_steps} steps were capped")
    if tm.cheap_tokens_ is not None:
        s = f"  tokens/step: cheap mean {tm.cheap_tokens_.mean_all:.1f}"
        if tm.strong_tokens_ is not None:
            s += f", strong mean {tm.strong_tokens_.mean_all:.1f}"
        log(s + f"; expected strong tokens = {tm.strong_cheap_ratio_:.3f} x cheap tokens")


def _run_outcome_em(args: argparse.Namespace, cheap: list[Any], strong: list[Any] | None,
                    cheap_table: Any, strong_table: Any, out: Path, log: Any,
                    t0: float, n_right: int, n_wrong: int) -> int:
    """``fit`` when only the answers are labelled: :class:`trim_pomdp.fit.outcome.OutcomeEM`."""
    import numpy as np

    from trim_pomdp.errors import InsufficientDataError
    from trim_pomdp.fit.outcome import OutcomeEM
    from trim_pomdp.fit.transition import TransitionModel

    log("")
    log(f"outcome EM: {n_right} correct and {n_wrong} wrong answers and no step labelled "
        "incorrect, so the first wrong step of each wrong answer is a hidden variable")
    if args.features != "score":
        log("  (the outcome EM models the PRM score alone: --features score)")
    log(f"  fitting, then {args.em_bootstrap} bootstrap refits for the intervals "
        "(~3 s per 1,000 traces)" if args.em_bootstrap else "  fitting")
    try:
        em = OutcomeEM(n_bins=args.em_bins, p_s=args.p_s, n_bootstrap=args.em_bootstrap,
                       seed=0).fit(cheap, strong)
        tm = TransitionModel(p_w=em.p_w_, p_s=em.p_s_, hazard_smoothing=args.hazard_smoothing,
                             hazard_bandwidth=args.hazard_bandwidth)
        tm.fit(cheap_table, strong_table)
    except (InsufficientDataError, ValueError) as exc:
        print(f"trim-pomdp fit: error: {exc}", file=sys.stderr)
        return 2
    tm.p_w_ci_ = np.asarray(em.p_w_ci_, dtype=float)
    tm.p_s_ci_ = np.asarray(em.p_s_ci_, dtype=float)
    tm.save(out / "transition.npz")
    om = em.observation_model()
    summary: dict[str, Any] = {}
    n_score = _resolve_score_bins(args, tm, om, log, summary)
    om.set_binning(n_score, None)  # travels with the file: solve-grid reads it
    om.save(out / "observation.npz")
    Z = om.discretize(n_score, None)
    atomic_write(out / "observation_matrix.npy", lambda fh: np.save(fh, Z))
    em_sum = em.summary()
    summary = {"transition": tm.summary(), "outcome_em": em_sum,
               "observation": om.describe(), **summary}
    summary["observation"].update(n_score_bins=n_score, n_min_bins=None,
                                  matrix=Z.tolist())

    def ci(v: Any) -> str:
        return ("" if np.isnan(v).any()
                else f"  95% CI [{v[0]:.4f}, {v[1]:.4f}] ({args.em_bootstrap} bootstraps)")

    log(f"  converged: {em.converged_} after {em.n_iter_} iterations, log-likelihood "
        f"{em.loglik_:.2f}")
    log("")
    log("Transition model")
    log(f"  p_w = {tm.p_w_:.4f}{ci(em.p_w_ci_)}")
    log(f"  p_s = {tm.p_s_:.4f}" + ("  (given)" if args.p_s is not None else ci(em.p_s_ci_)))
    _log_hazard_and_tokens(tm, log)
    log("")
    log(f"Observation model (histograms of {args.em_bins} bins, features score; expected "
        "scored steps per state " + ", ".join(f"{n} {c:.0f}" for n, c in
                                              zip(("S0", "S1", "S2"), em.expected_counts_,
                                                  strict=True)) + ")")
    for st, row in zip(("S0", "S1", "S2"), Z, strict=True):
        log(f"  P(score bin | {st}) = " + " ".join(f"{v:.3f}" for v in row))
    log(f"  observation matrix {Z.shape} -> {out / 'observation_matrix.npy'}")
    log("  (no calibration report: it needs step labels)")
    return _write_summary(summary, out, args, log, t0)


def _resolve_bank(args: argparse.Namespace, routed_path: str) -> Path:
    """``--bank``, a folder's ``bank.npz``, or the one bank path the routed traces record."""
    import json as _json

    from trim_pomdp.errors import TrimPomdpError

    if args.bank is not None:
        p = Path(args.bank)
        if p.is_dir():
            p = p / "bank.npz"
        return p
    paths: list[str] = []
    with open(routed_path, "rb") as fh:
        for raw in fh:
            try:
                tag = _json.loads(raw).get("router")
            except (ValueError, AttributeError, RecursionError):
                continue  # load_routed reports the bad line with its number
            bp = tag.get("bank_path") if isinstance(tag, dict) else None
            if isinstance(bp, str) and bp not in paths:
                paths.append(bp)
    if len(paths) != 1:
        raise TrimPomdpError(
            f"--refit-from {routed_path}: the traces record "
            + ("no bank path" if not paths else f"{len(paths)} bank paths ({', '.join(paths[:3])})")
            + "; give --bank BANK.npz (the bank that routed them)")
    return Path(paths[0])


def _run_refit(args: argparse.Namespace, out: Path, log: Any, t0: float) -> int:
    """``fit --refit-from``: outcome EM with the transition held, re-solve, write."""
    import numpy as np

    from trim_pomdp._io import strict_json, write_json_atomic
    from trim_pomdp.errors import RefitError
    from trim_pomdp.fit.refit import bank_key, lineage_key, load_routed, refit_bank
    from trim_pomdp.routing.bank import PolicyBank

    if args.em_max_iter < 1:
        print(f"trim-pomdp fit: error: --em-max-iter must be >= 1; got {args.em_max_iter}",
              file=sys.stderr)
        return 2
    rb = str(args.refit_bins)
    if rb == "keep":
        n_bins: int | str | None = None
    elif rb == "auto":
        n_bins = "auto"
    elif rb.isdigit() and int(rb) >= 2:
        n_bins = int(rb)
    else:
        print(f"trim-pomdp fit: error: --refit-bins must be 'auto', 'keep' or an integer >= 2; "
              f"got {rb!r}", file=sys.stderr)
        return 2
    bank_path = _resolve_bank(args, args.refit_from)
    bank = PolicyBank.load(bank_path)
    m = bank.model
    if getattr(m, "n_hidden", 3) != 3:
        from trim_pomdp.errors import ModelValidationError

        raise ModelValidationError(
            f"--bank {bank_path}: a refit needs a TRIM-POMDP bank; this one is a "
            "TRIM-POMDP+ bank")
    routed = load_routed(args.refit_from, m, bank_label=f"--bank {bank_path}")
    n = len(routed.traces)
    log(f"loaded {n} routed traces from {args.refit_from}"
        + (f" ({routed.n_untagged} without a router tag)" if routed.n_untagged else "")
        + f"; bank {bank_path} ({len(bank)} lambdas, {m.n_score_bins} score bins)")
    record: dict[str, Any] = {
        "format_version": 1, "kind": "trim_pomdp.refit", "routed": str(args.refit_from),
        "n_traces": n, "n_untagged": routed.n_untagged, "versions_in_file": routed.versions,
        "old_bank": {"path": str(bank_path), "key": bank_key(bank),
                     "lineage": lineage_key(m), "default_lambda": bank.default_lambda,
                     "target_cost_fraction": bank.target_cost_fraction},
    }
    try:
        new_bank, res = refit_bank(bank, routed.traces, max_iter=args.em_max_iter,
                                   n_bins=n_bins)
    except RefitError as exc:
        record.update(converged=False, fallback="kept the old bank", reason=str(exc),
                      em_max_iter=args.em_max_iter)
        write_json_atomic(out / "refit.json", strict_json(record))
        print(f"trim-pomdp fit: refit did not converge ({exc}); kept the old bank "
              f"{bank_path}, nothing but {out / 'refit.json'} was written", file=sys.stderr)
        if args.json:
            print(json.dumps(strict_json(record), allow_nan=False))
        return 3
    new_bank.save(out / "bank.npz")
    Z = np.asarray(new_bank.model.obs_matrix)
    atomic_write(out / "observation_matrix.npy", lambda fh: np.save(fh, Z))
    em = res.em
    record.update(
        converged=True, em_iterations=em["n_iter"], loglik_before=res.loglik_before,
        loglik_after=res.loglik_after, tv_distance=res.tv_distance, per_bin=res.per_bin(),
        em=em,
        new_bank={"path": str(out / "bank.npz"), "key": bank_key(new_bank),
                  "lineage": lineage_key(new_bank.model),
                  "default_lambda": new_bank.default_lambda,
                  "target_cost_fraction": new_bank.target_cost_fraction},
        wall_s=time.perf_counter() - t0)
    write_json_atomic(out / "refit.json", strict_json(record))
    choice = em.get("bin_choice")
    log(f"refit: EM converged in {em['n_iter']} iterations (transition held); "
        f"log-likelihood {res.loglik_before:.2f} -> {res.loglik_after:.2f}; score bins "
        f"{m.n_score_bins} -> {new_bank.model.n_score_bins}"
        + (" (chosen by solved value)" if choice else ""))
    for st, row, tv in zip(("S0", "S1", "S2"), Z, res.tv_distance, strict=True):
        log(f"  P(score bin | {st}) = " + " ".join(f"{v:.3f}" for v in row)
            + f"   (TV from the old row {tv:.3f})")
    if bank.default_lambda is not None or new_bank.default_lambda is not None:
        log(f"  default budget {bank.default_lambda} -> {new_bank.default_lambda}"
            + (f" (target cost fraction {new_bank.target_cost_fraction:g})"
               if new_bank.target_cost_fraction is not None else ""))
    log(f"bank ({len(new_bank)} lambdas) -> {out / 'bank.npz'}; record -> {out / 'refit.json'}"
        f" ({time.perf_counter() - t0:.2f} s)")
    if args.json:
        print(json.dumps(strict_json(record), allow_nan=False))
    return 0


def _write_summary(summary: dict[str, Any], out: Path, args: argparse.Namespace, log: Any,
                   t0: float) -> int:
    """Write ``summary.json`` (strict JSON: a NaN, e.g. an interval not computed, is null)
    and print it with ``--json``."""
    from trim_pomdp._io import strict_json, write_json_atomic

    # strict JSON: NaN and +-inf (e.g. a -inf log-likelihood) are written as null
    summary = strict_json(_nan_to_none(summary))
    write_json_atomic(out / "summary.json", summary)
    log("")
    log(f"models and summary written to {out} ({time.perf_counter() - t0:.2f} s)")
    if args.json:
        print(json.dumps(summary, default=_nan_safe, allow_nan=False))
    return 0


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    if isinstance(o, float) and o != o:
        return None
    return o


def _nan_safe(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
