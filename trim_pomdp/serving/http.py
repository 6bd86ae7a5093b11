"""Where and how to reach a model server (:class:`EndpointConfig`) and the retrying async
JSON transport every endpoint shares (:class:`JsonTransport`: two client backends, aiohttp
by default or httpx, retries with backoff and ``Retry-After``, timeouts, a response size
limit, SSL, statistics).  One idea, the transport, in about 600 lines: most of them the
two backends and their size-limited reads.

Nothing here opens a connection when imported, and the HTTP client library is imported only
when the first request is made, so ``import trim_pomdp.serving`` stays light.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trim_pomdp.errors import (
    EndpointConfigError,
    EndpointError,
    ResponseFormatError,
    ResponseTooLargeError,
)

__all__ = ["HTTP_CLIENTS", "MAX_RESPONSE_BYTES", "EndpointConfig", "RequestStats",
           "JsonTransport"]

MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # EndpointConfig.max_response_bytes default
_READ_CHUNK = 64 * 1024
HTTP_CLIENTS = ("aiohttp", "httpx")  # EndpointConfig.http_client; the first is the default


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise EndpointConfigError(f"{name} must be a number {bound}; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """Where and how to reach one model server.

    Parameters
    ----------
    base_url : str
        OpenAI-style base URL including the API prefix, e.g. ``"http://127.0.0.1:8000/v1"``;
        requests go to ``base_url + "/completions"`` etc.  vLLM's pooling route lives at the
        server root: the PRM scorer strips a trailing ``/v1`` (see :class:`VLLMPRMScorer`).
    model : str
        The served model name sent in every request body.
    api_key_env : str or None
        Name of the environment variable holding the API key (sent as ``Authorization:
        Bearer ...``).  Read when a request is made, never stored in the config or a trace.
        None: no key.  A named variable that is unset raises :class:`EndpointConfigError`.
    timeout : float
        Seconds allowed per request (connect + read + write), default 60.
    max_retries : int
        Retries after the first attempt on timeouts, connection errors, 429 and 5xx
        (default 3, so at most 4 requests).  Other 4xx are not retried.
    backoff_base, backoff_max : float
        Sleep before retry ``k = 0, 1, ...`` is ``min(backoff_max, backoff_base * 2**k)``
        seconds, or the server's ``Retry-After`` when larger (still capped at backoff_max).
    headers : Mapping[str, str]
        Extra headers sent with every request.
    max_connections : int
        Size of the connection pool (all kept alive), default 128.
    trust_env : bool
        Let the HTTP client read proxy settings (and, for httpx, certificate settings) from the
        environment (default False, so a stray ``HTTP_PROXY`` never reroutes traffic meant for
        a local server).
    http_client : {"aiohttp", "httpx"}
        The HTTP library (default ``"aiohttp"``, installed by the ``http`` extra).  Both are
        tested against the same fake server; aiohttp needs ~6x less client CPU per request
        (docs/readme_http.md), which matters when one process drives many episodes against
        fast models.
    circuit_breaker : int or None
        After this many consecutive failed calls (each after its retries), fail fast: further
        calls raise :class:`EndpointError` at once, without a request, for
        ``circuit_cooldown`` seconds; after that calls go through again, the next failure
        reopens the circuit and a success closes it.  None (default): never.  Stops a dead
        strong model from costing every episode its full retry schedule before the fallback
        applies.
    circuit_cooldown : float
        Seconds the circuit stays open (default 30).
    max_response_bytes : int
        Largest response body read (default 16 MiB, after content decoding).  Bodies are read
        in 64 KiB chunks and the connection is dropped once the limit is crossed, so a hostile
        or broken server cannot make the client hold more than this; the call then fails with
        :class:`ResponseTooLargeError` (not retried).
    name : str
        Label used in error messages, traces and timings (default: the model name).
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    headers: Mapping[str, str] = field(default_factory=dict)
    max_connections: int = 128
    trust_env: bool = False
    circuit_breaker: int | None = None
    circuit_cooldown: float = 30.0
    name: str = ""
    http_client: str = "aiohttp"
    max_response_bytes: int = MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EndpointConfigError(
                f"base_url must be an http(s) URL like 'http://127.0.0.1:8000/v1'; "
                f"got {self.base_url!r}"
            )
        if not isinstance(self.model, str) or not self.model:
            raise EndpointConfigError(f"model must be a non-empty string; got {self.model!r}")
        _check_positive("timeout", self.timeout)
        _check_positive("backoff_base", self.backoff_base, allow_zero=True)
        _check_positive("backoff_max", self.backoff_max, allow_zero=True)
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise EndpointConfigError(
                f"max_retries must be an int >= 0; got {self.max_retries!r}"
            )
        if self.circuit_breaker is not None and (
            not isinstance(self.circuit_breaker, int) or self.circuit_breaker < 1
        ):
            raise EndpointConfigError(
                f"circuit_breaker must be None or an int >= 1; got {self.circuit_breaker!r}"
            )
        _check_positive("circuit_cooldown", self.circuit_cooldown, allow_zero=True)
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise EndpointConfigError(
                f"max_connections must be an int >= 1; got {self.max_connections!r}"
            )
        if (
            not isinstance(self.max_response_bytes, int)
            or isinstance(self.max_response_bytes, bool)
            or self.max_response_bytes < 1
        ):
            raise EndpointConfigError(
                f"max_response_bytes must be an int >= 1; got {self.max_response_bytes!r}"
            )
        if self.http_client not in HTTP_CLIENTS:
            raise EndpointConfigError(
                f"http_client must be one of {HTTP_CLIENTS}; got {self.http_client!r}"
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "headers", dict(self.headers))
        if not self.name:
            object.__setattr__(self, "name", self.model)

    @classmethod
    def from_url(cls, spec: str, **kwargs: Any) -> EndpointConfig:
        """Build a config from the CLI's ``URL/MODEL`` form.

        Model names contain slashes (``Qwen/Qwen2.5-Math-7B``), so the split is: everything up
        to and including ``/v1`` is the base URL and the rest is the model; without ``/v1/`` in
        the string, the base URL is ``scheme://host:port/v1`` and the whole path is the model.

        >>> EndpointConfig.from_url("http://127.0.0.1:8000/v1/Qwen/Qwen2.5-1.5B").model
        'Qwen/Qwen2.5-1.5B'
        """
        parts = urlsplit(spec)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EndpointConfigError(
                f"endpoint must look like http://HOST:PORT[/v1]/MODEL; got {spec!r}"
            )
        path = parts.path
        if "/v1/" in path:
            prefix, model = path.split("/v1/", 1)
            base = f"{parts.scheme}://{parts.netloc}{prefix}/v1"
        else:
            model = path.lstrip("/")
            base = f"{parts.scheme}://{parts.netloc}/v1"
        model = model.strip("/")
        if not model:
            raise EndpointConfigError(
                f"endpoint {spec!r} names no model; expected http://HOST:PORT[/v1]/MODEL"
            )
        return cls(base_url=base, model=model, **kwargs)

    def auth_headers(self) -> dict[str, str]:
        """Headers for one request: the extra headers plus the bearer token, if configured."""
        out = dict(self.headers)
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointConfigError(
                    f"endpoint {self.name!r}: environment variable {self.api_key_env!r} "
                    "(api_key_env) is not set"
                )
            out["Authorization"] = f"Bearer {key}"
        return out

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based)."""
        delay = min(self.backoff_max, self.backoff_base * (2.0**retry))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay


@dataclass
class RequestStats:
    """Counters kept per transport (read them after a run)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    fast_failures: int = 0  # calls refused while the circuit was open
    bad_responses: int = 0  # 200 answers whose body was not usable (each one retried)
    too_large: int = 0  # bodies over max_response_bytes
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


class _Timeout(Exception):
    """A backend's request timed out (internal: the retry loop turns it into a message)."""


class _ConnectionFailed(Exception):
    """A backend could not connect, or the connection broke mid-request (internal)."""


class _TooLarge(Exception):
    """A body crossed the size limit (internal: ``(status, n_bytes, declared)``)."""

    def __init__(self, status: int, n_bytes: int, declared: bool) -> None:
        super().__init__(status, n_bytes, declared)
        self.status = status
        self.n_bytes = n_bytes
        self.declared = declared


def _import_client(name: str) -> Any:
    try:
        if name == "aiohttp":
            import aiohttp

            return aiohttp
        import httpx

        return httpx
    except ImportError as exc:
        other = "httpx" if name == "aiohttp" else "aiohttp"
        raise ModuleNotFoundError(
            f"EndpointConfig(http_client={name!r}) needs the {name} package, which is not "
            f"installed: pip install 'trim_pomdp[http]' (aiohttp) or pip install {name}, or set "
            f"http_client={other!r}",
            name=name,
        ) from exc


class _AiohttpBackend:
    """One ``aiohttp.ClientSession`` with a pool of ``max_connections`` kept-alive connections.

    The default backend: it costs 0.11-0.16 ms of client CPU per request here against
    0.7-1.1 ms for httpx (``client_floor`` in ``benchmarks/bench_serving.py``), and that CPU,
    not the runner, is what limits how many concurrent episodes one event loop can drive at
    short model latencies.
    """

    def __init__(self, config: EndpointConfig) -> None:
        aiohttp = _import_client("aiohttp")
        self._aiohttp = aiohttp
        # limit_per_host=0: the pool size is the only cap (every request goes to one host);
        # timeout: ``total`` covers waiting for a pooled connection, connecting, sending and
        # reading, i.e. the whole request as EndpointConfig.timeout documents
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_connections, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            trust_env=config.trust_env,
        )
        self.limit = config.max_response_bytes

    @property
    def closed(self) -> bool:
        return bool(self.session.closed)

    async def post(
        self, url: str, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, bytes, str | None]:
        aiohttp = self._aiohttp
        limit = self.limit
        try:
            async with self.session.post(url, json=payload, headers=headers) as resp:
                declared = resp.content_length
                if declared is not None and declared > limit:
                    resp.close()  # drop the connection: the body is never read
                    raise _TooLarge(resp.status, declared, True)
                chunks: list[bytes] = []
                n = 0
                async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                    n += len(chunk)
                    if n > limit:
                        resp.close()
                        raise _TooLarge(resp.status, n, False)
                    chunks.append(chunk)
                return resp.status, b"".join(chunks), resp.headers.get("Retry-After")
        except asyncio.TimeoutError as exc:  # before ClientError: ServerTimeoutError is both
            raise _Timeout(type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise _ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.session.close()

    def discard(self) -> None:
        """Drop a session whose event loop has ended, without the unclosed-session warning."""
        connector = self.session.connector
        self.session.detach()
        if connector is not None:
            # the loop is gone, so nothing can be awaited; _close() only drops the sockets
            # aiohttp kept for that loop (it returns at once for a closed loop)
            close = getattr(connector, "_close", None)
            if close is not None:
                close()


class _HttpxBackend:
    """httpx, as ``ceil(max_connections / SHARD)`` small ``httpx.AsyncClient`` pools.

    Each request goes to the least busy pool: httpcore's pool scans every connection on each
    request event (O(connections) per event, O(n^2) per burst; encode/httpcore#1035), which
    made 64 concurrent episodes several times slower than their latencies allow; shards of
    8 connections keep that scan short.
    """

    SHARD = 8

    def __init__(self, config: EndpointConfig) -> None:
        httpx = _import_client("httpx")
        self._httpx = httpx
        n = -(-config.max_connections // self.SHARD)
        size = -(-config.max_connections // n)
        # one SSL context for all shards (building one costs milliseconds)
        verify = _ssl_context(config.trust_env)
        self.clients = [
            httpx.AsyncClient(
                verify=verify,
                timeout=httpx.Timeout(config.timeout),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                trust_env=config.trust_env,
            )
            for _ in range(n)
        ]
        self.busy = [0] * n
        self.limit = config.max_response_bytes

    @property
    def closed(self) -> bool:
        return bool(self.clients[0].is_closed)

    async def post(
        self, url: str, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, bytes, str | None]:
        httpx = self._httpx
        busy = self.busy
        i = busy.index(min(busy))
        busy[i] += 1
        limit = self.limit
        try:
            async with self.clients[i].stream(
                "POST", url, json=payload, headers=headers
            ) as resp:
                try:
                    declared = int(resp.headers.get("content-length", ""))
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    raise _TooLarge(resp.status_code, declared, True)
                chunks: list[bytes] = []
                n = 0
                # leaving the block before the body is read closes the connection
                async for chunk in resp.aiter_bytes(_READ_CHUNK):
                    n += len(chunk)
                    if n > limit:
                        raise _TooLarge(resp.status_code, n, False)
                    chunks.append(chunk)
                return resp.status_code, b"".join(chunks), resp.headers.get("retry-after")
        except httpx.TimeoutException as exc:
            raise _Timeout(type(exc).__name__) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            busy[i] -= 1  # the body is read: the connection is free again

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()

    def discard(self) -> None:
        """httpx pools of an ended loop hold nothing that warns; let them be collected."""


class JsonTransport:
    """POST JSON to one endpoint with retries and exponential backoff (async).

    The HTTP client is ``config.http_client``: aiohttp (default) or httpx, imported on the first
    request.  Its connection pool is created lazily inside the running event loop, and
    recreated if a later call runs in a different loop (e.g. a second ``asyncio.run``),
    because both libraries bind their pools to the loop that opened them.
    """

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.stats = RequestStats()
        self._backend: _AiohttpBackend | _HttpxBackend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consecutive_failures = 0
        self._open_until = 0.0

    @property
    def backend(self) -> _AiohttpBackend | _HttpxBackend | None:
        """The open HTTP client (None before the first request and after ``aclose``)."""
        return self._backend

    def _get_backend(self) -> _AiohttpBackend | _HttpxBackend:
        loop = asyncio.get_running_loop()
        b = self._backend
        if b is None or self._loop is not loop or b.closed:
            if b is not None and self._loop is not loop:
                b.discard()
            cls = _AiohttpBackend if self.config.http_client == "aiohttp" else _HttpxBackend
            b = self._backend = cls(self.config)
            self._loop = loop
        return b

    async def aclose(self) -> None:
        """Close the connection pool (safe to call twice)."""
        b, self._backend = self._backend, None
        if b is not None:
            if self._loop is asyncio.get_running_loop():
                await b.aclose()
            else:
                b.discard()

    async def post(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        parse: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Any:
        """POST ``payload`` to ``url``; return the decoded JSON object, or ``parse(body)``.

        Retries (up to ``max_retries`` times) on timeouts, connection errors, HTTP 429 and 5xx,
        and on 200 answers whose body is unusable: not JSON (e.g. cut off mid-body by a proxy
        whose upstream reset), not an object, or rejected by ``parse`` with
        :class:`ResponseFormatError` (a field missing or of the wrong type, a negative token
        count, ...), sleeping :meth:`EndpointConfig.backoff` in between.  Raises
        :class:`EndpointError` when the retries are exhausted or the server answers another
        4xx, :class:`ResponseFormatError` when they are exhausted and the last fault was an
        unusable body, and :class:`ResponseTooLargeError` (not retried) for a body over
        ``max_response_bytes``.
        """
        cfg = self.config
        headers = cfg.auth_headers()
        if cfg.circuit_breaker is not None and time.monotonic() < self._open_until:
            self.stats.fast_failures += 1
            raise EndpointError(
                f"{cfg.name}: circuit open after {self._consecutive_failures} consecutive "
                f"failed calls; not calling {url} for "
                f"{self._open_until - time.monotonic():.1f} s more",
                endpoint=cfg.name,
                url=url,
                status=None,
                attempts=0,
            )
        status: int | None = None
        last = ""
        bad_body = False  # the last fault was an unusable 200 body
        attempts = 0
        t0 = time.perf_counter()
        try:
            for attempt in range(cfg.max_retries + 1):
                attempts += 1
                self.stats.requests += 1
                retry_after: float | None = None
                bad_body = False
                backend = self._get_backend()
                try:
                    status, raw, retry_after_header = await backend.post(url, payload, headers)
                except _Timeout as exc:
                    status, last = None, f"timed out after {cfg.timeout:g} s ({exc})"
                except _ConnectionFailed as exc:
                    status, last = None, f"connection error ({exc})"
                except _TooLarge as exc:
                    self.stats.too_large += 1
                    self._count_failure()
                    size = (
                        f"of {exc.n_bytes} bytes (Content-Length)"
                        if exc.declared
                        else f"reading stopped at {exc.n_bytes} bytes"
                    )
                    raise ResponseTooLargeError(
                        f"{cfg.name}: POST {url} answered HTTP {exc.status} with a body over "
                        f"max_response_bytes={cfg.max_response_bytes} ({size}; not retried)",
                        endpoint=cfg.name,
                        url=url,
                        status=exc.status,
                        attempts=attempts,
                    ) from None
                else:
                    if status < 300:
                        try:
                            out = _decode(raw, url, cfg.name)
                            if parse is not None:
                                out = parse(out)
                        except ResponseFormatError as exc:
                            self.stats.bad_responses += 1
                            bad_body, last = True, str(exc)
                            prefix = f"{cfg.name}: {url}"
                            if last.startswith(prefix):  # said once in the final message
                                last = "HTTP 200 but " + last[len(prefix) :].lstrip(": ")
                        else:
                            self._consecutive_failures = 0
                            return out
                    else:
                        last = f"HTTP {status}: {_preview(raw)}"
                        if status != 429 and status < 500:
                            raise EndpointError(
                                f"{cfg.name}: POST {url} failed with {last} (not retried)",
                                endpoint=cfg.name,
                                url=url,
                                status=status,
                                attempts=attempts,
                            )
                        retry_after = _parse_retry_after(retry_after_header)
                if attempt < cfg.max_retries:
                    self.stats.retries += 1
                    await asyncio.sleep(cfg.backoff(attempt, retry_after))
            self._count_failure()
            message = f"{cfg.name}: POST {url} failed after {attempts} attempts; last: {last}"
            if bad_body:
                raise ResponseFormatError(message, endpoint=cfg.name, url=url, attempts=attempts)
            raise EndpointError(
                message, endpoint=cfg.name, url=url, status=status, attempts=attempts
            )
        finally:
            self.stats.seconds += time.perf_counter() - t0

    def _count_failure(self) -> None:
        cfg = self.config
        self.stats.failures += 1
        self._consecutive_failures += 1
        if cfg.circuit_breaker is not None and self._consecutive_failures >= cfg.circuit_breaker:
            self._open_until = time.monotonic() + cfg.circuit_cooldown


def _decode(raw: bytes, url: str, name: str) -> dict[str, Any]:
    """A 200 body as a JSON object, or :class:`ResponseFormatError`.

    ``RecursionError`` (a body nested thousands deep) and the digit-limit ``ValueError`` of
    huge integer literals are body faults like any other malformed JSON.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else "not JSON"
        raise ResponseFormatError(
            f"{name}: {url} returned a body that is {reason} ({len(raw)} bytes): "
            f"{_preview(raw, 120)!r}"
        ) from None
    if not isinstance(body, dict):
        raise ResponseFormatError(
            f"{name}: {url} returned JSON {type(body).__name__}; expected an object"
        )
    return body


def _preview(raw: bytes, n: int = 300) -> str:
    return raw[:n].decode("utf-8", "replace")


_SSL_CONTEXTS: dict[bool, Any] = {}


def _ssl_context(trust_env: bool) -> Any:
    """httpx's default verifying SSL context, built once per process (per ``trust_env``)."""
    ctx = _SSL_CONTEXTS.get(trust_env)
    if ctx is None:
        import httpx

        if hasattr(httpx, "create_ssl_context"):
            ctx = httpx.create_ssl_context(trust_env=trust_env)
        else:  # what httpx builds for verify=True: the system defaults + certifi's bundle
            import ssl

            import certifi

            ctx = ssl.create_default_context(cafile=certifi.where())
        _SSL_CONTEXTS[trust_env] = ctx
    return ctx


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None
