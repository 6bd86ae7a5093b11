"""Simulation scenarios: the generative world the router is evaluated in.

A scenario is a JSON file (schema below) describing a population of reasoning problems
solved step by step by a cheap model, with a strong model that can rewrite any step and a
process reward model (PRM) that scores every cheap draft.  The world follows the TRIM
transition rules (hidden states S0 = 0 all correct so far incl. the draft, S1 = 1 an
earlier step wrong, S2 = 2 earlier steps correct but the current draft wrong):

* problem ``i`` has its own next-step accuracies ``p_w[i]`` (cheap) and ``p_s[i]`` (strong),
  drawn from Beta distributions with the given means and concentrations (``null``
  concentration = every problem has exactly the mean).  The two are coupled through a
  Gaussian copula with correlation ``difficulty_correlation`` (hard problems are hard for
  both models).
* the solution has ``L`` steps, ``P(L = t | L >= t) = h(t)`` (termination hazard), h(30) = 1.
* a cheap draft following a correct prefix is correct w.p. ``p_w[i]``; a strong step
  following a correct prefix (or replacing a wrong draft) is correct w.p. ``p_s[i]``; once a
  step is wrong every later step is in S1 (irrecoverable).
* ``step_correlation`` (default 0, what the TRIM model assumes) couples, through a Gaussian
  copula, the draws deciding whether the cheap draft and the strong rewrite of the *same*
  step are right: with a positive value a step the cheap model gets wrong is harder for the
  strong model too (P(rewrite right | draft wrong) < p_s), a deliberate misspecification for
  robustness studies; the marginal accuracies (and the end points) do not change.
* step lengths (tokens) are lognormal per model; the cheap draft's and the strong rewrite's
  log-lengths of the same step have correlation ``tokens.correlation``.
* the PRM score of a step in hidden state ``s`` is ``expit(logit(Q_s(Phi(z))) + b)`` with
  ``Q_s`` the Beta(a_s, b_s) quantile function, ``z`` a standard-normal latent that follows an
  AR(1) process along the trace with lag-1 correlation ``prm.correlation`` (within-trace
  correlation) and ``b ~ N(0, prm.bias_sd^2)`` a per-trace bias on the logit scale.  Without
  bias and correlation the scores are i.i.d. Beta(a_s, b_s) given the state.

JSON schema (``format_version`` 1; every field is required unless marked optional; unknown
fields are rejected so that typos cannot silently fall back to defaults)::

    {
      "format_version": 1,
      "name": "default",                          # optional, str
      "description": "...",                       # optional, str
      "p_w": {"mean": 0.955, "concentration": 40},   # mean in (0,1); concentration > 0 or null
      "p_s": {"mean": 0.977, "concentration": 80},
      "difficulty_correlation": 0.5,              # optional, in [-1, 1], default 0
      "step_correlation": 0.0,                    # optional, in [-1, 1], default 0
      "hazard": {"kind": "constant", "value": 0.17, "min_steps": 3},
               # or {"kind": "list", "values": [h1, ..., h30]} (each in [0, 1]; h30 forced 1)
      "tokens": {"cheap":  {"mu": 3.85, "sigma": 0.6},    # lognormal of one step's tokens
                 "strong": {"mu": 3.90, "sigma": 0.6},
                 "correlation": 0.7},             # optional, in [-1, 1], default 0
      "prm": {"S0": {"a": 4.0, "b": 1.6},         # Beta(a, b) per hidden state, a, b > 0
              "S1": {"a": 2.0, "b": 2.6},
              "S2": {"a": 1.6, "b": 3.0},
              "bias_sd": 0.4,                     # optional, >= 0, default 0
              "correlation": 0.3},                # optional, in [0, 1), default 0
      "n_problems": 20000,                        # int >= 1
      "seed": 0,                                  # int >= 0
      "deployment": {                             # optional: PRM drift (see below)
        "prm": {"S0": {...}, "S1": {...}, "S2": {...},   # optional, replaces "prm"
                "bias_sd": 0.4, "correlation": 0.3},    # optional, default: training's
        "logit_scale": 2.5,                       # optional, > 0, default 1
        "logit_shift": 0.0                        # optional, default 0
      }
    }

Drift.  Without ``deployment`` the routers are trained and deployed in the same world.  With
it, the scenario describes two worlds that share everything (problems, lengths, tokens and
every random draw, given the seed) except the PRM: the *training* world scores with
``prm`` (what :func:`~trim_pomdp.trim.fit_from_scenario` and every family factory fit on,
:meth:`Scenario.training`) and the *deployment* world -- the one
:func:`~trim_pomdp.simulator.sample_world` samples and routers are evaluated in -- scores
with ``deployment.prm`` (default: ``prm``) and then maps every score through
``expit(logit_scale * logit(score) + logit_shift)``: ``logit_scale > 1`` is an
overconfident PRM (scores piled near 0 and 1), ``< 1`` a squashed-toward-0.5 one, and
``logit_shift`` moves every score (a PRM version or prompt-format change).  The map is
monotone, so it changes the calibration the router was fitted on but not the ranking
(AUROC); a different ``deployment.prm`` changes both.

Errors are :class:`~trim_pomdp.errors.ScenarioError` naming the file (and line for JSON
syntax errors) and the dotted field path, with what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import ScenarioError

FORMAT_VERSION = 1
MAX_STEPS = 30
STATE_NAMES = ("S0", "S1", "S2")
BUILTIN_SCENARIOS = {
    "default": "default_scenario.json",
    "noisy_prm": "noisy_prm_scenario.json",
    # drift: trained on the default scenario's PRM, deployed with a different one (issue 15)
    "drift_noisy": "drift_noisy_scenario.json",
    "drift_overconfident": "drift_overconfident_scenario.json",
    "drift_shifted": "drift_shifted_scenario.json",
}
#: the built-in scenarios whose deployment PRM differs from the training PRM
DRIFT_SCENARIOS = ("drift_noisy", "drift_overconfident", "drift_shifted")

_TOP_FIELDS = {
    "format_version", "name", "description", "p_w", "p_s", "difficulty_correlation",
    "step_correlation", "hazard", "tokens", "prm", "n_problems", "seed", "deployment",
}


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A validated simulation scenario (see the module docstring for the semantics).

    Parameters
    ----------
    p_w_mean, p_s_mean : float
        Mean next-step accuracy of the cheap / strong model, in (0, 1).
    p_w_concentration, p_s_concentration : float or None
        Beta concentration ``a + b`` of the per-problem accuracies; ``None`` = no spread.
    difficulty_correlation : float
        Gaussian-copula correlation between a problem's ``p_w`` and ``p_s``.
    step_correlation : float
        Gaussian-copula correlation between the cheap-draft and strong-rewrite correctness
        draws of the same step (0 = the TRIM model's assumption).
    hazard : dict
        ``{"kind": "constant", "value": h, "min_steps": m}`` (``h(t) = 0`` for ``t < m``,
        ``h`` for ``m <= t < 30``) or ``{"kind": "list", "values": [30 floats]}``;
        ``h(30) = 1`` always.  :meth:`hazard_array` gives the 30 values.
    cheap_tokens, strong_tokens : tuple of (mu, sigma)
        Lognormal parameters of one step's token count, ``round(exp(mu + sigma N(0,1)))``
        clipped below at 1.
    token_correlation : float
        Correlation of the cheap and strong log-lengths of the same step.
    score_beta : tuple of three (a, b)
        PRM score Beta parameters for S0, S1, S2.
    prm_bias_sd : float
        Standard deviation of the per-trace logit bias.
    prm_correlation : float
        Lag-1 correlation of the AR(1) latent of the scores along a trace.
    n_problems : int
        Problems drawn by :func:`trim_pomdp.simulator.sample_world` by default.
    seed : int
        Default seed of the world.
    deployment : dict or None
        PRM drift (module docstring): ``{"prm": None or {"S0": {"a", "b"}, ..., "bias_sd",
        "correlation"}, "logit_scale": float, "logit_shift": float}``; ``None`` = no drift.
    """

    name: str = "custom"
    description: str = ""
    p_w_mean: float
    p_w_concentration: float | None = None
    p_s_mean: float
    p_s_concentration: float | None = None
    difficulty_correlation: float = 0.0
    step_correlation: float = 0.0
    hazard: Mapping[str, Any] = field(default_factory=lambda: {"kind": "constant",
                                                               "value": 0.15, "min_steps": 1})
    cheap_tokens: tuple[float, float] = (4.0, 0.6)
    strong_tokens: tuple[float, float] = (4.0, 0.6)
    token_correlation: float = 0.0
    score_beta: tuple[tuple[float, float], ...] = ((4.0, 1.6), (2.0, 2.6), (1.6, 3.0))
    prm_bias_sd: float = 0.0
    prm_correlation: float = 0.0
    n_problems: int = 10000
    seed: int = 0
    deployment: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Round-trip through the validator so that programmatic construction gets the same
        # checks (and messages) as a JSON file.
        try:
            as_dict = self.to_dict()
        except (TypeError, IndexError, ValueError) as exc:
            raise ScenarioError(f"<Scenario>: malformed field value: {exc}") from None
        _validate_dict(as_dict, source="<Scenario>")
        object.__setattr__(self, "hazard", dict(self.hazard))
        if self.deployment is not None:
            object.__setattr__(self, "deployment",
                               _normalise_deployment(as_dict["deployment"], self.prm_bias_sd,
                                                     self.prm_correlation))

    def __hash__(self) -> int:  # the hazard spec is a dict; hash the canonical JSON instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # ------------------------------------------------------------------ conversions
    def hazard_array(self) -> NDArray[np.float64]:
        """The 30 hazard values ``h(t) = P(step t is final | step t reached)``, t = 1..30."""
        return _hazard_values(self.hazard, "<Scenario>")

    def expected_length(self) -> float:
        """``E[L]``, the mean number of steps of a solution, from the hazard."""
        h = self.hazard_array()
        surv = np.concatenate(([1.0], np.cumprod(1.0 - h)[:-1]))  # P(L >= t)
        return float(surv.sum())

    @property
    def matches_trim_model(self) -> bool:
        """True iff the world is exactly a TRIM POMDP: no problem-level spread, no PRM bias
        or within-trace correlation, no same-step correlation (then p_w, p_s, the hazard and
        the per-state Beta score densities are the model's exact parameters)."""
        return (self.p_w_concentration is None and self.p_s_concentration is None
                and self.prm_bias_sd == 0.0 and self.prm_correlation == 0.0
                and self.step_correlation == 0.0 and not self.has_drift)

    # ------------------------------------------------------------------ drift
    @property
    def has_drift(self) -> bool:
        """True iff the deployment PRM differs from the training PRM (``deployment`` set)."""
        return self.deployment is not None

    def training(self) -> Scenario:
        """The training world: this scenario without its ``deployment`` section (itself
        when there is none).  Models are fitted on it."""
        if self.deployment is None:
            return self
        return dataclasses.replace(self, name=f"{self.name}-training", deployment=None)

    def deployment_prm(self) -> dict[str, Any]:
        """The PRM of the deployment world, resolved: ``score_beta`` (three (a, b)),
        ``bias_sd``, ``correlation``, ``logit_scale``, ``logit_shift`` (the training PRM
        with scale 1 and shift 0 when there is no drift)."""
        d = self.deployment
        if d is None:
            return {"score_beta": self.score_beta, "bias_sd": self.prm_bias_sd,
                    "correlation": self.prm_correlation, "logit_scale": 1.0,
                    "logit_shift": 0.0}
        prm = d["prm"]
        return {"score_beta": self.score_beta if prm is None else
                tuple((prm[n]["a"], prm[n]["b"]) for n in STATE_NAMES),
                "bias_sd": d["bias_sd"], "correlation": d["correlation"],
                "logit_scale": d["logit_scale"], "logit_shift": d["logit_shift"]}

    def trim_exact(self, **changes: Any) -> Scenario:
        """This scenario with every departure from the TRIM model removed (see
        :attr:`matches_trim_model`); accuracies are fixed at their means."""
        return self.replace(name=f"{self.name}-trim-exact", p_w_concentration=None,
                            p_s_concentration=None, prm_bias_sd=0.0, prm_correlation=0.0,
                            step_correlation=0.0, **changes)

    def expected_strong_tokens(self, cheap_tokens: Any) -> NDArray[np.float64]:
        """``E[strong tokens of a step | its cheap draft has c tokens]`` under the token
        model (bivariate lognormal; rounding ignored):
        ``exp(mu_s + rho sigma_s (ln c - mu_c) / sigma_c + sigma_s^2 (1 - rho^2) / 2)``."""
        c = np.maximum(np.asarray(cheap_tokens, dtype=np.float64), 1.0)
        (mc, sc), (ms, ss) = self.cheap_tokens, self.strong_tokens
        rho = self.token_correlation if sc > 0 else 0.0
        zc = (np.log(c) - mc) / sc if sc > 0 else np.zeros_like(c)
        return np.exp(ms + rho * ss * zc + 0.5 * ss * ss * (1.0 - rho * rho))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict of the documented schema."""
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "p_w": {"mean": self.p_w_mean, "concentration": self.p_w_concentration},
            "p_s": {"mean": self.p_s_mean, "concentration": self.p_s_concentration},
            "difficulty_correlation": self.difficulty_correlation,
            "step_correlation": self.step_correlation,
            "hazard": dict(self.hazard),
            "tokens": {
                "cheap": {"mu": self.cheap_tokens[0], "sigma": self.cheap_tokens[1]},
                "strong": {"mu": self.strong_tokens[0], "sigma": self.strong_tokens[1]},
                "correlation": self.token_correlation,
            },
            "prm": {
                **{STATE_NAMES[s]: {"a": self.score_beta[s][0], "b": self.score_beta[s][1]}
                   for s in range(3)},
                "bias_sd": self.prm_bias_sd,
                "correlation": self.prm_correlation,
            },
            "n_problems": self.n_problems,
            "seed": self.seed,
            **({} if self.deployment is None else {"deployment": _deployment_to_dict(
                self.deployment)}),
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """Serialise to the JSON schema; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> Scenario:
        """Validate a parsed JSON object and build the scenario (``ScenarioError`` if bad)."""
        _validate_dict(data, source=source)
        tok = data["tokens"]
        prm = data["prm"]
        return cls(
            name=str(data.get("name", "custom")),
            description=str(data.get("description", "")),
            p_w_mean=float(data["p_w"]["mean"]),
            p_w_concentration=_opt_float(data["p_w"].get("concentration")),
            p_s_mean=float(data["p_s"]["mean"]),
            p_s_concentration=_opt_float(data["p_s"].get("concentration")),
            difficulty_correlation=float(data.get("difficulty_correlation", 0.0)),
            step_correlation=float(data.get("step_correlation", 0.0)),
            hazard=_normalise_hazard(data["hazard"]),
            cheap_tokens=(float(tok["cheap"]["mu"]), float(tok["cheap"]["sigma"])),
            strong_tokens=(float(tok["strong"]["mu"]), float(tok["strong"]["sigma"])),
            token_correlation=float(tok.get("correlation", 0.0)),
            score_beta=tuple((float(prm[n]["a"]), float(prm[n]["b"])) for n in STATE_NAMES),
            prm_bias_sd=float(prm.get("bias_sd", 0.0)),
            prm_correlation=float(prm.get("correlation", 0.0)),
            n_problems=int(data["n_problems"]),
            seed=int(data["seed"]),
            deployment=data.get("deployment"),
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> Scenario:
        """Parse and validate JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(
                f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
            ) from None
        return cls.from_dict(data, source=source)

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- loading
def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario from a JSON file, or a built-in one by name (``"default"``,
    ``"noisy_prm"``).

    Raises
    ------
    ScenarioError
        Malformed JSON (with file:line:column) or a field that violates the schema.
    FileNotFoundError
        ``path`` does not exist and is not a built-in name.
    """
    p = Path(path)
    if not p.exists() and str(path) in BUILTIN_SCENARIOS:
        return builtin_scenario(str(path))
    text = p.read_text(encoding="utf-8")
    return Scenario.from_json(text, source=str(p))


def builtin_scenario(name: str) -> Scenario:
    """One of the scenarios shipped in ``trim_pomdp/data`` (``"default"``, ``"noisy_prm"``)."""
    if name not in BUILTIN_SCENARIOS:
        raise ScenarioError(
            f"unknown built-in scenario {name!r}; expected one of {sorted(BUILTIN_SCENARIOS)}"
        )
    res = resources.files("trim_pomdp") / "data" / BUILTIN_SCENARIOS[name]
    return Scenario.from_json(res.read_text(encoding="utf-8"), source=f"trim_pomdp/data/"
                              f"{BUILTIN_SCENARIOS[name]}")


def default_scenario() -> Scenario:
    """The built-in scenario calibrated to TRIM's MATH-500 end points.

    Always-cheap accuracy ~0.65, always-strong accuracy ~0.82 and ~462 strong tokens per
    query when every step is written by the strong model (checked by simulation in
    ``tests/test_scenario.py``); the PRM separates correct from wrong drafts with an AUROC
    of about 0.8 (informative but noisy), with per-trace bias and within-trace correlation.
    """
    return builtin_scenario("default")


# ---------------------------------------------------------------------- validation
def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(source: str, path: str, expected: str, got: Any) -> ScenarioError:
    return ScenarioError(f"{source}: field {path!r}: expected {expected}; got {got!r}")


def _need_obj(data: Any, source: str, path: str, required: set[str],
              optional: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        raise _fail(source, path, "an object", data)
    missing = sorted(required - set(data))
    if missing:
        raise ScenarioError(f"{source}: field {path + '.' + missing[0] if path else missing[0]!r}"
                            f": required field is missing")
    unknown = sorted(set(data) - required - set(optional))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        allowed = sorted(required | set(optional))
        raise ScenarioError(f"{source}: field {where!r}: unknown field (allowed: {allowed})")


def _num(data: Mapping[str, Any], key: str, source: str, path: str, *, lo: float | None = None,
         hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
         nullable: bool = False, default: Any = ...) -> None:
    full = f"{path}.{key}" if path else key
    if key not in data:
        if default is ...:
            raise ScenarioError(f"{source}: field {full!r}: required field is missing")
        return
    v = data[key]
    if v is None and nullable:
        return
    lo_b = "(" if lo_open else "["
    hi_b = ")" if hi_open else "]"
    rng = f"{lo_b}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_b}"
    expected = f"a finite number in {rng}" + (" or null" if nullable else "")
    if not _is_number(v):
        raise _fail(source, full, expected, v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _fail(source, full, expected, v)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise _fail(source, full, expected, v)


def _int(data: Mapping[str, Any], key: str, source: str, lo: int) -> None:
    v = data[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise _fail(source, key, f"an integer >= {lo}", v)


def _validate_dict(data: Any, *, source: str) -> None:
    _need_obj(data, source, "", {"format_version", "p_w", "p_s", "hazard", "tokens", "prm",
                                 "n_problems", "seed"},
              _TOP_FIELDS)
    if data["format_version"] != FORMAT_VERSION:
        raise _fail(source, "format_version", str(FORMAT_VERSION), data["format_version"])
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise _fail(source, key, "a string", data[key])
    for key in ("p_w", "p_s"):
        _need_obj(data[key], source, key, {"mean"}, {"concentration"})
        _num(data[key], "mean", source, key, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _num(data[key], "concentration", source, key, lo=0.0, lo_open=True, nullable=True,
             default=None)
    _num(data, "difficulty_correlation", source, "", lo=-1.0, hi=1.0, default=0.0)
    _num(data, "step_correlation", source, "", lo=-1.0, hi=1.0, default=0.0)
    _hazard_values(data["hazard"], source)
    tok = data["tokens"]
    _need_obj(tok, source, "tokens", {"cheap", "strong"}, {"correlation"})
    for m in ("cheap", "strong"):
        _need_obj(tok[m], source, f"tokens.{m}", {"mu", "sigma"})
        _num(tok[m], "mu", source, f"tokens.{m}", lo=-20.0, hi=20.0)
        _num(tok[m], "sigma", source, f"tokens.{m}", lo=0.0, hi=5.0)
    _num(tok, "correlation", source, "tokens", lo=-1.0, hi=1.0, default=0.0)
    prm = data["prm"]
    _need_obj(prm, source, "prm", set(STATE_NAMES), {"bias_sd", "correlation"})
    for s in STATE_NAMES:
        _need_obj(prm[s], source, f"prm.{s}", {"a", "b"})
        _num(prm[s], "a", source, f"prm.{s}", lo=0.0, lo_open=True, hi=1e4)
        _num(prm[s], "b", source, f"prm.{s}", lo=0.0, lo_open=True, hi=1e4)
    _num(prm, "bias_sd", source, "prm", lo=0.0, hi=10.0, default=0.0)
    _num(prm, "correlation", source, "prm", lo=0.0, hi=1.0, hi_open=True, default=0.0)
    _int(data, "n_problems", source, 1)
    _int(data, "seed", source, 0)
    if "deployment" in data and data["deployment"] is not None:
        dep = data["deployment"]
        _need_obj(dep, source, "deployment", set(), {"prm", "logit_scale", "logit_shift"})
        _num(dep, "logit_scale", source, "deployment", lo=0.0, lo_open=True, hi=100.0,
             default=1.0)
        _num(dep, "logit_shift", source, "deployment", lo=-20.0, hi=20.0, default=0.0)
        if dep.get("prm") is not None:
            dp = dep["prm"]
            _need_obj(dp, source, "deployment.prm", set(STATE_NAMES),
                      {"bias_sd", "correlation"})
            for s in STATE_NAMES:
                _need_obj(dp[s], source, f"deployment.prm.{s}", {"a", "b"})
                _num(dp[s], "a", source, f"deployment.prm.{s}", lo=0.0, lo_open=True, hi=1e4)
                _num(dp[s], "b", source, f"deployment.prm.{s}", lo=0.0, lo_open=True, hi=1e4)
            _num(dp, "bias_sd", source, "deployment.prm", lo=0.0, hi=10.0, default=0.0)
            _num(dp, "correlation", source, "deployment.prm", lo=0.0, hi=1.0, hi_open=True,
                 default=0.0)


_NORMALISED_DEPLOYMENT = {"prm", "bias_sd", "correlation", "logit_scale", "logit_shift"}


def _normalise_deployment(dep: Mapping[str, Any], bias_sd: float,
                          correlation: float) -> dict[str, Any]:
    """Canonical deployment section: ``prm`` (None or the three Beta (a, b) dicts), and the
    resolved ``bias_sd``, ``correlation``, ``logit_scale``, ``logit_shift``."""
    prm = dep.get("prm")
    out: dict[str, Any] = {"prm": None, "bias_sd": float(bias_sd),
                           "correlation": float(correlation),
                           "logit_scale": float(dep.get("logit_scale", 1.0)),
                           "logit_shift": float(dep.get("logit_shift", 0.0))}
    if prm is not None:
        out["prm"] = {n: {"a": float(prm[n]["a"]), "b": float(prm[n]["b"])}
                      for n in STATE_NAMES}
        out["bias_sd"] = float(prm.get("bias_sd", bias_sd))
        out["correlation"] = float(prm.get("correlation", correlation))
    return out


def _deployment_to_dict(dep: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form of a (normalised or raw) deployment section."""
    if set(dep) != _NORMALISED_DEPLOYMENT:  # raw input: validated as such afterwards
        return dict(dep) if isinstance(dep, Mapping) else dep
    out: dict[str, Any] = {"logit_scale": dep["logit_scale"], "logit_shift": dep["logit_shift"]}
    if dep["prm"] is not None:
        out["prm"] = {**dep["prm"], "bias_sd": dep["bias_sd"],
                      "correlation": dep["correlation"]}
    return out


def _normalise_hazard(h: Mapping[str, Any]) -> dict[str, Any]:
    if h["kind"] == "constant":
        return {"kind": "constant", "value": float(h["value"]),
                "min_steps": int(h.get("min_steps", 1))}
    return {"kind": "list", "values": [float(v) for v in h["values"]]}


def _hazard_values(h: Any, source: str) -> NDArray[np.float64]:
    if not isinstance(h, Mapping) or "kind" not in h:
        raise _fail(source, "hazard", 'an object with "kind": "constant" or "list"', h)
    kind = h["kind"]
    if kind == "constant":
        _need_obj(h, source, "hazard", {"kind", "value"}, {"min_steps"})
        _num(h, "value", source, "hazard", lo=0.0, hi=1.0)
        m = h.get("min_steps", 1)
        if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= MAX_STEPS:
            raise _fail(source, "hazard.min_steps", f"an integer in [1, {MAX_STEPS}]", m)
        out = np.zeros(MAX_STEPS)
        out[m - 1:] = h["value"]
    elif kind == "list":
        _need_obj(h, source, "hazard", {"kind", "values"})
        vals = h["values"]
        if not isinstance(vals, list) or len(vals) != MAX_STEPS:
            got = f"a list of length {len(vals)}" if isinstance(vals, list) else vals
            raise _fail(source, "hazard.values", f"a list of {MAX_STEPS} numbers in [0, 1]", got)
        for i, v in enumerate(vals):
            if not _is_number(v) or not 0.0 <= v <= 1.0:
                raise _fail(source, f"hazard.values[{i}]", "a finite number in [0, 1]", v)
        out = np.asarray(vals, dtype=np.float64)
    else:
        raise _fail(source, "hazard.kind", '"constant" or "list"', kind)
    out = out.copy()
    out[-1] = 1.0  # every solution ends by step 30
    return out


# ---------------------------------------------------------------------- exact expectations
def _length_pmf(h: NDArray[np.float64]) -> NDArray[np.float64]:
    surv = np.concatenate(([1.0], np.cumprod(1.0 - h)[:-1]))
    return surv * h


def _expected_power(mean: float, conc: float | None, pmf: NDArray[np.float64]) -> float:
    """``E[p^L]`` for ``p ~ Beta(mean c, (1-mean) c)`` (or ``p = mean``) and ``L ~ pmf``."""
    t = np.arange(1, MAX_STEPS + 1)
    if conc is None:
        return float(np.sum(pmf * mean ** t))
    from scipy.special import betaln

    a, b = mean * conc, (1.0 - mean) * conc
    return float(np.sum(pmf * np.exp(betaln(a + t, b) - betaln(a, b))))


def _expected_rounded_lognormal(mu: float, sigma: float) -> float:
    """``E[max(1, round(exp(mu + sigma N)))]`` exactly (sum over the integers)."""
    from scipy.stats import norm

    if sigma == 0.0:
        return float(max(1, round(math.exp(mu))))
    hi = int(math.exp(mu + 9.0 * sigma)) + 2
    k = np.arange(1, hi + 1, dtype=np.float64)
    # P(round(X) = k) = P(k - 1/2 <= X < k + 1/2); round(X) <= 1 -> 1
    upper = norm.cdf((np.log(k + 0.5) - mu) / sigma)
    lower = np.concatenate(([0.0], upper[:-1]))
    return float(np.sum(k * (upper - lower)) + hi * (1.0 - upper[-1]))


def expected_end_points(scenario: Scenario) -> dict[str, float]:
    """Exact expected end points of a scenario (no simulation).

    * ``cheap_accuracy = E[p_w^L]`` and ``strong_accuracy = E[p_s^L]`` (every step must be
      right; the length ``L`` is independent of the accuracies), with ``E[p^t] =
      B(a + t, b) / B(a, b)`` for ``p ~ Beta(a, b)`` -- the copula only couples p_w and
      p_s, not their marginals;
    * ``strong_tokens_always_strong = E[L] E[max(1, round(exp(mu_s + sigma_s N)))]``;
    * ``cheap_tokens_always_cheap`` likewise; ``mean_length = E[L]``.
    """
    pmf = _length_pmf(scenario.hazard_array())
    el = float(np.sum(pmf * np.arange(1, MAX_STEPS + 1)))
    return {
        "cheap_accuracy": _expected_power(scenario.p_w_mean, scenario.p_w_concentration, pmf),
        "strong_accuracy": _expected_power(scenario.p_s_mean, scenario.p_s_concentration, pmf),
        "mean_length": el,
        "strong_tokens_always_strong": el * _expected_rounded_lognormal(*scenario.strong_tokens),
        "cheap_tokens_always_cheap": el * _expected_rounded_lognormal(*scenario.cheap_tokens),
    }
