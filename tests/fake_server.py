"""A scripted fake OpenAI-compatible + vLLM-pooling server for tests and benchmarks.

Plain asyncio HTTP/1.1 (``asyncio.Protocol``; keep-alive, Content-Length bodies) on 127.0.0.1
with an ephemeral port, run on its own event loop in a background thread (``FakeServer``) or
as a separate process (``python tests/fake_server.py --n-steps 8 ...`` prints ``PORT <n>``
and serves until killed).

Routes
------
``POST /v1/completions``       raw-prompt continuation; the step index is the number of
                               ``"\\n\\n"``-terminated steps after the assistant marker.
``POST /v1/chat/completions``  the step index is the number of steps in the assistant message.
``POST /pooling``              Qwen2.5-Math-PRM style: one ``[p_neg, p_pos]`` row per
                               ``<extra_0>`` in the assistant turn; ``p_pos`` looked up by the
                               step's text in ``scores`` (default ``default_score``).

Scripts: ``add_solution(model, problem, [ScriptedStep, ...])``; unscripted problems get a
synthetic solution of ``n_steps`` steps (text ``"[model] step k of <hash>"``, the last one
``\\boxed{42}``).  Failures: ``fail(kind, model=None, times=1, error=503, skip=0,
message=..., rate=None, seed=0)``, applied after ``skip`` matching requests have gone through,
where ``error`` is an HTTP status (the body carries ``message``), ``"timeout"`` (hold the
request ``hold_s`` seconds), ``"disconnect"`` (close the socket without answering),
``"badjson"``, ``"truncate"`` (the real 200 answer cut off mid-JSON, as a proxy does when its
upstream resets), ``"huge"`` (a 200 body of ``huge_bytes`` bytes, streamed at the pace the
client reads it, with a Content-Length header or, with ``declare_length=False``, without one
and the connection closed at the end), or one of :data:`CORRUPTIONS` (the real 200 answer with
one bad value: negative or bool token counts, a lone surrogate in the text, no choices, PRM
rows of the wrong length or NaN, ...).  With ``rate=r`` a matching request fails with
probability ``r``, decided by a hash of ``seed``, the request body and how many times that
body was seen: the same run of requests gives the same faults whatever the order in which
concurrent episodes send them, and a retry (same body, next count) is an independent draw.
Every request is logged (``log``) with its parsed body, headers and start/end times;
``max_in_flight`` counts concurrent requests per kind; ``dropped`` counts requests whose
client closed the connection before they were answered (a cancelled call).  ``min_step=k``
limits a failure to requests about step ``k`` or later (0-based), whatever order concurrent
episodes send them in.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ASSISTANT = "<|im_start|>assistant\n"
_FILL = b"x" * 65536  # the bytes of a "huge" body
SEP = "<extra_0>"
KINDS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/pooling": "pooling"}


@dataclass
class ScriptedStep:
    text: str
    tokens: int = 10
    score: float | None = None  # PRM score of this text (None: the server's default)
    finish_reason: str = "stop"
    stop_reason: str | None = "\n\n"  # None = stopped at end of sequence
    delay: float | None = None  # overrides the model's latency for this step
    usage: bool = True


@dataclass
class Failure:
    kind: str | None  # "completions" | "chat" | "pooling" | None (any)
    model: str | None
    times: int | None  # None: forever
    error: int | str
    hold_s: float = 5.0
    retry_after: float | None = None  # sent as a Retry-After header with status errors
    message: str = "scripted failure"  # the error body's message (status errors)
    skip: int = 0  # let this many matching requests through first
    rate: float | None = None  # fail this fraction of matching requests (hash-decided)
    seed: int = 0
    huge_bytes: int = 64 * 1024 * 1024
    declare_length: bool = True
    min_step: int = 0  # only requests for step >= this (0-based; see _step_of)


def _step_of(kind: str, body: dict) -> int:
    """0-based index of the step a request is about: the steps already written before it
    (completions, chat), or the last step scored (pooling)."""
    try:
        if kind == "completions":
            return str(body.get("prompt", "")).split(ASSISTANT, 1)[1].count("\n\n")
        if kind == "pooling":
            return max(str(body.get("input", "")).count(SEP) - 1, 0)
        msgs = body.get("messages") or []
        partial = next((m["content"] for m in msgs[2:] if m["role"] == "assistant"), "")
        partial = partial.strip("\n")
        return len(partial.split("\n\n")) if partial else 0
    except (IndexError, KeyError, TypeError, AttributeError):
        return 0


def _mutate_usage(key: str, value: object) -> Callable[[dict], None]:
    def f(p: dict) -> None:
        p.setdefault("usage", {})[key] = value
    return f


def _set_text(value: object) -> Callable[[dict], None]:
    def f(p: dict) -> None:
        c = p["choices"][0]
        if "text" in c:
            c["text"] = value
        else:
            c["message"]["content"] = value
    return f


def _rows(fn: Callable[[list], list]) -> Callable[[dict], None]:
    def f(p: dict) -> None:
        d = p["data"][0]
        d["data"] = fn(d["data"])
    return f


# error name -> (kind it applies to: "generate" or "pooling", mutation of the real payload)
CORRUPTIONS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "neg_tokens": ("generate", _mutate_usage("completion_tokens", -5)),
    "bool_tokens": ("generate", _mutate_usage("completion_tokens", True)),
    "float_tokens": ("generate", _mutate_usage("completion_tokens", 3.5)),
    "str_tokens": ("generate", _mutate_usage("completion_tokens", "12")),
    "huge_tokens": ("generate", _mutate_usage("completion_tokens", 10**30)),
    "neg_prompt_tokens": ("generate", _mutate_usage("prompt_tokens", -1)),
    "usage_list": ("generate", lambda p: p.__setitem__("usage", [1, 2])),
    "surrogate": ("generate", lambda p: _set_text("step \ud800 text")(p)),
    "text_int": ("generate", _set_text(7)),
    "text_null": ("generate", _set_text(None)),
    "no_choices": ("generate", lambda p: p.pop("choices")),
    "empty_choices": ("generate", lambda p: p.__setitem__("choices", [])),
    "choices_dict": ("generate", lambda p: p.__setitem__("choices", {"0": p["choices"][0]})),
    "finish_int": ("generate", lambda p: p["choices"][0].__setitem__("finish_reason", 3)),
    "array_body": ("generate", lambda p: None),  # replaced by a JSON list below
    "prm_short_row": ("pooling", _rows(lambda rows: [r[:1] for r in rows])),
    "prm_long_row": ("pooling", _rows(lambda rows: [r + [0.0] for r in rows])),
    "prm_nan": ("pooling", _rows(lambda rows: [[float("nan"), float("nan")] for r in rows])),
    "prm_inf": ("pooling", _rows(lambda rows: [[0.0, float("inf")] for r in rows])),
    "prm_bool": ("pooling", _rows(lambda rows: [[False, True] for r in rows])),
    "prm_string": ("pooling", _rows(lambda rows: [["0.1", "0.9"] for r in rows])),
    "prm_extra_row": ("pooling", _rows(lambda rows: rows + [[0.5, 0.5]])),
    "prm_no_rows": ("pooling", _rows(lambda rows: [])),
    "prm_no_data": ("pooling", lambda p: p.pop("data")),
    "prm_bare_score": ("pooling", _rows(lambda rows: [1.5 for r in rows])),
}
BAD_VALUE_KINDS = tuple(CORRUPTIONS)


@dataclass
class Request:
    kind: str
    model: str
    body: dict
    headers: dict
    start: float
    end: float = 0.0
    status: int | str = 0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: parse a request, let the server answer it, write
    the response, then parse the next (requests on a connection are answered in order)."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting = False  # a request of this connection is being answered
        self.paused = False  # the transport's write buffer is full (flow control)
        self.stream_left = 0  # bytes of a "huge" body still to send
        self.stream_close = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.waiting:  # the client gave up on a request we were still answering
            self.server.dropped += 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.waiting:
            self._next()

    def _next(self) -> None:
        buf = self.buf
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            return
        try:
            line, *lines = buf[:i].decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers: dict[str, str] = {}
            for h in lines:
                if h:
                    k, v = h.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
        except ValueError:  # not HTTP: drop the connection
            if self.transport is not None:
                self.transport.close()
            return
        end = i + 4 + n
        if len(buf) < end:
            return  # the body has not all arrived yet
        raw = bytes(buf[i + 4 : end])
        del buf[:end]
        self.waiting = True
        self.server._dispatch(method, target, headers, raw, self._respond)

    def _respond(self, status: int | str, payload: Any) -> None:
        self.waiting = False
        t = self.transport
        if t is None or t.is_closing():
            return  # the client went away (e.g. it timed out) while we held the request
        if status == "disconnect":
            t.close()
            return
        if status == "huge":
            n, declare = payload
            head = "HTTP/1.1 200 X\r\nContent-Type: application/json\r\n"
            head += f"Content-Length: {n}\r\n" if declare else "Connection: close\r\n"
            t.write(head.encode() + b"\r\n")
            self.waiting = True  # no other request is answered on this connection meanwhile
            self.stream_left, self.stream_close = n, not declare
            self._pump()
            return
        extra = ""
        if isinstance(payload, dict) and "retry_after" in payload:
            payload = dict(payload)
            extra = f"Retry-After: {payload.pop('retry_after')}\r\n"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        t.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n".encode() + data
        )
        if self.buf:
            self._next()

    def _pump(self) -> None:
        """Send the rest of a "huge" body while the client keeps reading it: the transport's
        buffer stays at its high-water mark, so this server never holds the body itself."""
        t = self.transport
        while self.stream_left > 0 and not self.paused:
            if t is None or t.is_closing():
                self.stream_left = 0
                return
            k = min(len(_FILL), self.stream_left)
            t.write(_FILL[:k])
            self.stream_left -= k
            if self.stream_left == 0:
                if self.stream_close:
                    t.close()
                    return
                self.waiting = False
                if self.buf:
                    self._next()


@dataclass
class FakeServer:
    default_score: float = 0.9
    n_steps: int = 4
    latency: dict[str, float] = field(default_factory=dict)  # "kind" or "kind:model" -> s
    logits: bool = False  # pooling rows as logits instead of probabilities

    def __post_init__(self) -> None:
        self.scripts: dict[str, dict[str, list[ScriptedStep]]] = {}
        self.scores: dict[str, float] = {}
        self.failures: list[Failure] = []
        self.log: list[Request] = []
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.dropped = 0  # requests whose client closed the connection before the answer
        self._synthetic_cache: dict[tuple[str, str, int], list[ScriptedStep]] = {}
        self._seen: dict[tuple[int, str], int] = {}  # (failure index, body) -> times seen
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    # ---- scripting -------------------------------------------------------------------------
    def add_solution(self, model: str, problem: str, steps: list[ScriptedStep]) -> None:
        self.scripts.setdefault(model, {})[problem] = steps
        for s in steps:
            if s.score is not None:
                self.scores[s.text] = s.score

    def fail(
        self,
        kind: str | None,
        *,
        model: str | None = None,
        times: int | None = 1,
        error: int | str = 503,
        hold_s: float = 5.0,
        retry_after: float | None = None,
        message: str = "scripted failure",
        skip: int = 0,
        rate: float | None = None,
        seed: int = 0,
        huge_bytes: int = 64 * 1024 * 1024,
        declare_length: bool = True,
        min_step: int = 0,
    ) -> None:
        if isinstance(error, str) and error not in (
            "timeout", "disconnect", "badjson", "truncate", "huge", *CORRUPTIONS
        ):
            raise ValueError(f"unknown failure {error!r}")
        self.failures.append(
            Failure(kind, model, times, error, hold_s, retry_after, message, skip, rate, seed,
                    huge_bytes, declare_length, min_step)
        )

    def requests(self, kind: str | None = None, model: str | None = None) -> list[Request]:
        return [
            r
            for r in self.log
            if (kind is None or r.kind == kind) and (model is None or r.model == model)
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            for conn in list(self._connections):  # kept-alive client connections
                if conn.transport is not None:
                    conn.transport.abort()
            loop.run_until_complete(self._server.wait_closed())
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm-server", daemon=True)
        self._thread.start()
        if not ready.wait(120):  # generous: a loaded machine
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(120)
            self._loop = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP ------------------------------------------------------------------------------
    # A bare asyncio.Protocol and loop.call_later for the latencies, not streams and a task per
    # request: the server's own CPU per request delays every response queued behind it, and
    # the concurrency benchmark is meant to see the fixed latencies, not this server's cost.

    def _drawn(self, i: int, f: Failure, raw: bytes) -> bool:
        """Whether rate-failure ``i`` hits this request (see the module docstring)."""
        key = (i, hashlib.sha1(raw).hexdigest())
        count = self._seen.get(key, 0)
        self._seen[key] = count + 1
        h = hashlib.sha256(f"{f.seed}|{key[1]}|{count}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2.0**64 < f.rate

    def _match_failure(
        self, kind: str, model: str, raw: bytes = b"", body: dict | None = None
    ) -> Failure | None:
        for i, f in enumerate(self.failures):
            if f.min_step and _step_of(kind, body or {}) < f.min_step:
                continue
            if isinstance(f.error, str) and f.error in CORRUPTIONS:
                target = CORRUPTIONS[f.error][0]
                if (target == "pooling") != (kind == "pooling"):
                    continue  # a PRM corruption never hits a completion, and vice versa
            if (f.kind is None or f.kind == kind) and (f.model is None or f.model == model):
                if f.skip > 0:
                    f.skip -= 1
                    return None
                if f.rate is not None and not self._drawn(i, f, raw):
                    continue
                if f.times is None:
                    return f
                if f.times > 0:
                    f.times -= 1
                    return f
        return None

    def _dispatch(
        self,
        method: str,
        target: str,
        headers: dict,
        raw: bytes,
        respond: Callable[[int | str, Any], None],
    ) -> None:
        """Answer one request through ``respond(status, payload)``, now or after its delay."""
        kind = KINDS.get(target)
        if method != "POST" or kind is None:
            respond(404, {"error": f"no route {method} {target}"})
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            respond(400, {"error": "body is not JSON"})
            return
        model = str(body.get("model", ""))
        req = Request(kind, model, body, headers, time.perf_counter())
        self.log.append(req)
        self.in_flight[kind] = self.in_flight.get(kind, 0) + 1
        self.max_in_flight[kind] = max(self.max_in_flight.get(kind, 0), self.in_flight[kind])

        def finish(status: int | str, payload: Any) -> None:
            req.end = time.perf_counter()
            self.in_flight[kind] -= 1
            if req.status == 0:  # failures set their kind when they were chosen
                req.status = status
            respond(status, payload)

        delay = 0.0
        fail = self._match_failure(kind, model, raw, body)
        if fail is not None:
            req.status = fail.error
            if fail.error == "timeout":
                status, payload, delay = 504, {"error": "held"}, fail.hold_s
            elif fail.error == "disconnect":
                status, payload = "disconnect", None
            elif fail.error == "badjson":
                status, payload = 200, b"not json"
            elif fail.error == "huge":
                status, payload = "huge", (fail.huge_bytes, fail.declare_length)
            elif fail.error in ("truncate", *CORRUPTIONS):
                if kind == "pooling":
                    status, payload, delay = self._pooling(model, body)
                else:
                    status, payload, delay = self._generate(kind, model, body)
                if status == 200 and fail.error == "truncate":
                    data = json.dumps(payload).encode()
                    payload = data[: len(data) // 2]
                elif status == 200 and fail.error == "array_body":
                    payload = json.dumps([payload]).encode()
                elif status == 200:
                    CORRUPTIONS[fail.error][1](payload)
                    payload = json.dumps(payload).encode()  # NaN/inf as JS literals
            else:
                payload = {"error": {"message": fail.message, "code": fail.error}}
                if fail.retry_after is not None:
                    payload["retry_after"] = fail.retry_after
                status = int(fail.error)
        elif kind == "pooling":
            status, payload, delay = self._pooling(model, body)
        else:
            status, payload, delay = self._generate(kind, model, body)
        if delay:
            self._loop.call_later(delay, finish, status, payload)
        else:
            finish(status, payload)

    def _latency(self, kind: str, model: str) -> float:
        return self.latency.get(f"{kind}:{model}", self.latency.get(kind, 0.0))

    def _synthetic(self, model: str, problem: str) -> list[ScriptedStep]:
        key = (model, problem, self.n_steps)
        cached = self._synthetic_cache.get(key)
        if cached is not None:  # built once per (model, problem): cheap per request
            return cached
        h = hashlib.sha1(problem.encode()).hexdigest()[:8]
        steps = [ScriptedStep(f"[{model}] step {k + 1} of {h}") for k in range(self.n_steps - 1)]
        steps.append(ScriptedStep(f"[{model}] so the answer is $\\boxed{{42}}$ ({h})"))
        self._synthetic_cache[key] = steps
        return steps

    def _script(self, model: str, problem_text: str) -> list[ScriptedStep]:
        table = self.scripts.get(model, {})
        best = None
        for p in table:
            if p in problem_text and (best is None or len(p) > len(best)):
                best = p
        if best is not None:
            return table[best]
        return self._synthetic(model, problem_text)

    def _generate(self, kind: str, model: str, body: dict) -> tuple[int, Any, float]:
        if kind == "completions":
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or ASSISTANT not in prompt:
                return 400, {"error": "prompt lacks the assistant marker"}, 0.0
            head, after = prompt.split(ASSISTANT, 1)
            problem = head
            k = after.count("\n\n")
        else:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or len(msgs) < 2:
                return 400, {"error": "messages must hold system + user"}, 0.0
            problem = msgs[1]["content"]
            partial = next((m["content"] for m in msgs[2:] if m["role"] == "assistant"), "")
            partial = partial.strip("\n")
            k = len(partial.split("\n\n")) if partial else 0
        script = self._script(model, problem)
        step = script[min(k, len(script) - 1)]
        if k >= len(script):  # asked to continue past the script: end of sequence
            step = ScriptedStep("", tokens=0, stop_reason=None)
        delay = step.delay if step.delay is not None else self._latency(kind, model)
        choice: dict[str, Any] = {"index": 0, "finish_reason": step.finish_reason}
        if kind == "completions":
            choice["text"] = step.text
        else:
            choice["message"] = {"role": "assistant", "content": step.text}
        choice["stop_reason"] = step.stop_reason
        payload: dict[str, Any] = {"id": "cmpl-fake", "object": "text_completion", "model": model,
                                   "choices": [choice]}
        if step.usage:
            payload["usage"] = {"prompt_tokens": 100 + 10 * k, "completion_tokens": step.tokens,
                                "total_tokens": 100 + 10 * k + step.tokens}
        return 200, payload, delay

    def _pooling(self, model: str, body: dict) -> tuple[int, Any, float]:
        text = body.get("input")
        if not isinstance(text, str) or ASSISTANT not in text:
            return 400, {"error": "input lacks the assistant marker"}, 0.0
        after = text.split(ASSISTANT, 1)[1]
        after = after.rsplit("<|im_end|>", 1)[0]
        steps = after.split(SEP)[:-1]
        rows = []
        for s in steps:
            p = self.scores.get(s, self.default_score)
            if self.logits:
                import math

                p = min(max(p, 1e-12), 1 - 1e-12)
                rows.append([0.0, math.log(p / (1 - p))])
            else:
                rows.append([1.0 - p, p])
        payload = {"id": "pool-fake", "object": "list", "model": model,
                   "data": [{"index": 0, "object": "pooling", "data": rows}],
                   "usage": {"prompt_tokens": len(text) // 4, "total_tokens": len(text) // 4}}
        return 200, payload, self._latency("pooling", model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fake OpenAI/vLLM server on 127.0.0.1")
    ap.add_argument("--n-steps", type=int, default=8)
    ap.add_argument("--latency", action="append", default=[], metavar="KIND[:MODEL]=SECONDS")
    ap.add_argument("--score", action="append", default=[], metavar="TEXT=P")
    ap.add_argument("--default-score", type=float, default=0.9)
    args = ap.parse_args(argv)
    lat = {}
    for item in args.latency:
        k, v = item.rsplit("=", 1)
        lat[k] = float(v)
    srv = FakeServer(default_score=args.default_score, n_steps=args.n_steps, latency=lat)
    for item in args.score:
        k, v = item.rsplit("=", 1)
        srv.scores[k] = float(v)
    srv.start()
    print(f"PORT {srv.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
