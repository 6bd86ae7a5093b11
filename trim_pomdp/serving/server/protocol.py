"""Request parsing and response building for the OpenAI-compatible API, in OpenAI's field
names; no HTTP and no I/O here (the app turns :class:`APIError` into a status and a body).

Requests
--------
``POST /v1/chat/completions``: ``messages`` must end with exactly one ``user`` message (the
problem); ``system``/``developer`` messages are accepted but not forwarded (the step models
are prompted with the server's templates, see ``trim-pomdp serve --help``) and are listed in
the response's ``trim.ignored``.  Earlier ``assistant``/``tool`` turns are refused: a request
is one problem, routed step by step from the start.

``POST /v1/completions``: ``prompt`` is the problem (a string, or a list of one string).

The extension object ``trim`` (``extra_body={"trim": {...}}`` with the ``openai`` client)
may hold ``budget`` (the router's lambda; the bank's nearest solved one is used; it must lie
within the bank's range) and ``max_steps`` (1..30).  The budget can also be given as a model
name suffix, ``"<served-name>:<lambda>"`` (for clients that can only set the model name,
as RouteLLM encodes thresholds).

Parameters that would change what comes back in ways the router cannot honour are refused
with 400 (``n > 1``, ``tools``/``functions``/``tool_choice``, ``logprobs``, a non-text
``response_format``, ``echo``, ``best_of > 1``, ``suffix``, ``logit_bias``, non-text
``modalities``, ``audio``).  Sampling parameters (``temperature``, ``top_p``, ``max_tokens``,
``stop``, ``seed``, penalties, ...) and unknown fields are not forwarded -- the server's
configured generation settings apply to every step -- and are listed in ``trim.ignored``
so that nothing a client sent disappears without a word.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from trim_pomdp.errors import TrimPomdpError

__all__ = [
    "APIError",
    "RouteRequest",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "parse_body",
    "parse_chat_request",
    "parse_completion_request",
]

MAX_STEPS = 30

# fields every request may carry without effect on routing (not listed as ignored)
_QUIET = {"model", "stream", "stream_options", "trim", "user", "metadata", "store", "n"}
TRIM_FIELDS = ("budget", "max_steps")


class APIError(TrimPomdpError):
    """An error answered in the OpenAI format: ``{"error": {"message", "type", "param",
    "code"}}`` with HTTP ``status``; ``endpoint`` names the upstream model for 502s."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.endpoint = endpoint

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code,
                          endpoint=self.endpoint)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",  # noqa: A002
    param: str | None = None,
    code: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    if endpoint is not None:
        err["endpoint"] = endpoint
    return {"error": err}


def _bad(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _unsupported(message: str, param: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported_parameter")


@dataclass
class RouteRequest:
    """One parsed request: what to route and how to answer.

    ``budget`` is None when the request names none (the server's default applies);
    ``ignored`` lists request fields (and ``messages[i]`` entries) that were not used.
    """

    kind: str  # "chat" | "completion"
    model: str
    problem: str
    stream: bool = False
    include_usage: bool = False
    budget: float | None = None
    max_steps: int | None = None
    ignored: list[str] = field(default_factory=list)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 :class:`APIError` saying why not."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"request body must be a JSON object; got {type(body).__name__}",
                       code="invalid_json")
    return body


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _common(body: dict[str, Any], kind: str, known: set[str]) -> RouteRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model", "missing_model")
    n = body.get("n")
    if n is not None and n != 1:
        raise _unsupported(f"n must be 1 (one routed episode per request); got {n!r}", "n")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad(f"'stream' must be a boolean; got {stream!r}", "stream")
    include_usage = False
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise _bad("'stream_options' must be an object", "stream_options")
        iu = opts.get("include_usage", False)
        if not isinstance(iu, bool):
            raise _bad("'stream_options.include_usage' must be a boolean",
                       "stream_options.include_usage")
        include_usage = iu
    for key in ("tools", "functions"):
        if body.get(key):
            raise _unsupported(f"'{key}' is not supported: the server routes reasoning steps "
                               "and does not call tools", key)
    for key in ("tool_choice", "function_call"):
        if body.get(key) not in (None, "none"):
            raise _unsupported(f"'{key}' is not supported (no tools)", key)
    if body.get("logprobs") not in (None, False, 0):
        raise _unsupported("'logprobs' is not supported", "logprobs")
    if body.get("top_logprobs") not in (None, 0):
        raise _unsupported("'top_logprobs' is not supported", "top_logprobs")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise _unsupported("only response_format {'type': 'text'} is supported",
                           "response_format")
    if body.get("logit_bias"):
        raise _unsupported("'logit_bias' is not supported", "logit_bias")
    mods = body.get("modalities")
    if mods is not None and mods != ["text"]:
        raise _unsupported("only modalities ['text'] are supported", "modalities")
    if body.get("audio") is not None:
        raise _unsupported("'audio' is not supported", "audio")
    if body.get("echo"):
        raise _unsupported("'echo' is not supported", "echo")
    if body.get("best_of") not in (None, 1):
        raise _unsupported("'best_of' must be 1", "best_of")
    if body.get("suffix") not in (None, ""):
        raise _unsupported("'suffix' is not supported", "suffix")
    budget, max_steps = _trim_extension(body.get("trim"))
    ignored = sorted(k for k in body if k not in _QUIET and k not in known)
    return RouteRequest(kind=kind, model=model, problem="", stream=stream,
                        include_usage=include_usage, budget=budget, max_steps=max_steps,
                        ignored=ignored)


def _trim_extension(ext: Any) -> tuple[float | None, int | None]:
    if ext is None:
        return None, None
    if not isinstance(ext, dict):
        raise _bad(f"'trim' must be an object; got {type(ext).__name__}", "trim")
    unknown = sorted(set(ext) - set(TRIM_FIELDS))
    if unknown:
        raise _bad(f"unknown field(s) in 'trim': {unknown}; known: {list(TRIM_FIELDS)}",
                   f"trim.{unknown[0]}")
    budget = ext.get("budget")
    if budget is not None and (not _number(budget) or not math.isfinite(budget)):
        raise _bad(f"trim.budget must be a finite number; got {budget!r}", "trim.budget",
                   "budget_out_of_range")
    steps = ext.get("max_steps")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS
    ):
        raise _bad(f"trim.max_steps must be an int in [1, {MAX_STEPS}]; got {steps!r}",
                   "trim.max_steps")
    return (None if budget is None else float(budget)), steps


def _text_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                part.get("text"), str
            ):
                raise _unsupported(f"{where}.content[{j}]: only text parts are supported",
                                   f"{where}.content")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"{where}.content must be a string or a list of text parts", f"{where}.content")


def parse_chat_request(body: dict[str, Any]) -> RouteRequest:
    """Validate a ``/v1/chat/completions`` body (module docstring)."""
    req = _common(body, "chat", {"messages"})
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty list", "messages", "missing_messages")
    user = None
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{where} must be an object", where)
        role = m.get("role")
        if role in ("system", "developer"):
            _text_content(m.get("content"), where)
            req.ignored.append(f"{where} ({role})")
        elif role == "user":
            if user is not None:
                raise _unsupported(
                    f"{where}: only one user message is supported (the problem to solve); "
                    "a request is one problem", "messages")
            user = _text_content(m.get("content"), where)
        elif role in ("assistant", "tool", "function"):
            raise _unsupported(
                f"{where}: {role!r} messages are not supported: a request is one problem, "
                "solved step by step from the start", "messages")
        else:
            raise _bad(f"{where}.role must be system, developer or user; got {role!r}",
                       f"{where}.role")
    if user is None or msgs[-1].get("role") != "user":
        raise _bad("the last message must be the user's problem", "messages")
    if not user.strip():
        raise _bad("the user message is empty", "messages")
    req.problem = user
    return req


def parse_completion_request(body: dict[str, Any]) -> RouteRequest:
    """Validate a ``/v1/completions`` body (module docstring)."""
    req = _common(body, "completion", {"prompt"})
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _unsupported("'prompt' must be one string (one problem per request)",
                               "prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("'prompt' must be a non-empty string", "prompt", "missing_prompt")
    req.problem = prompt
    return req


# ---- responses ------------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def chat_response(rid: str, model: str, text: str, finish_reason: str, usage: dict[str, int],
                  trim: dict[str, Any], created: int | None = None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage,
        "trim": trim,
    }


def completion_response(rid: str, model: str, text: str, finish_reason: str,
                        usage: dict[str, int], trim: dict[str, Any],
                        created: int | None = None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason,
                     "logprobs": None}],
        "usage": usage,
        "trim": trim,
    }


def chat_chunk(rid: str, model: str, created: int, *, content: str | None = None,
               role: bool = False, finish_reason: str | None = None,
               trim: dict[str, Any] | None = None, usage: dict[str, int] | None = None,
               empty_choices: bool = False) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    out: dict[str, Any] = {
        "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [] if empty_choices else [
            {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        out["usage"] = usage
    if trim is not None:
        out["trim"] = trim
    return out


def completion_chunk(rid: str, model: str, created: int, *, content: str | None = None,
                     finish_reason: str | None = None, trim: dict[str, Any] | None = None,
                     usage: dict[str, int] | None = None,
                     empty_choices: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rid, "object": "text_completion", "created": created, "model": model,
        "choices": [] if empty_choices else [
            {"index": 0, "text": content or "", "finish_reason": finish_reason,
             "logprobs": None}],
    }
    if usage is not None:
        out["usage"] = usage
    if trim is not None:
        out["trim"] = trim
    return out
