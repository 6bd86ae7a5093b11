"""OpenAI-compatible model endpoints: step generators for raw completion
(``/v1/completions``) and chat (``/v1/chat/completions``), and the prompts they use.

Their configuration and the retrying async JSON transport are :mod:`trim_pomdp.serving.http`.

A *step* is one paragraph of a worked solution: the text a model writes before it emits the
step separator ``"\\n\\n"`` (the stop string).  A step is *final* when it carries the answer
(``\\boxed{`` by default) or when the model stopped for any reason other than the stop string
(end of sequence, ``max_tokens`` reached, or an empty continuation).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from trim_pomdp.errors import (
    EndpointConfigError,
    EndpointError,
    ResponseFormatError,
    ResponseTooLargeError,
)
from trim_pomdp.serving.http import EndpointConfig, JsonTransport

__all__ = [
    "ChatModel",
    "CompletionModel",
    "EndpointConfig",
    "EndpointConfigError",
    "EndpointError",
    "GeneratedStep",
    "HttpEndpoint",
    "JsonTransport",
    "ResponseFormatError",
    "ResponseTooLargeError",
    "StepGenerator",
    "QWEN_MATH_PROMPT",
    "QWEN_MATH_SYSTEM",
]

# The prompt the Qwen2.5(-Math)-Instruct family was trained with, rendered by hand so that no
# tokenizer has to be downloaded: raw-prompt continuation then appends the steps written so far.
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_MATH_PROMPT = (
    "<|im_start|>system\n" + QWEN_MATH_SYSTEM + "<|im_end|>\n"
    "<|im_start|>user\n{problem}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

STEP_SEPARATOR = "\n\n"
MAX_TOKENS_VALUE = 10**9  # a usage count above this is not a real count


@dataclass(frozen=True)
class GeneratedStep:
    """One step written by a model.

    Attributes
    ----------
    text : str
        The step without the trailing separator.
    tokens : int
        Completion tokens, from the response's ``usage.completion_tokens``; when a server sends
        no usage, ``ceil(len(text) / 4)`` and ``tokens_estimated`` is True.
    is_final : bool
        The step carries the answer or the model stopped for a reason other than the stop string.
    finish_reason : str or None
        As reported by the server (``"stop"``, ``"length"``, ...).
    latency_s : float
        Wall time of the request including retries.
    """

    text: str
    tokens: int
    is_final: bool
    finish_reason: str | None
    latency_s: float
    prompt_tokens: int | None = None
    tokens_estimated: bool = False


@runtime_checkable
class StepGenerator(Protocol):
    """Anything that writes the next step of a solution."""

    name: str

    async def generate_step(self, problem: str, steps: Sequence[str]) -> GeneratedStep: ...

    async def aclose(self) -> None: ...


def _count(value: Any, what: str, where: str) -> int:
    """A token count from a response: an int (not a bool) in ``[0, MAX_TOKENS_VALUE]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not (
        0 <= value <= MAX_TOKENS_VALUE
    ):
        raise ResponseFormatError(
            f"{where}: {what} is {value!r:.60}; expected an integer in [0, {MAX_TOKENS_VALUE}]"
        )
    return value


def check_text(text: Any, what: str, where: str) -> str:
    """``text`` if it is a string that UTF-8 can encode (no lone surrogates such as the valid
    JSON escape ``"\\ud800"``, which could not be written to a trace file)."""
    if not isinstance(text, str):
        raise ResponseFormatError(f"{where}: {what} is {type(text).__name__}; expected a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ResponseFormatError(
            f"{where}: {what} holds a lone surrogate {text[exc.start]!r} at character "
            f"{exc.start}; expected UTF-8 text"
        ) from None
    return text


def _usage_tokens(
    body: Mapping[str, Any], text: str, where: str
) -> tuple[int, int | None, bool]:
    """``(completion_tokens, prompt_tokens, estimated)`` from ``body["usage"]``.

    A server that sends no usage (or ``"usage": null``, or no ``completion_tokens``) gets the
    documented estimate; a usage that is there but wrong (negative, a bool, a float, a
    string, absurdly large) is a :class:`ResponseFormatError`, so the call is retried.
    """
    usage = body.get("usage")
    if usage is not None and not isinstance(usage, Mapping):
        raise ResponseFormatError(
            f"{where}: 'usage' is {type(usage).__name__}; expected an object or null"
        )
    if usage is not None and usage.get("completion_tokens") is not None:
        completion = _count(usage["completion_tokens"], "usage.completion_tokens", where)
        prompt = usage.get("prompt_tokens")
        if prompt is not None:
            prompt = _count(prompt, "usage.prompt_tokens", where)
        return completion, prompt, False
    # documented estimate (~4 characters per token) so that routing can still proceed
    return max(1, -(-len(text) // 4)) if text else 0, None, True


class HttpEndpoint:
    """What every HTTP-backed model or scorer shares: its :class:`EndpointConfig`, its name
    and its retrying :class:`JsonTransport`; closed with ``aclose()`` or ``async with``."""

    def __init__(self, config: EndpointConfig) -> None:
        if not isinstance(config, EndpointConfig):
            raise TypeError(f"config must be an EndpointConfig; got {type(config).__name__}")
        self.config = config
        self.name = config.name
        self.transport = JsonTransport(config)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _BaseModel(HttpEndpoint):
    def __init__(
        self,
        config: EndpointConfig,
        *,
        stop: Sequence[str] = (STEP_SEPARATOR,),
        max_tokens: int = 1024,
        temperature: float = 0.0,
        final_markers: Sequence[str] = ("\\boxed{",),
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(config)
        if isinstance(stop, str) or not stop:
            raise EndpointConfigError(f"stop must be a non-empty sequence of strings; got {stop!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise EndpointConfigError(f"max_tokens must be an int >= 1; got {max_tokens!r}")
        self.stop = tuple(stop)
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self.final_markers = tuple(final_markers)
        self.extra_body = dict(extra_body or {})

    def _is_final(self, text: str, choice: Mapping[str, Any]) -> bool:
        """Final when the answer is present, or the model did not stop on our stop string.

        vLLM reports the matched stop string in ``choice["stop_reason"]`` (None at end of
        sequence).  Servers that omit ``stop_reason`` cannot tell the two apart; there
        ``finish_reason == "stop"`` is taken as the stop string and the answer marker decides.
        """
        if any(m in text for m in self.final_markers):
            return True
        if not text.strip():
            return True  # an empty continuation: the model has nothing more to write
        finish = choice.get("finish_reason")
        if finish != "stop":
            return True  # "length", "content_filter", ...
        if "stop_reason" in choice:
            return choice["stop_reason"] not in self.stop
        return False

    def _parse(self, body: Mapping[str, Any], url: str, key: str, t0: float) -> GeneratedStep:
        """One step from a response body; every value used later is checked here, so that a
        bad response fails (and retries) this call rather than anything downstream."""
        where = f"{self.name}: {url}"
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise ResponseFormatError(f"{where} returned no 'choices': {body!r:.200}")
        choice = choices[0]
        if key == "text":
            text = choice.get("text")
        else:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(text, str):
            raise ResponseFormatError(f"{where} choice has no string {key!r}: {choice!r:.200}")
        check_text(text, f"choices[0].{'text' if key == 'text' else 'message.content'}", where)
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise ResponseFormatError(
                f"{where}: finish_reason is {finish!r:.60}; expected a string or null"
            )
        # A server that included the stop string (include_stop_str_in_output) or surrounding
        # blank lines must not change the step text we store and send back.
        text = text.strip("\n")
        tokens, prompt_tokens, estimated = _usage_tokens(body, text, where)
        return GeneratedStep(
            text=text,
            tokens=tokens,
            is_final=self._is_final(text, choice),
            finish_reason=finish,
            latency_s=time.perf_counter() - t0,
            prompt_tokens=prompt_tokens,
            tokens_estimated=estimated,
        )


class CompletionModel(_BaseModel):
    """Step generation by raw-prompt continuation on ``POST {base_url}/completions``.

    The prompt is ``prompt_template.format(problem=problem)`` followed by every step written so
    far, each terminated by ``"\\n\\n"``; the model continues until the stop string, so one
    request writes exactly one step.

    Parameters
    ----------
    config : EndpointConfig
    prompt_template : str
        Must contain ``{problem}``; default :data:`QWEN_MATH_PROMPT` (Qwen chat format).
    stop : sequence of str
        Default ``("\\n\\n",)``.
    max_tokens, temperature : generation parameters.
    final_markers : sequence of str
        Substrings that make a step final (default ``("\\boxed{",)``).
    extra_body : mapping
        Extra JSON fields merged into every request (e.g. ``{"top_p": 0.95}``).
    """

    def __init__(
        self, config: EndpointConfig, *, prompt_template: str = QWEN_MATH_PROMPT, **kwargs: Any
    ) -> None:
        super().__init__(config, **kwargs)
        if "{problem}" not in prompt_template:
            raise EndpointConfigError("prompt_template must contain '{problem}'")
        self.prompt_template = prompt_template

    def build_prompt(self, problem: str, steps: Sequence[str]) -> str:
        head = self.prompt_template.replace("{problem}", problem)
        return head + "".join(s + STEP_SEPARATOR for s in steps)

    async def generate_step(self, problem: str, steps: Sequence[str]) -> GeneratedStep:
        url = self.config.base_url + "/completions"
        payload = {
            "model": self.config.model,
            "prompt": self.build_prompt(problem, steps),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": list(self.stop),
            **self.extra_body,
        }
        t0 = time.perf_counter()
        return await self.transport.post(  # type: ignore[no-any-return]
            url, payload, parse=lambda body: self._parse(body, url, "text", t0)
        )


class ChatModel(_BaseModel):
    """Step generation on ``POST {base_url}/chat/completions`` for chat-only (closed) models.

    Two ways to continue a partial solution:

    * ``mode="instruct"`` (works with any chat API): the steps so far are sent as an assistant
      message followed by a user turn asking for the next step only, with stop ``"\\n\\n"``.
    * ``mode="prefill"`` (vLLM, SGLang): the partial solution is the last assistant message and
      the request sets ``continue_final_message=True, add_generation_prompt=False`` so the
      server continues it verbatim.
    """

    CONTINUE_PROMPT = (
        "Continue the solution above. Write only the next step (one paragraph); "
        "if it is the last step, put the final answer within \\boxed{}."
    )

    def __init__(
        self,
        config: EndpointConfig,
        *,
        system_prompt: str = QWEN_MATH_SYSTEM,
        mode: str = "instruct",
        continue_prompt: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        if mode not in ("instruct", "prefill"):
            raise EndpointConfigError(f"mode must be 'instruct' or 'prefill'; got {mode!r}")
        self.system_prompt = system_prompt
        self.mode = mode
        self.continue_prompt = continue_prompt or self.CONTINUE_PROMPT

    def build_messages(self, problem: str, steps: Sequence[str]) -> list[dict[str, str]]:
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": problem},
        ]
        if steps:
            partial = STEP_SEPARATOR.join(steps)
            if self.mode == "prefill":
                messages.append({"role": "assistant", "content": partial + STEP_SEPARATOR})
            else:
                messages.append({"role": "assistant", "content": partial})
                messages.append({"role": "user", "content": self.continue_prompt})
        return messages

    async def generate_step(self, problem: str, steps: Sequence[str]) -> GeneratedStep:
        url = self.config.base_url + "/chat/completions"
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": self.build_messages(problem, steps),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": list(self.stop),
        }
        if self.mode == "prefill" and steps:
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        payload.update(self.extra_body)
        t0 = time.perf_counter()
        return await self.transport.post(  # type: ignore[no-any-return]
            url, payload, parse=lambda body: self._parse(body, url, "message", t0)
        )
