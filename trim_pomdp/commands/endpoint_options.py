"""Command-line options shared by the commands that talk to model endpoints (``route``,
``serve``): the three endpoints, how to reach them (keys, headers, timeouts, retries, circuit
breaker, response size limit, HTTP library), how the models are asked (completions or chat)
and the fallback.

``add_endpoint_arguments(parser)`` declares them; ``build_endpoints(args, max_connections)``
turns the parsed namespace into the cheap and strong step generators and the PRM scorer.
"""

from __future__ import annotations

import argparse
from typing import Any

from trim_pomdp.errors import TrimPomdpError

__all__ = ["add_endpoint_arguments", "build_endpoints", "parse_headers"]


def add_endpoint_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--cheap/--strong/--prm`` and the options that configure their clients."""
    p.add_argument("--cheap", required=True, metavar="URL/MODEL", help="cheap model endpoint")
    p.add_argument("--strong", required=True, metavar="URL/MODEL", help="strong model endpoint")
    p.add_argument("--prm", required=True, metavar="URL/MODEL", help="vLLM PRM endpoint")
    p.add_argument("--max-tokens", type=int, default=1024, help="per step (default 1024)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="retries per request (default 3)")
    p.add_argument("--backoff", type=float, default=0.5, help="first backoff in s (default 0.5)")
    p.add_argument("--circuit-breaker", type=int, metavar="N",
                   help="after N consecutive failed calls to an endpoint, fail fast for "
                        "--circuit-cooldown seconds (default: off)")
    p.add_argument("--circuit-cooldown", type=float, default=30.0, metavar="S")
    p.add_argument("--max-response-mb", type=float, default=16.0, metavar="MB",
                   help="largest response body read, in MiB (default 16); a larger one fails "
                        "that call")
    p.add_argument("--api-key-env", metavar="VAR", help="env var with the API key (all endpoints)")
    for who in ("cheap", "strong", "prm"):
        p.add_argument(f"--{who}-api-key-env", metavar="VAR", help=f"API-key env var for {who}")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra HTTP header for every endpoint (repeatable)")
    p.add_argument("--http-client", choices=["aiohttp", "httpx"], default="aiohttp",
                   help="HTTP library (default aiohttp: ~6x less client CPU per request)")
    p.add_argument("--cheap-chat", action="store_true", help="cheap model via /chat/completions")
    p.add_argument("--strong-chat", action="store_true",
                   help="strong model via /chat/completions")
    p.add_argument("--fallback", choices=["keep-cheap", "abort"], default="keep-cheap",
                   help="when the strong model keeps failing (default keep-cheap)")


def parse_headers(items: list[str]) -> dict[str, str]:
    """``["Name: value", ...]`` -> ``{"Name": "value"}``."""
    out = {}
    for item in items:
        if ":" not in item:
            raise TrimPomdpError(f"--header must look like 'Name: value'; got {item!r}")
        k, v = item.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def build_endpoints(args: argparse.Namespace, max_connections: int) -> tuple[Any, Any, Any]:
    """``(cheap, strong, prm)`` clients from the options of :func:`add_endpoint_arguments`;
    each pool holds ``max_connections`` connections."""
    from trim_pomdp.serving import ChatModel, CompletionModel, EndpointConfig, VLLMPRMScorer

    if not args.max_response_mb > 0:
        raise TrimPomdpError(f"--max-response-mb must be > 0; got {args.max_response_mb}")
    headers = parse_headers(args.header)

    def config(spec: str, who: str) -> Any:
        key_env = getattr(args, f"{who}_api_key_env") or args.api_key_env
        return EndpointConfig.from_url(
            spec,
            api_key_env=key_env,
            timeout=args.timeout,
            max_retries=args.retries,
            backoff_base=args.backoff,
            headers=headers,
            max_connections=max_connections,
            circuit_breaker=args.circuit_breaker,
            circuit_cooldown=args.circuit_cooldown,
            name=who,
            http_client=args.http_client,
            max_response_bytes=max(1, int(args.max_response_mb * 1024 * 1024)),
        )

    gen = dict(max_tokens=args.max_tokens, temperature=args.temperature)
    cheap_cfg, strong_cfg = config(args.cheap, "cheap"), config(args.strong, "strong")
    cheap = ChatModel(cheap_cfg, **gen) if args.cheap_chat else CompletionModel(cheap_cfg, **gen)
    strong = (
        ChatModel(strong_cfg, **gen) if args.strong_chat else CompletionModel(strong_cfg, **gen)
    )
    prm = VLLMPRMScorer(config(args.prm, "prm"))
    return cheap, strong, prm
