"""The HTTP layer of ``trim-pomdp serve`` (aiohttp.web): routes, JSON and server-sent events,
OpenAI-format errors.  The logic lives in :mod:`.service`; nothing here decides routing.

Why aiohttp.web: the endpoint clients of :mod:`trim_pomdp.serving` already run on aiohttp
(the ``http`` extra), so the server and its upstream calls share one event loop and one
library, with no new dependency and no thread hop per request; cancelling a handler (client
disconnect, ``handler_cancellation=True``) cancels the aiohttp client requests it awaits.
FastAPI/Starlette + uvicorn (vLLM, SGLang, RouteLLM) would bring pydantic models and an
OpenAPI page, at the cost of three more packages for five routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from typing import Any

from aiohttp import web

from trim_pomdp.serving.server.protocol import (
    APIError,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    error_body,
    new_id,
    parse_body,
    parse_chat_request,
    parse_completion_request,
)
from trim_pomdp.serving.server.service import RoutingService, step_info

__all__ = ["create_app", "serve_forever", "start_server"]

log = logging.getLogger("trim_pomdp.serve")

SERVICE: web.AppKey[RoutingService] = web.AppKey("service", RoutingService)
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(obj).encode(), status=status, headers=headers,
                        content_type="application/json")


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer in the OpenAI error format, every request counted by route and status."""
    service = request.app[SERVICE]
    route = request.path if request.path in ROUTES else "other"
    try:
        resp = await handler(request)
    except APIError as exc:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        resp = _json(exc.to_body(), exc.status, headers)
        if service.metrics is not None and exc.status in (400, 404, 429):
            # (upstream and routing errors are counted where they happen, in the service)
            service.metrics.errors.labels("busy" if exc.status == 429 else "bad_request").inc()
    except web.HTTPException as exc:  # 404 no route, 405 method, 413 body too large
        if exc.status < 400:
            raise
        resp = _json(error_body(f"{request.method} {request.path}: {exc.reason}",
                                code=str(exc.status)), exc.status)
    except asyncio.CancelledError:
        if service.metrics is not None:
            service.metrics.requests.labels(route, "cancelled").inc()
        raise
    except Exception as exc:  # a bug: log it, answer 500, never a traceback to the client
        log.exception("%s %s failed", request.method, request.path)
        if service.metrics is not None:
            service.metrics.errors.labels("internal").inc()
        resp = _json(error_body(f"internal error: {type(exc).__name__}: {exc}",
                                type="server_error", code="internal_error"), 500)
    if service.metrics is not None:
        service.metrics.requests.labels(route, str(resp.status)).inc()
    return resp


async def _models(request: web.Request) -> web.Response:
    return _json({"object": "list", "data": request.app[SERVICE].models()})


async def _health(request: web.Request) -> web.Response:
    s = request.app[SERVICE]
    return _json({"status": "ok", "in_flight": s.in_flight, "max_concurrency": s.max_concurrency})


async def _metrics(request: web.Request) -> web.Response:
    s = request.app[SERVICE]
    if s.metrics is None:
        raise APIError(404, "metrics are disabled (--no-metrics)", code="metrics_disabled")
    body, ctype = s.metrics.render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = ctype
    return resp


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "completion")


async def _complete(request: web.Request, kind: str) -> web.StreamResponse:
    service = request.app[SERVICE]
    t0 = time.perf_counter()
    body = parse_body(await request.read())
    req = parse_chat_request(body) if kind == "chat" else parse_completion_request(body)
    route = request.path
    try:
        if req.stream:
            return await _stream(request, service, req)
        served = await service.route(req)
        build = chat_response if kind == "chat" else completion_response
        return _json(build(served.id, served.model, served.text, served.finish_reason,
                           served.usage, served.trim, served.created))
    finally:
        if service.metrics is not None:
            service.metrics.duration.labels(route).observe(time.perf_counter() - t0)


async def _stream(request: web.Request, service: RoutingService, req: Any) -> web.StreamResponse:
    """One SSE chunk per executed step, then a chunk with ``finish_reason`` and the full
    ``trim`` object, a usage chunk when ``stream_options.include_usage``, and ``[DONE]``.

    The response starts with the first step: an error before it (unknown budget, upstream
    down at step 1) is still a plain JSON error with its status; one after it is an
    ``{"error": ...}`` event (the ``openai`` client raises ``APIError`` on it)."""
    chat = req.kind == "chat"
    rid, created = new_id(req.kind), int(time.time())
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def on_step(rec: dict[str, Any], index: int) -> None:
        queue.put_nowait(("step", rec, index))

    task = asyncio.ensure_future(service.route(req, on_step, request_id=rid))
    task.add_done_callback(lambda _t: queue.put_nowait(("end",)))
    resp: web.StreamResponse | None = None

    async def start() -> web.StreamResponse:
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                        "Cache-Control": "no-cache"})
        await r.prepare(request)
        return r

    try:
        while True:
            item = await queue.get()
            if item[0] == "end":
                break
            _, rec, index = item
            text = ("\n\n" if index else "") + rec["text"]
            info = step_info(rec, index)
            chunk = (chat_chunk(rid, req.model, created, content=text, role=index == 0,
                                trim={"step": info}) if chat else
                     completion_chunk(rid, req.model, created, content=text,
                                      trim={"step": info}))
            if resp is None:
                resp = await start()
            await resp.write(_sse(chunk))
        try:
            served = task.result()
        except APIError as exc:
            if resp is None:
                raise  # nothing sent yet: a JSON error with its status (middleware)
            await resp.write(_sse(exc.to_body()))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if resp is None:
            resp = await start()
        make = chat_chunk if chat else completion_chunk
        await resp.write(_sse(make(rid, req.model, created, finish_reason=served.finish_reason,
                                   trim=served.trim)))
        if req.include_usage:
            await resp.write(_sse(make(rid, req.model, created, usage=served.usage,
                                       empty_choices=True)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    except ConnectionResetError:  # the client went away mid-stream: the finally cancels
        if service.metrics is not None:
            service.metrics.errors.labels("cancelled").inc()
        return resp if resp is not None else web.Response(status=499)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def create_app(service: RoutingService, *, close_service: bool = True) -> web.Application:
    """The aiohttp application serving ``service``; ``close_service``: close its endpoints
    and log when the app shuts down."""
    app = web.Application(middlewares=[_errors], client_max_size=4 * 1024 * 1024)
    app[SERVICE] = service
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    if close_service:
        async def _close(_app: web.Application) -> None:
            await service.aclose()

        app.on_cleanup.append(_close)
    return app


async def start_server(service: RoutingService, host: str = "127.0.0.1", port: int = 0,
                       **app_kw: Any) -> tuple[web.AppRunner, int]:
    """Start serving on ``host:port`` (0: an ephemeral port) in the running loop; returns the
    runner (``await runner.cleanup()`` stops it) and the bound port."""
    runner = web.AppRunner(create_app(service, **app_kw), handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


async def serve_forever(service: RoutingService, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, printing ``listening on URL`` once ready."""
    runner, bound = await start_server(service, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this platform
            pass
    print(f"trim-pomdp serve: listening on http://{host}:{bound}/v1 "
          f"(model {service.served_model!r}, policy {service.routers.name})", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
