r"""The TRIM loop against real endpoints, one episode (:func:`run_episode`).

Per step ``t = 1, 2, ...`` of an episode:

1. the cheap model drafts the next step (``cheap.generate_step``);
2. the PRM scores the prefix ending with the draft; the draft's score is the last entry;
3. the router decides ``router.step(score, draft_tokens, is_final)`` ->
   ``"continue"`` (keep the draft) or ``"regenerate"`` (the strong model rewrites this step
   from the same prefix);
4. the executed step is appended; the episode ends after a final step or at ``max_steps``
   (step ``max_steps`` is always reported to the router as final).

Failures.  Each request is retried with backoff (see :class:`EndpointConfig`), including
HTTP 200 answers whose body is unusable (cut off, not JSON, a field missing, a token count
that is negative or not an integer, text that is not UTF-8, PRM rows of the wrong length or
not finite): every value taken from a response is checked where it is parsed.  When the
strong model still fails, ``fallback="keep_cheap"`` keeps the draft (and calls
``router.executed("continue")`` so a belief-tracking router filters with the action that was
actually executed), ``fallback="abort"`` ends the episode with ``status="aborted"``; either way
the step records ``"fallback"`` and the error.  A cheap-model or PRM failure ends the episode
with :class:`EpisodeError` (the partial episode is attached and, in a batch, written to the
``.errors.jsonl`` side file; the problem is retried on resume).  Except when the server says
the request no longer fits the model's context window (HTTP 400, :func:`context_exceeded`):
retrying could never help, so the episode ends with ``status="aborted"`` (no answer; counted
as wrong) and is written with the finished ones; if that happens before any step was executed
(the problem alone does not fit) it is an :class:`EpisodeError` like the others, since a trace
needs at least one step.

When the cheap draft was final and is regenerated but the strong step is not final, the strong
model finishes the solution on its own (steps with ``"decision": null``): the router's episode
ended with that final step, so it has nothing more to decide.  If the strong model fails there
(after its retries), there is no draft to keep, so with ``fallback="keep_cheap"`` the episode is
an :class:`EpisodeError` (errors file, redone on the next run) rather than a result; with
``fallback="abort"`` it ends as ``"aborted"``, as that fallback says.  An episode is recorded as
a result only when every call in it succeeded or the documented fallback ran.

The resumable async batch of episodes is :mod:`trim_pomdp.serving.runner`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from trim_pomdp.errors import (
    EpisodeError,
)
from trim_pomdp.serving.endpoints import (
    MAX_TOKENS_VALUE,
    EndpointError,
    GeneratedStep,
    ResponseFormatError,
    StepGenerator,
    check_text,
)
from trim_pomdp.serving.prm import StepScorer
from trim_pomdp.serving.problems import Problem
from trim_pomdp.serving.records import (
    EpisodeResult,
    _clip,
)
from trim_pomdp.steps import MAX_STEPS

__all__ = ["FALLBACKS", "LABEL_MODES", "RouterLike", "context_exceeded", "run_episode"]

FALLBACKS = ("keep_cheap", "abort")
LABEL_MODES = ("outcome", "none")


class RouterLike(Protocol):
    def reset(self) -> None: ...

    def step(self, prm_score: float, tokens: int, is_final: bool) -> str: ...

    def executed(self, action: str) -> None: ...


# How servers word "the prompt plus max_tokens do not fit": vLLM ("This model's maximum
# context length is 4096 tokens...", "...longer than the maximum model length of 4096...
# `max_model_len`...") and OpenAI (code "context_length_exceeded").
_CONTEXT_EXCEEDED = re.compile(
    r"maximum context length|context_length_exceeded|maximum model length|max_model_len",
    re.IGNORECASE,
)


def context_exceeded(exc: BaseException) -> bool:
    """True when ``exc`` is a server's HTTP 400 saying the request does not fit the model's
    context window (retrying cannot help: the solution so far is too long)."""
    return (
        isinstance(exc, EndpointError)
        and exc.status == 400
        and _CONTEXT_EXCEEDED.search(str(exc)) is not None
    )


def _check_step(step: Any, who: str) -> GeneratedStep:
    """What any :class:`StepGenerator` returned, checked before it reaches the router or a
    trace (the HTTP models check their responses already; this covers user generators)."""
    where = f"{who} model"
    if not isinstance(step, GeneratedStep):
        raise ResponseFormatError(
            f"{where} returned {type(step).__name__}; expected a GeneratedStep"
        )
    check_text(step.text, "step text", where)
    t = step.tokens
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TOKENS_VALUE:
        raise ResponseFormatError(
            f"{where}: step tokens is {t!r:.60}; expected an integer in [0, {MAX_TOKENS_VALUE}]"
        )
    return step


def _belief(router: Any) -> list[float] | None:
    b = getattr(router, "belief", None)
    if b is None:
        return None
    return [float(x) for x in b]


async def run_episode(
    problem: Problem | str,
    router: RouterLike,
    cheap: StepGenerator,
    strong: StepGenerator,
    prm: StepScorer,
    max_steps: int = MAX_STEPS,
    *,
    checker: Callable[[str, str | None], bool | None] | None = None,
    fallback: str = "keep_cheap",
    label_steps: str = "outcome",
    on_cancel: Callable[[EpisodeResult], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> EpisodeResult:
    """Run the TRIM loop on one problem (coroutine).

    Parameters
    ----------
    problem : Problem or str
        A plain string gets ``id = "0"`` and no reference answer.
    router : object with ``reset()``, ``step(prm_score, tokens, is_final) -> str``,
        ``executed(action)`` and optionally ``belief``; reset here before the first step.
    cheap, strong : StepGenerator
        E.g. :class:`CompletionModel` / :class:`ChatModel`.
    prm : StepScorer
        E.g. :class:`VLLMPRMScorer` / :class:`CallableScorer`.
    max_steps : int
        Step cap (30 in TRIM); step ``max_steps`` is final.
    checker : callable, optional
        ``checker(solution_text, reference) -> bool | None`` setting ``final_correct``
        (e.g. :class:`MathAnswerChecker`); without one ``final_correct`` is None.
    fallback : {"keep_cheap", "abort"}
        What to do when the strong model fails after its retries.
    label_steps : {"outcome", "none"}
        ``"outcome"``: when the final answer is correct every step is labelled ``"correct"``
        (outcome supervision; a wrong answer does not say which step was wrong, so its steps
        stay unlabelled); ``"none"``: no step labels.
    on_cancel : callable, optional
        Called with the partial result (``status="interrupted"``) if the episode is cancelled
        (e.g. Ctrl-C), before the cancellation propagates; the batch runner uses it to keep
        the steps already paid for.
    on_step : callable, optional
        Called with each executed step's record (the dict that goes into ``steps``) as soon
        as the step is executed, before the next request is made; the server streams steps
        with it.  A step that is not executed (``fallback="abort"``) is not reported.  It
        runs on the event loop: it must not block (e.g. put the step on a queue).

    Returns
    -------
    EpisodeResult

    Raises
    ------
    EpisodeError
        The cheap model or the PRM failed after its retries (partial result attached).
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}; got {fallback!r}")
    if label_steps not in LABEL_MODES:
        raise ValueError(f"label_steps must be one of {LABEL_MODES}; got {label_steps!r}")
    if not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be an int in [1, {MAX_STEPS}]; got {max_steps!r}")
    if isinstance(problem, str):
        problem = Problem(id="0", text=problem)
    res = EpisodeResult(
        id=problem.id,
        problem=problem.text,
        model=f"routed:{cheap.name}+{strong.name}",
        reference=problem.answer,
        problem_hash=problem.content_hash,
    )
    t_start = time.perf_counter()
    perf = time.perf_counter
    router.reset()
    texts: list[str] = []  # executed steps: the prefix every model continues
    steps = res.steps
    try:
        t = 0
        done = False
        while not done and t < max_steps:
            t += 1
            timing: dict[str, float] = {}
            try:
                draft = _check_step(await cheap.generate_step(problem.text, texts), "cheap")
            except (EndpointError, ResponseFormatError) as exc:
                if steps and context_exceeded(exc):
                    res.status = "aborted"
                    res.error = f"step {t}: cheap model: context length exceeded: {exc}"
                    break
                raise EpisodeError(
                    f"problem {problem.id!r} step {t}: cheap model: {exc}", res
                ) from exc
            timing["cheap"] = draft.latency_s
            res.cheap_tokens += draft.tokens
            t0 = perf()
            try:
                scores = await prm.score(problem.text, texts + [draft.text])
            except (EndpointError, ResponseFormatError) as exc:
                if steps and context_exceeded(exc):
                    res.status = "aborted"
                    res.error = f"step {t}: PRM: context length exceeded: {exc}"
                    break
                raise EpisodeError(f"problem {problem.id!r} step {t}: PRM: {exc}", res) from exc
            timing["prm"] = perf() - t0
            score = scores[-1]
            # A step-reward model re-scores the whole prefix: fill in scores of strong steps,
            # which were executed without being scored.
            if len(scores) == len(texts) + 1:
                for prev, sc in zip(steps, scores, strict=False):  # one fewer step than scores
                    if prev["prm_score"] is None:
                        prev["prm_score"] = sc
            is_final = draft.is_final or t == max_steps

            t0 = perf()
            decision = router.step(score, draft.tokens, is_final)
            belief = _belief(router)
            router_dt = perf() - t0
            if decision not in ("continue", "regenerate"):
                raise ValueError(
                    f"router.step returned {decision!r}; expected 'continue' or 'regenerate'"
                )
            rec: dict[str, Any] = {
                "text": draft.text,
                "prm_score": score,
                "tokens": draft.tokens,
                "label": None,
                "writer": "cheap",
                "decision": decision,
                "belief": belief,
                "cheap_tokens": draft.tokens,
                "strong_tokens": 0,
                "is_final": is_final,
                "timing_s": timing,
            }
            if draft.tokens_estimated:
                rec["tokens_estimated"] = True
            strong_unfinished = False
            if decision == "regenerate":
                try:
                    s = _check_step(await strong.generate_step(problem.text, texts), "strong")
                except (EndpointError, ResponseFormatError) as exc:
                    res.n_fallbacks += 1
                    rec["fallback"] = fallback
                    rec["error"] = _clip(str(exc))
                    if fallback == "abort":
                        rec["executed"] = False
                        steps.append(rec)
                        res.status = "aborted"
                        res.error = str(exc)
                        break
                    t1 = perf()
                    router.executed("continue")  # the belief follows what was executed
                    router_dt += perf() - t1
                else:
                    res.n_regenerations += 1
                    res.strong_tokens += s.tokens
                    timing["strong"] = s.latency_s
                    rec.update(
                        text=s.text,
                        prm_score=None,
                        tokens=s.tokens,
                        writer="strong",
                        strong_tokens=s.tokens,
                        draft_text=draft.text,
                        draft_prm_score=score,
                        is_final=s.is_final or t == max_steps,
                    )
                    if s.tokens_estimated:
                        rec["tokens_estimated"] = True
                    strong_unfinished = is_final and not s.is_final
            timing["router"] = router_dt
            res.router_s += router_dt
            steps.append(rec)
            texts.append(rec["text"])
            if on_step is not None:
                on_step(rec)
            done = rec["is_final"] or strong_unfinished
            if strong_unfinished:
                # the router's episode is over (it saw a final draft); the strong model
                # finishes the solution it started rewriting
                while t < max_steps:
                    t += 1
                    try:
                        s = _check_step(
                            await strong.generate_step(problem.text, texts), "strong"
                        )
                    except (EndpointError, ResponseFormatError) as exc:
                        if context_exceeded(exc):
                            res.status = "aborted"
                            res.error = f"step {t}: strong model: context length exceeded: {exc}"
                            break
                        if fallback == "abort":
                            res.n_fallbacks += 1
                            res.status = "aborted"
                            res.error = f"strong model failed while finishing: {exc}"
                            break
                        # no draft to keep: a fault here (transient as a rule) must not cost
                        # the problem; the errors file gets it and the next run redoes it
                        raise EpisodeError(
                            f"problem {problem.id!r} step {t}: strong model failed while "
                            f"finishing the solution: {exc}",
                            res,
                        ) from exc
                    res.strong_tokens += s.tokens
                    steps.append(
                        {
                            "text": s.text,
                            "prm_score": None,
                            "tokens": s.tokens,
                            "label": None,
                            "writer": "strong",
                            "decision": None,
                            "belief": None,
                            "cheap_tokens": 0,
                            "strong_tokens": s.tokens,
                            "is_final": s.is_final or t == max_steps,
                            "timing_s": {"strong": s.latency_s},
                        }
                    )
                    texts.append(s.text)
                    if on_step is not None:
                        on_step(steps[-1])
                    if s.is_final:
                        break
    except EpisodeError as exc:
        res.status = "error"
        res.error = str(exc)
        res.wall_s = time.perf_counter() - t_start
        raise
    except asyncio.CancelledError:
        res.status = "interrupted"
        res.error = "cancelled"
        res.wall_s = time.perf_counter() - t_start
        if on_cancel is not None:
            on_cancel(res)
        raise
    if res.status == "done" and checker is not None:
        res.final_correct = checker(res.text, problem.answer)
    if steps:
        from trim_pomdp.serving.checker import extract_boxed

        res.answer = extract_boxed(steps[-1]["text"]) or extract_boxed(res.text)
    if label_steps == "outcome" and res.final_correct is True:
        for rec in steps:
            rec["label"] = "correct"
    res.wall_s = time.perf_counter() - t_start
    return res
