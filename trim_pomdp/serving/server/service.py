"""The serving logic, callable without HTTP: one request -> one TRIM episode.

:class:`RoutingService` owns the shared endpoint clients (one connection pool per model for
every request), a :class:`RouterFactory` that builds a fresh router per request for the
request's budget, the concurrency limit, the Prometheus metrics and the optional JSONL trace
log.  :meth:`RoutingService.route` runs :func:`trim_pomdp.serving.run_episode` -- the same
loop ``trim-pomdp route`` runs -- and returns a :class:`ServedEpisode` with the text, the
OpenAI ``usage`` and the ``trim`` extension object; errors are :class:`APIError` with the
HTTP status and OpenAI error fields.

Token accounting (all from the models' ``usage``, estimated as ``ceil(len/4)`` when a server
sends none, flagged by ``trim.tokens_estimated``):

* ``usage.completion_tokens`` = tokens of the returned text = the sum over executed steps;
* ``trim.cheap_tokens`` = every token the cheap model wrote (drafts kept and drafts replaced),
  ``trim.strong_tokens`` = every token the strong model wrote, ``trim.discarded_tokens`` = the
  replaced drafts; so ``completion_tokens = cheap_tokens + strong_tokens - discarded_tokens``;
* ``usage.prompt_tokens`` = the prompt tokens the cheap model reported for the first step
  (the problem in its prompt template; later steps re-send it with the steps so far).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trim_pomdp.errors import TrimPomdpError
from trim_pomdp.serving import (
    EndpointError,
    EpisodeError,
    EpisodeResult,
    GeneratedStep,
    Problem,
    ResponseFormatError,
    TraceWriter,
    context_exceeded,
    run_episode,
)
from trim_pomdp.serving.server.protocol import MAX_STEPS, APIError, RouteRequest, new_id

__all__ = ["RouterFactory", "RoutingService", "ServeMetrics", "ServedEpisode"]

log = logging.getLogger("trim_pomdp.serve")

ROLES = ("cheap", "strong", "prm")
# request latency buckets (s): from a fast fake to a 30-step episode on a slow model
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


# ---- routers ---------------------------------------------------------------------------------


class RouterFactory:
    """Builds one router per request.

    ``RouterFactory.from_bank(bank, default_budget)`` for any bank :func:`trim_pomdp.load_bank`
    reads (a :class:`~trim_pomdp.PolicyBank`: a :class:`~trim_pomdp.Router` on the policy
    solved for the nearest lambda; an RL bank: a fresh ``RLRouter`` sharing the trained
    weights); a request's budget must lie in ``[min(lambdas), max(lambdas)]``.
    ``RouterFactory.threshold(k)``: TRIM-Thr with a fixed threshold (no per-request budget).
    """

    def __init__(self, make: Callable[[float | None], tuple[Any, float | None]], *, name: str,
                 budget_range: tuple[float, float] | None, default_budget: float | None) -> None:
        self._make = make
        self.name = name
        self.budget_range = budget_range
        self.default_budget = default_budget
        self.make(None)  # build one now: compiles the router kernel before the first request

    @classmethod
    def from_bank(cls, bank: Any, default_budget: float, *, name: str | None = None
                  ) -> RouterFactory:
        lambdas = [float(v) for v in bank.lambdas]
        if not lambdas:
            raise ValueError("the policy bank holds no policies")
        lo, hi = min(lambdas), max(lambdas)
        if not (isinstance(default_budget, (int, float)) and lo <= default_budget <= hi):
            raise ValueError(
                f"budget {default_budget!r} is outside the bank's lambdas [{lo:g}, {hi:g}]")
        if hasattr(bank, "router"):  # an RL bank (TRIM-Agg / TRIM-Seq)
            from trim_pomdp.rl.agents import RLRouter

            def make_rl(lam: float) -> tuple[Any, float]:
                r = bank.router(lam)
                # a router keeps its episode's state; the weights are shared
                return RLRouter(r.kind, r.params, lam=r.lam, token_scale=r.token_scale,
                                metadata=r.metadata), float(r.lam)

            family = f"trim-{bank.kind}"
            maker = make_rl
        else:
            from trim_pomdp import Router

            def make_pomdp(lam: float) -> tuple[Any, float]:
                policy = bank.nearest(lam)
                return Router(policy), float(policy.lam)

            family = getattr(bank.model, "FAMILY_NAME", "trim-pomdp")
            maker = make_pomdp
        default = float(default_budget)
        return cls(lambda b: maker(default if b is None else b), name=name or family,
                   budget_range=(lo, hi), default_budget=default)

    @classmethod
    def threshold(cls, k: float) -> RouterFactory:
        from trim_pomdp.baselines import ThresholdPolicy

        return cls(lambda b: (ThresholdPolicy(k), None), name=f"threshold(k={k:g})",
                   budget_range=None, default_budget=None)

    def check_budget(self, budget: float | None) -> None:
        if budget is None:
            return
        if self.budget_range is None:
            raise APIError(400, f"this server routes with {self.name}, which takes no budget; "
                           "trim.budget needs a policy bank (--policy)", param="trim.budget",
                           code="budget_out_of_range")
        lo, hi = self.budget_range
        if not (math.isfinite(budget) and lo <= budget <= hi):
            raise APIError(400, f"trim.budget must be in [{lo:g}, {hi:g}] (the policy bank's "
                           f"lambdas); got {budget!r}", param="trim.budget",
                           code="budget_out_of_range")

    def make(self, budget: float | None) -> tuple[Any, float | None]:
        """``(router, lambda actually used)`` for ``budget`` (None: the default)."""
        return self._make(budget)


# ---- metrics ---------------------------------------------------------------------------------


class ServeMetrics:
    """Prometheus metrics in a registry of their own (one per service, so that several
    services in one process, as in the tests, do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("trim_requests", "HTTP requests answered", ["route", "status"],
                                registry=r)
        self.duration = Histogram("trim_request_duration_seconds",
                                  "Wall time of routed requests", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram("trim_upstream_latency_seconds",
                                  "Latency of successful calls to each endpoint (retries "
                                  "included)", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("trim_upstream_errors",
                                       "Calls that failed after their retries", ["endpoint"],
                                       registry=r)
        self.tokens = Counter("trim_tokens", "Tokens written by each model (every call, "
                              "failed episodes included)", ["model"],
                              registry=r)
        self.strong_fraction = Gauge("trim_strong_token_fraction",
                                     "strong / (cheap + strong) tokens over all episodes",
                                     registry=r)
        self.regenerations = Counter("trim_regenerations", "Steps rewritten by the strong model",
                                     registry=r)
        self.fallbacks = Counter("trim_fallbacks", "Strong-model failures handled by the "
                                 "fallback", registry=r)
        self.steps = Counter("trim_steps", "Executed steps by writer", ["writer"], registry=r)
        self.episodes = Counter("trim_episodes", "Finished episodes by status", ["status"],
                                registry=r)
        self.errors = Counter("trim_errors", "Requests answered with an error (or cancelled)",
                              ["type"], registry=r)
        self.in_flight = Gauge("trim_episodes_in_flight", "Episodes running", registry=r)
        self.waiting = Gauge("trim_requests_waiting", "Requests waiting for a slot", registry=r)
        for role in ROLES:  # export the series before the first call
            self.upstream.labels(role)
            self.upstream_errors.labels(role)
        for m in ("cheap", "strong"):
            self.tokens.labels(m)
            self.steps.labels(m)
        self._cheap = self._strong = 0
        self._token_children = {m: self.tokens.labels(m) for m in ("cheap", "strong")}

    def add_tokens(self, model: str, tokens: int) -> None:
        """Count what a model wrote, per call: failed and cancelled episodes cost too."""
        if model == "cheap":
            self._cheap += tokens
        else:
            self._strong += tokens
        self._token_children[model].inc(tokens)
        total = self._cheap + self._strong
        self.strong_fraction.set(self._strong / total if total else 0.0)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# ---- per-request endpoint views ------------------------------------------------------------


class _Recorder:
    """A per-request view of a shared model or scorer: counts calls, keeps what the episode
    needs for the response (the first prompt's tokens, the last step, which call failed)
    and feeds the latency histogram.  Closing it does not close the shared client."""

    def __init__(self, inner: Any, role: str, metrics: ServeMetrics | None) -> None:
        self.inner = inner
        self.role = role
        self.name = inner.name
        self.metrics = metrics
        self.calls = 0
        self.first: GeneratedStep | None = None
        self.last: GeneratedStep | None = None
        self.failure: BaseException | None = None
        # the labelled children, looked up once per request rather than once per call
        self._latency = metrics.upstream.labels(role) if metrics is not None else None

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(self.role).inc()

    async def generate_step(self, problem: str, steps: Sequence[str]) -> GeneratedStep:
        self.calls += 1
        try:
            g = await self.inner.generate_step(problem, steps)
        except (EndpointError, ResponseFormatError) as exc:
            self._failed(exc)
            raise
        if self.first is None:
            self.first = g
        self.last = g
        if self.metrics is not None:
            self._latency.observe(g.latency_s)
            self.metrics.add_tokens(self.role, g.tokens)
        return g

    async def score(self, problem: str, steps: Sequence[str]) -> list[float]:
        self.calls += 1
        t0 = time.perf_counter()
        try:
            out = await self.inner.score(problem, steps)
        except (EndpointError, ResponseFormatError) as exc:
            self._failed(exc)
            raise
        if self.metrics is not None:
            self._latency.observe(time.perf_counter() - t0)
        return list(out)

    async def aclose(self) -> None:
        return None


# ---- the service -----------------------------------------------------------------------------


@dataclass
class ServedEpisode:
    """What one request produced (``episode`` is the runner's record, as logged)."""

    id: str
    model: str
    text: str
    finish_reason: str
    usage: dict[str, int]
    trim: dict[str, Any]
    episode: EpisodeResult
    created: int = field(default_factory=lambda: int(time.time()))


def step_info(rec: dict[str, Any], index: int) -> dict[str, Any]:
    """The per-step entry of ``trim.steps`` (and of each streamed chunk's ``trim``)."""
    return {
        "index": index,
        "writer": rec["writer"],
        "decision": rec["decision"],
        "tokens": rec["tokens"],
        "draft_prm_score": rec.get("draft_prm_score", rec["prm_score"]),
        "draft_tokens": rec["cheap_tokens"],
        "fallback": rec.get("fallback"),
        "belief": rec["belief"],
    }


class RoutingService:
    """Routes OpenAI-style requests through the TRIM loop (module docstring).

    Parameters
    ----------
    cheap, strong : StepGenerator
        Shared step generators (e.g. :class:`~trim_pomdp.serving.CompletionModel`); their
        connection pools serve every request.
    prm : StepScorer
    routers : RouterFactory
    served_model : str
        The model name clients send (``/v1/models`` lists it).
    max_steps : int
        Default step cap per episode (a request may lower or raise it up to 30).
    fallback : {"keep_cheap", "abort"}
        When the strong model fails after its retries (see ``run_episode``); with "abort"
        the request gets a 502 naming the strong endpoint.
    max_concurrency : int
        Episodes in flight; further requests wait for a slot.
    max_waiting : int
        Requests allowed to wait; beyond that the answer is 429 (``server_busy``).
    log_path : path, optional
        Append every finished episode to this JSONL file in the trace format (``trim-pomdp
        fit`` reads it); failed and cancelled ones go to ``<log_path>.errors.jsonl``.
        Lines are flushed per episode but not fsync'ed (an fsync would stall every request on
        the event loop).
    metrics : bool
        Keep Prometheus metrics (needs ``prometheus_client``, the ``serve`` extra).
    """

    def __init__(
        self,
        cheap: Any,
        strong: Any,
        prm: Any,
        routers: RouterFactory,
        *,
        served_model: str = "trim",
        max_steps: int = MAX_STEPS,
        fallback: str = "keep_cheap",
        max_concurrency: int = 64,
        max_waiting: int = 1024,
        log_path: str | None = None,
        metrics: bool = True,
    ) -> None:
        if not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS:
            raise ValueError(f"max_steps must be an int in [1, {MAX_STEPS}]; got {max_steps!r}")
        if fallback not in ("keep_cheap", "abort"):
            raise ValueError(f"fallback must be 'keep_cheap' or 'abort'; got {fallback!r}")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1; got {max_concurrency!r}")
        if not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be an int >= 0; got {max_waiting!r}")
        if not served_model or ":" in served_model:
            raise ValueError(
                f"served_model must be non-empty without ':' (it separates the budget "
                f"suffix); got {served_model!r}")
        self.cheap, self.strong, self.prm = cheap, strong, prm
        self.routers = routers
        self.served_model = served_model
        self.max_steps = max_steps
        self.fallback = fallback
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self.metrics = ServeMetrics() if metrics else None
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self.in_flight = 0
        self.log_path = log_path
        self._log = TraceWriter(log_path, fsync=False) if log_path else None
        self._err_log = (TraceWriter(str(log_path) + ".errors.jsonl", fsync=False,
                                     validate=False) if log_path else None)
        self.created = int(time.time())

    # ---- discovery ----------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """The ``data`` of ``GET /v1/models``."""
        info: dict[str, Any] = {
            "cheap": self.cheap.name, "strong": self.strong.name, "prm": self.prm.name,
            "policy": self.routers.name, "default_budget": self.routers.default_budget,
            "budget_range": (list(self.routers.budget_range)
                             if self.routers.budget_range else None),
            "max_steps": self.max_steps,
        }
        return [{"id": self.served_model, "object": "model", "created": self.created,
                 "owned_by": "trim-pomdp", "trim": info}]

    def resolve_model(self, req: RouteRequest) -> float | None:
        """Check ``req.model`` and return the request's budget (None: the default).

        ``"<served>:<lambda>"`` carries a budget; with ``trim.budget`` too they must agree.
        """
        name, budget = req.model, req.budget
        if name != self.served_model:
            base, sep, suffix = name.rpartition(":")
            if sep and base == self.served_model:
                try:
                    b = float(suffix)
                except ValueError:
                    raise APIError(400, f"model {name!r}: the suffix after ':' must be a "
                                   f"budget (a number); got {suffix!r}", param="model",
                                   code="budget_out_of_range") from None
                if budget is not None and budget != b:
                    raise APIError(400, f"model {name!r} names budget {b:g} but trim.budget "
                                   f"is {budget:g}", param="trim.budget",
                                   code="budget_out_of_range")
                budget = b
            else:
                raise APIError(404, f"The model {name!r} does not exist; this server serves "
                               f"{self.served_model!r} (optionally "
                               f"'{self.served_model}:<budget>')", param="model",
                               code="model_not_found")
        self.routers.check_budget(budget)
        return budget

    # ---- one request --------------------------------------------------------------------
    async def route(
        self,
        req: RouteRequest,
        on_step: Callable[[dict[str, Any], int], None] | None = None,
        *,
        request_id: str | None = None,
    ) -> ServedEpisode:
        """Run one episode for ``req`` (coroutine).

        ``on_step(step_record, index)`` is called for each executed step as it is executed
        (the app streams with it).  Cancelling the coroutine (the client went away) cancels
        the upstream calls in flight and logs the partial episode as ``interrupted``.

        Raises
        ------
        APIError
            404 unknown model, 400 bad budget / the problem does not fit the context window,
            429 too many waiting requests, 502 an upstream endpoint failed (``endpoint``
            names it), 500 the router failed.
        """
        budget = self.resolve_model(req)
        max_steps = req.max_steps or self.max_steps
        rid = request_id or new_id(req.kind)
        m = self.metrics
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        if self._slots.locked():
            if self._waiting >= self.max_waiting:
                raise APIError(429, f"server busy: {self.max_concurrency} episodes running and "
                               f"{self._waiting} waiting; retry later", type="rate_limit_error",
                               code="server_busy")
        self._waiting += 1
        if m is not None:
            m.waiting.inc()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            if m is not None:
                m.waiting.dec()
        self.in_flight += 1
        if m is not None:
            m.in_flight.inc()
        try:
            return await self._run(req, budget, max_steps, rid, on_step)
        finally:
            self.in_flight -= 1
            if m is not None:
                m.in_flight.dec()
            self._slots.release()

    async def _run(self, req: RouteRequest, budget: float | None, max_steps: int, rid: str,
                   on_step: Callable[[dict[str, Any], int], None] | None) -> ServedEpisode:
        m = self.metrics
        router, lam = self.routers.make(budget)
        cheap = _Recorder(self.cheap, "cheap", m)
        strong = _Recorder(self.strong, "strong", m)
        prm = _Recorder(self.prm, "prm", m)
        executed = 0

        def step_cb(rec: dict[str, Any]) -> None:
            nonlocal executed
            executed += 1
            if on_step is not None:
                on_step(rec, executed - 1)

        def keep_partial(r: EpisodeResult) -> None:
            self._write(self._err_log, r)
            if m is not None:
                m.errors.labels("cancelled").inc()

        try:
            res = await run_episode(
                Problem(id=rid, text=req.problem), router, cheap, strong, prm, max_steps,
                fallback=self.fallback, label_steps="none", on_cancel=keep_partial,
                on_step=step_cb,
            )
        except EpisodeError as exc:
            self._write(self._err_log, exc.result)
            raise self._upstream_error(exc, (cheap, strong, prm)) from None
        except (ValueError, TrimPomdpError) as exc:
            # the router refused the evidence (e.g. a zero-probability observation)
            log.exception("request %s: routing failed", rid)
            if m is not None:
                m.errors.labels("internal").inc()
            raise APIError(500, f"routing failed: {type(exc).__name__}: {exc}",
                           type="server_error", code="routing_error") from None
        self._write(self._log, res)
        if m is not None:
            m.episodes.labels(res.status).inc()
            m.regenerations.inc(res.n_regenerations)
            m.fallbacks.inc(res.n_fallbacks)
            for rec in res.steps:
                if rec.get("executed", True):
                    m.steps.labels(rec["writer"]).inc()
        failed_strong = strong.failure is not None and res.status == "aborted"
        if failed_strong:
            exc = strong.failure
            if m is not None:
                m.errors.labels("upstream").inc()
            raise APIError(502, f"upstream strong model ({strong.name}) failed: {exc}",
                           type="upstream_error", code=_code(exc), endpoint="strong")
        return self._served(req, rid, res, lam, (cheap, strong, prm))

    def _upstream_error(self, exc: EpisodeError, recs: Sequence[_Recorder]) -> APIError:
        failed = next((r for r in recs if r.failure is exc.__cause__), None)
        cause = exc.__cause__
        if failed is None:  # a step the runner refused after the call: its message names it
            text = str(exc)
            role = "prm" if ": PRM: " in text else "strong" if "strong model" in text else "cheap"
            failed = next(r for r in recs if r.role == role)
        if cause is not None and context_exceeded(cause):
            return APIError(400, f"the problem does not fit the {failed.role} model's context "
                            f"window: {cause}", param="messages",
                            code="context_length_exceeded")
        if self.metrics is not None:
            self.metrics.errors.labels("upstream").inc()
        return APIError(502, f"upstream {failed.role} model ({failed.name}) failed: "
                        f"{cause if cause is not None else exc}", type="upstream_error",
                        code=_code(cause), endpoint=failed.role)

    def _served(self, req: RouteRequest, rid: str, res: EpisodeResult, lam: float | None,
                recs: Sequence[_Recorder]) -> ServedEpisode:
        cheap, strong, prm = recs
        done = [s for s in res.steps if s.get("executed", True)]
        text = "\n\n".join(s["text"] for s in done)
        completion = sum(int(s["tokens"]) for s in done)
        discarded = sum(int(s["cheap_tokens"]) for s in done if s["writer"] == "strong")
        estimated = any(s.get("tokens_estimated") for s in res.steps)
        first = cheap.first
        if first is not None and first.prompt_tokens is not None:
            prompt = first.prompt_tokens
        else:  # the documented ~4 characters per token estimate
            prompt = -(-len(req.problem) // 4)
            estimated = True
        last = (strong if done and done[-1]["writer"] == "strong" else cheap).last
        natural_end = last is not None and last.is_final
        finish = "stop" if res.status == "done" and natural_end else "length"
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        trim: dict[str, Any] = {
            "policy": self.routers.name,
            "budget": lam,
            "status": res.status,
            "cheap_tokens": res.cheap_tokens,
            "strong_tokens": res.strong_tokens,
            "discarded_tokens": discarded,
            "regenerations": res.n_regenerations,
            "fallbacks": res.n_fallbacks,
            "final_belief": next((s["belief"] for s in reversed(res.steps)
                                  if s["belief"] is not None), None),
            "answer": res.answer,
            "calls": {r.role: r.calls for r in recs},
            "steps": [step_info(s, i) for i, s in enumerate(done)],
            "tokens_estimated": estimated,
            "ignored": list(req.ignored),
            "error": res.error,
            "wall_s": round(res.wall_s, 6),
        }
        return ServedEpisode(id=rid, model=req.model, text=text, finish_reason=finish,
                             usage=usage, trim=trim, episode=res)

    def _write(self, writer: TraceWriter | None, res: EpisodeResult) -> None:
        if writer is None or not res.steps:
            return  # a trace needs at least one step
        try:
            writer.write(res.to_trace())
        except Exception:  # the answer must still reach the client; say so in the log
            log.exception("could not log episode %s to %s", res.id, writer.path)
            if self.metrics is not None:
                self.metrics.errors.labels("log").inc()

    async def aclose(self) -> None:
        """Close the log files and the endpoints' connection pools."""
        for w in (self._log, self._err_log):
            if w is not None:
                w.close()
        seen: list[Any] = []
        for ep in (self.cheap, self.strong, self.prm):
            if all(ep is not s for s in seen):
                seen.append(ep)
                await ep.aclose()


def _code(exc: BaseException | None) -> str:
    return "upstream_bad_response" if isinstance(exc, ResponseFormatError) else (
        "upstream_unavailable")

