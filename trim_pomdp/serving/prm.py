"""Process-reward-model scorers: vLLM's pooling endpoint, or any Python callable.

A scorer maps ``(problem, steps)`` to one score in [0, 1] per step (the PRM's probability that
the step is correct given the problem and the steps before it).  The router only consumes the
last one, but a step-reward model scores every step of the prefix in one forward pass, so the
runner also uses the earlier entries (e.g. to score a strong model's replacement step for free
on the next call).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from trim_pomdp.serving.endpoints import (
    QWEN_MATH_SYSTEM,
    EndpointConfig,
    EndpointConfigError,
    HttpEndpoint,
    ResponseFormatError,
)

__all__ = ["CallableScorer", "StepScorer", "VLLMPRMScorer", "QWEN_PRM_TEMPLATE"]

# Qwen2.5-Math-PRM's input: the Qwen chat format with the assistant turn holding the steps, each
# followed by the step separator token <extra_0> (the model's classification position).
QWEN_PRM_TEMPLATE = (
    "<|im_start|>system\n" + QWEN_MATH_SYSTEM + "<|im_end|>\n"
    "<|im_start|>user\n{problem}<|im_end|>\n"
    "<|im_start|>assistant\n{steps}<|im_end|>\n"
)


@runtime_checkable
class StepScorer(Protocol):
    """Anything that scores the steps of a partial solution."""

    name: str

    async def score(self, problem: str, steps: Sequence[str]) -> list[float]: ...

    async def aclose(self) -> None: ...


def _check_scores(values: Sequence[float], n_steps: int, where: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ResponseFormatError(f"{where}: score {i} is {v!r}; expected a float in [0, 1]")
        v = float(v)
        if math.isnan(v) or not 0.0 <= v <= 1.0:
            raise ResponseFormatError(f"{where}: score {i} is {v!r}; expected a float in [0, 1]")
        out.append(v)
    if len(out) != n_steps:
        raise ResponseFormatError(
            f"{where}: got {len(out)} step scores for {n_steps} steps; expected one per step"
        )
    return out


AUTO_SUM_TOL = 0.02  # see VLLMPRMScorer: bfloat16 softmax output must still count as probs


class VLLMPRMScorer(HttpEndpoint):
    """Step-reward model served by vLLM (``vllm serve Qwen/Qwen2.5-Math-PRM-7B``), scored
    through its pooling route ``POST {root}/pooling`` where ``root`` is ``config.base_url``
    without a trailing ``/v1``.

    Request: ``{"model": ..., "input": prompt}`` with ``prompt =
    template.format(problem=problem, steps=sep.join(steps) + sep)``, ``sep = "<extra_0>"``.
    vLLM's STEP pooler returns one row per separator token, ``data[0]["data"][i] = [p_neg,
    p_pos]`` (softmax over the two classes); the score of step ``i`` is
    ``P(correct) = row[positive_index]``.  If the rows are logits (``output="logits"``, or
    ``"auto"`` and a row is not a probability vector) the softmax is applied here:
    ``p_pos = exp(z_pos) / sum_j exp(z_j)``.

    ``"auto"`` takes a row for probabilities when its entries lie in [0, 1] and sum to 1
    within ``AUTO_SUM_TOL = 0.02``, and then renormalises it (``row[pos] / sum(row)``).
    The tolerance is that loose because vLLM versions of about 0.7 apply the softmax in
    bfloat16 (8-bit mantissa), whose rounded pairs miss a 1e-3 check ~40 % of the time; a
    tight check would softmax those probabilities a second time (0.8 -> ~0.65).

    Parameters
    ----------
    config : EndpointConfig
    step_separator : str
        Default ``"<extra_0>"`` (Qwen2.5-Math-PRM).
    template : str
        Must contain ``{problem}`` and ``{steps}``; default :data:`QWEN_PRM_TEMPLATE`.
    positive_index : int
        Column of the positive class in each row (1 for Qwen2.5-Math-PRM).
    output : {"auto", "probs", "logits"}
    extra_body : mapping
        Extra request fields (e.g. ``{"task": "token_classify"}`` for newer vLLM versions).
    n_classes : int or None
        Entries every row must have (default 2, Qwen2.5-Math-PRM's ``[p_neg, p_pos]``); None
        accepts any length above ``positive_index``.

    A response with a row of the wrong length, a non-finite or non-numeric entry (``NaN``,
    ``true``, a string), a bare score outside [0, 1], or a number of rows other than the number
    of steps is a :class:`ResponseFormatError` raised while the response is parsed, so the
    transport retries the call like a 5xx.
    """

    def __init__(
        self,
        config: EndpointConfig,
        *,
        step_separator: str = "<extra_0>",
        template: str = QWEN_PRM_TEMPLATE,
        positive_index: int = 1,
        output: str = "auto",
        extra_body: Mapping[str, Any] | None = None,
        n_classes: int | None = 2,
    ) -> None:
        super().__init__(config)
        if n_classes is not None and (
            not isinstance(n_classes, int) or n_classes <= int(positive_index)
        ):
            raise EndpointConfigError(
                f"n_classes must be None or an int > positive_index; got {n_classes!r}"
            )
        if "{problem}" not in template or "{steps}" not in template:
            raise EndpointConfigError("template must contain '{problem}' and '{steps}'")
        if output not in ("auto", "probs", "logits"):
            raise EndpointConfigError(f"output must be 'auto', 'probs' or 'logits'; got {output!r}")
        if not step_separator:
            raise EndpointConfigError("step_separator must be a non-empty string")
        self.step_separator = step_separator
        self.template = template
        self.positive_index = int(positive_index)
        self.output = output
        self.extra_body = dict(extra_body or {})
        self.n_classes = n_classes
        root = config.base_url
        self.url = (root[: -len("/v1")] if root.endswith("/v1") else root) + "/pooling"
        self.last_latency_s = 0.0

    def build_input(self, problem: str, steps: Sequence[str]) -> str:
        sep = self.step_separator
        body = "".join(s + sep for s in steps)
        return self.template.replace("{problem}", problem).replace("{steps}", body)

    def _row_score(self, row: Any, i: int) -> float:
        where = f"{self.name}: {self.url} row {i}"
        if isinstance(row, (int, float)) and not isinstance(row, bool):
            return float(row)  # a single probability per step (range checked by the caller)
        if not isinstance(row, list) or len(row) <= self.positive_index:
            raise ResponseFormatError(
                f"{where} is {row!r:.100}; expected a list of class scores "
                f"with index {self.positive_index}"
            )
        if self.n_classes is not None and len(row) != self.n_classes:
            raise ResponseFormatError(
                f"{where} has {len(row)} entries: {row!r:.100}; expected {self.n_classes} "
                "class scores"
            )
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in row
        ):
            raise ResponseFormatError(f"{where} has non-finite or non-numeric values: {row!r:.100}")
        total = sum(row)
        is_probs = all(0.0 <= v <= 1.0 for v in row) and abs(total - 1.0) < AUTO_SUM_TOL
        if self.output == "probs":
            return float(row[self.positive_index])
        if self.output == "auto" and is_probs:
            return float(row[self.positive_index]) / total
        m = max(row)
        exps = [math.exp(v - m) for v in row]
        return exps[self.positive_index] / sum(exps)

    async def score(self, problem: str, steps: Sequence[str]) -> list[float]:
        payload = {"model": self.config.model, "input": self.build_input(problem, steps)}
        payload.update(self.extra_body)
        t0 = time.perf_counter()
        n_steps = len(steps)
        out = await self.transport.post(
            self.url, payload, parse=lambda body: self._parse(body, n_steps)
        )
        self.last_latency_s = time.perf_counter() - t0
        return out  # type: ignore[no-any-return]

    def _parse(self, body: Mapping[str, Any], n_steps: int) -> list[float]:
        data = body.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
            raise ResponseFormatError(
                f"{self.name}: {self.url} returned no pooling 'data': {body!r:.200}"
            )
        rows = data[0].get("data")
        if not isinstance(rows, list):
            raise ResponseFormatError(
                f"{self.name}: {self.url} data[0]['data'] is {rows!r:.100}; expected a list"
            )
        if len(rows) != n_steps:  # before scoring: a huge list is not walked
            raise ResponseFormatError(
                f"{self.name}: {self.url}: got {len(rows)} step scores for {n_steps} steps; "
                "expected one per step"
            )
        scores = [self._row_score(r, i) for i, r in enumerate(rows)]
        return _check_scores(scores, n_steps, f"{self.name}: {self.url}")


class CallableScorer:
    """Wrap any Python function as a scorer.

    ``fn(problem, steps)`` (plain or ``async``) returns either one score per step or a single
    float, which is then the score of the last step (earlier steps unknown: NaN is not allowed,
    so they are left out and only the last step is scored).  Scores must lie in [0, 1].
    """

    def __init__(
        self,
        fn: Callable[[str, Sequence[str]], float | Sequence[float] | Awaitable[Any]],
        *,
        name: str = "callable",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {type(fn).__name__}")
        self.fn = fn
        self.name = name
        self.last_latency_s = 0.0

    async def score(self, problem: str, steps: Sequence[str]) -> list[float]:
        t0 = time.perf_counter()
        out = self.fn(problem, list(steps))
        if inspect.isawaitable(out):
            out = await out
        self.last_latency_s = time.perf_counter() - t0
        where = f"scorer {self.name!r}"
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            return _check_scores([out], 1, where)
        try:
            values = list(out)
        except TypeError:
            raise ResponseFormatError(
                f"{where} returned {type(out).__name__}; expected a float or a sequence of floats"
            ) from None
        return _check_scores(values, len(steps), where)

    async def aclose(self) -> None:
        return None
