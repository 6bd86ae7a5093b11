"""``trim-pomdp serve``: an OpenAI-compatible server that routes every request step by step.

Split as vLLM's entrypoints are: :mod:`.protocol` (request/response shapes and validation, in
OpenAI field names), :mod:`.service` (the logic: one request -> one TRIM episode through
:func:`trim_pomdp.serving.run_episode`; callable without HTTP) and :mod:`.app` (aiohttp.web:
routes, SSE, errors).  Needs the ``serve`` extra (aiohttp, prometheus-client).  Importing this
package imports neither; :mod:`.app` and the metrics do, when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "APIError": "trim_pomdp.serving.server.protocol",
    "RouteRequest": "trim_pomdp.serving.server.protocol",
    "parse_chat_request": "trim_pomdp.serving.server.protocol",
    "parse_completion_request": "trim_pomdp.serving.server.protocol",
    "RouterFactory": "trim_pomdp.serving.server.service",
    "RoutingService": "trim_pomdp.serving.server.service",
    "ServedEpisode": "trim_pomdp.serving.server.service",
    "ServeMetrics": "trim_pomdp.serving.server.service",
    "create_app": "trim_pomdp.serving.server.app",
    "start_server": "trim_pomdp.serving.server.app",
    "serve_forever": "trim_pomdp.serving.server.app",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trim_pomdp.serving.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
