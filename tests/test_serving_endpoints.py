"""Endpoint config, retrying transport and step generators, driven end to end over real HTTP
against the scripted fake server on 127.0.0.1, with each HTTP client (aiohttp and httpx): every
test that takes the ``server`` fixture runs once per client."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from fake_server import FakeServer, ScriptedStep

from trim_pomdp.serving import (
    ChatModel,
    CompletionModel,
    EndpointConfig,
    EndpointConfigError,
    EndpointError,
    ResponseFormatError,
)
from trim_pomdp.serving.endpoints import QWEN_MATH_PROMPT
from trim_pomdp.serving.http import HTTP_CLIENTS


@pytest.fixture(params=HTTP_CLIENTS)
def server(request):
    with FakeServer() as srv:
        srv.http_client = request.param  # read by cfg(): the client under test
        yield srv


def cfg(srv, model, **kw):
    kw.setdefault("http_client", getattr(srv, "http_client", "aiohttp"))
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    return EndpointConfig(base_url=srv.url + "/v1", model=model, **kw)


def gen(model_obj, problem, steps=()):
    async def go():
        async with model_obj:
            return await model_obj.generate_step(problem, list(steps))

    return asyncio.run(go())


def test_import_serving_does_not_import_an_http_client():
    code = (
        "import sys, trim_pomdp.serving, trim_pomdp.serving.runner, trim_pomdp.commands.route; "
        "print([m for m in ('httpx', 'aiohttp') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=300)
    assert out.stdout.strip() == "[]"


def test_default_http_client_is_aiohttp():
    assert EndpointConfig(base_url="http://h/v1", model="m").http_client == "aiohttp"


def test_missing_http_client_library_is_a_clear_error(monkeypatch):
    # a None entry in sys.modules makes `import aiohttp` raise ImportError
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    m = CompletionModel(EndpointConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    with pytest.raises(ModuleNotFoundError, match=r"http_client='aiohttp'.*pip install"):
        gen(m, "P")


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, base, model",
    [
        ("http://127.0.0.1:8000/v1/Qwen/Q-1.5B", "http://127.0.0.1:8000/v1", "Qwen/Q-1.5B"),
        ("http://127.0.0.1:8000/Qwen/Q-1.5B", "http://127.0.0.1:8000/v1", "Qwen/Q-1.5B"),
        ("https://h.example/api/v1/gpt-x", "https://h.example/api/v1", "gpt-x"),
        ("http://127.0.0.1:9/v1/m/", "http://127.0.0.1:9/v1", "m"),
    ],
)
def test_from_url(spec, base, model):
    c = EndpointConfig.from_url(spec, timeout=3.0)
    assert (c.base_url, c.model, c.timeout, c.name) == (base, model, 3.0, model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base_url": "127.0.0.1:8000", "model": "m"}, "base_url must be an http"),
        ({"base_url": "http://h/v1", "model": ""}, "model must be a non-empty string"),
        ({"base_url": "http://h/v1", "model": "m", "timeout": 0}, "timeout must be a number > 0"),
        ({"base_url": "http://h/v1", "model": "m", "max_retries": -1}, "max_retries must be"),
        ({"base_url": "http://h/v1", "model": "m", "max_connections": 0}, "max_connections"),
        ({"base_url": "http://h/v1", "model": "m", "circuit_breaker": 0}, "circuit_breaker must"),
        ({"base_url": "http://h/v1", "model": "m", "http_client": "requests"}, "http_client must"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(EndpointConfigError, match=match):
        EndpointConfig(**kwargs)


def test_from_url_without_model():
    with pytest.raises(EndpointConfigError, match="names no model"):
        EndpointConfig.from_url("http://127.0.0.1:8000/v1/")
    with pytest.raises(EndpointConfigError, match="endpoint must look like"):
        EndpointConfig.from_url("localhost:8000/m")


def test_backoff_schedule():
    c = EndpointConfig(base_url="http://h/v1", model="m", backoff_base=0.5, backoff_max=3.0)
    assert [c.backoff(k) for k in range(4)] == [0.5, 1.0, 2.0, 3.0]
    assert c.backoff(0, retry_after=2.5) == 2.5  # server's Retry-After wins when larger
    assert c.backoff(0, retry_after=99) == 3.0  # ... but stays capped


def test_api_key_from_env_and_headers(server, monkeypatch):
    monkeypatch.setenv("TRIM_TEST_KEY", "sk-123")
    m = CompletionModel(cfg(server, "cheap", api_key_env="TRIM_TEST_KEY", headers={"X-Run": "7"}))
    gen(m, "P")
    (req,) = server.requests("completions")
    assert req.headers["authorization"] == "Bearer sk-123"
    assert req.headers["x-run"] == "7"


def test_missing_api_key_env(server, monkeypatch):
    monkeypatch.delenv("TRIM_TEST_KEY", raising=False)
    m = CompletionModel(cfg(server, "cheap", api_key_env="TRIM_TEST_KEY"))
    with pytest.raises(EndpointConfigError, match="'TRIM_TEST_KEY' .* is not set"):
        gen(m, "P")
    assert server.requests() == []  # nothing was sent


# ---- completions -----------------------------------------------------------------------------


def test_completion_request_and_parse(server):
    server.add_solution("cheap", "What is 2+3?", [ScriptedStep("We add.", tokens=17),
                                                  ScriptedStep("So \\boxed{5}.", tokens=9)])
    m = CompletionModel(cfg(server, "cheap"), max_tokens=77)
    s1 = gen(m, "What is 2+3?")
    s2 = gen(m, "What is 2+3?", ["We add."])
    assert (s1.text, s1.tokens, s1.is_final, s1.finish_reason) == ("We add.", 17, False, "stop")
    assert (s2.text, s2.tokens, s2.is_final) == ("So \\boxed{5}.", 9, True)
    r1, r2 = server.requests("completions")
    assert r1.body["prompt"] == QWEN_MATH_PROMPT.replace("{problem}", "What is 2+3?")
    assert r2.body["prompt"] == r1.body["prompt"] + "We add.\n\n"
    assert r1.body["stop"] == ["\n\n"] and r1.body["max_tokens"] == 77
    assert r1.body["model"] == "cheap" and r1.body["temperature"] == 0.0
    assert s1.prompt_tokens == 100 and s2.prompt_tokens == 110


@pytest.mark.parametrize(
    "step, final",
    [
        (ScriptedStep("plain step"), False),  # stopped on "\n\n"
        (ScriptedStep("plain step", stop_reason=None), True),  # end of sequence
        (ScriptedStep("plain step", finish_reason="length"), True),  # max_tokens
        (ScriptedStep("the answer is \\boxed{3}"), True),  # carries the answer
        (ScriptedStep(""), True),  # empty continuation
    ],
)
def test_final_step_detection(server, step, final):
    server.add_solution("cheap", "Q", [step])
    assert gen(CompletionModel(cfg(server, "cheap")), "Q").is_final is final


def test_no_stop_reason_field_relies_on_marker():
    m = CompletionModel(EndpointConfig(base_url="http://h/v1", model="m"))
    assert m._is_final("text", {"finish_reason": "stop"}) is False
    assert m._is_final("\\boxed{1}", {"finish_reason": "stop"}) is True
    assert m._is_final("text", {"finish_reason": "length"}) is True


def test_missing_usage_estimates_tokens(server):
    server.add_solution("cheap", "Q", [ScriptedStep("x" * 10, usage=False)])
    s = gen(CompletionModel(cfg(server, "cheap")), "Q")
    assert (s.tokens, s.tokens_estimated) == (3, True)  # ceil(10 / 4)


# ---- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [503, 500, 429, "disconnect"])
def test_retry_then_success(server, error):
    server.fail("completions", times=2, error=error)
    m = CompletionModel(cfg(server, "cheap", max_retries=2))
    s = gen(m, "P")
    assert s.text.startswith("[cheap] step 1")
    assert len(server.requests("completions")) == 3
    assert m.transport.stats.retries == 2 and m.transport.stats.failures == 0


def test_retry_after_header_is_honoured(server):
    server.fail("completions", times=1, error=429, retry_after=0.3)
    m = CompletionModel(cfg(server, "cheap", max_retries=1, backoff_max=5.0))
    gen(m, "P")
    first, second = server.requests("completions")
    assert first.status == 429 and second.status == 200
    # our own backoff would be 1 ms; the server asked for 0.3 s
    assert second.start - first.end >= 0.3


def test_timeout_is_retried(server):
    # the client's timeout is generous enough for a loaded machine to answer the retry in
    # time; the held request is held far longer than it
    server.fail("completions", times=1, error="timeout", hold_s=60.0)
    m = CompletionModel(cfg(server, "cheap", timeout=2.0, max_retries=1))
    s = gen(m, "P")
    assert s.text.startswith("[cheap] step 1")
    assert len(server.requests("completions")) == 2


def test_retries_exhausted(server):
    server.fail("completions", times=None, error=502)
    m = CompletionModel(cfg(server, "cheap", max_retries=3))
    with pytest.raises(EndpointError, match="failed after 4 attempts; last: HTTP 502") as ei:
        gen(m, "P")
    assert (ei.value.status, ei.value.attempts, ei.value.endpoint) == (502, 4, "cheap")
    assert len(server.requests("completions")) == 4


def test_client_error_not_retried(server):
    server.fail("completions", times=None, error=400)
    m = CompletionModel(cfg(server, "cheap", max_retries=3))
    with pytest.raises(EndpointError, match="HTTP 400.*not retried"):
        gen(m, "P")
    assert len(server.requests("completions")) == 1


def test_connection_refused_is_endpoint_error():
    srv = FakeServer().start()
    url = srv.url
    srv.stop()  # nothing listens on that port any more
    m = CompletionModel(EndpointConfig(base_url=url + "/v1", model="m", max_retries=1,
                                       backoff_base=0.001))
    with pytest.raises(EndpointError, match="after 2 attempts; last: connection error"):
        gen(m, "P")


@pytest.mark.parametrize("error", ["badjson", "truncate"])
def test_unusable_200_body_is_retried_like_a_5xx(server, error):
    # a 200 whose body is not JSON, e.g. cut off mid-JSON by a proxy whose upstream reset,
    # is a transient fault: retried with the same backoff, counted, then the call succeeds
    server.fail("completions", times=2, error=error)
    m = CompletionModel(cfg(server, "cheap", max_retries=2))
    s = gen(m, "P")
    assert s.text.startswith("[cheap] step 1") and s.tokens == 10
    assert [r.status for r in server.requests("completions")] == [error, error, 200]
    st = m.transport.stats
    assert (st.bad_responses, st.retries, st.failures) == (2, 2, 0)


def test_unusable_200_body_after_retries_is_a_format_error(server):
    server.fail("completions", times=None, error="truncate")
    m = CompletionModel(cfg(server, "cheap", max_retries=2))
    with pytest.raises(ResponseFormatError, match=r"failed after 3 attempts; last: HTTP 200 but "
                       r"returned a body that is not JSON \(\d+ bytes\): '\{\"id\"") as ei:
        gen(m, "P")
    assert (ei.value.attempts, ei.value.endpoint) == (3, "cheap")
    assert len(server.requests("completions")) == 3 and m.transport.stats.bad_responses == 3


def test_deeply_nested_body_is_a_format_error(server, monkeypatch):
    # json.loads raises RecursionError on [[[[...; that is a bad body, not a crash
    m = CompletionModel(cfg(server, "cheap", max_retries=0))

    async def fake_post(url, payload, headers):
        return 200, b"[" * 100_000, None

    async def go():
        async with m:
            m.transport._get_backend().post = fake_post
            return await m.generate_step("P", [])

    with pytest.raises(ResponseFormatError, match="nested too deep"):
        asyncio.run(go())


BAD_VALUES = [
    ("neg_tokens", r"usage.completion_tokens is -5; expected an integer in \[0, "),
    ("bool_tokens", "usage.completion_tokens is True"),
    ("float_tokens", "usage.completion_tokens is 3.5"),
    ("str_tokens", "usage.completion_tokens is '12'"),
    ("huge_tokens", "usage.completion_tokens is 1000000000000000000000000000000"),
    ("neg_prompt_tokens", "usage.prompt_tokens is -1"),
    ("usage_list", "'usage' is list; expected an object or null"),
    ("surrogate", r"choices\[0\].text holds a lone surrogate '\\ud800' at character 5"),
    ("text_int", "choice has no string 'text'"),
    ("text_null", "choice has no string 'text'"),
    ("no_choices", "returned no 'choices'"),
    ("empty_choices", "returned no 'choices'"),
    ("choices_dict", "returned no 'choices'"),
    ("finish_int", "finish_reason is 3; expected a string or null"),
    ("array_body", "returned JSON list; expected an object"),
]


@pytest.mark.parametrize("error, match", BAD_VALUES)
def test_bad_value_in_a_200_fails_only_that_call_and_is_retried(server, error, match):
    # the value is checked where the response is parsed: one bad answer costs a retry
    server.fail("completions", times=1, error=error)
    m = CompletionModel(cfg(server, "cheap", max_retries=1))
    s = gen(m, "P")
    assert (s.text, s.tokens, s.prompt_tokens) == (s.text, 10, 100)
    assert s.text.startswith("[cheap] step 1") and m.transport.stats.bad_responses == 1
    # ... and when every answer is bad, the call fails with a message naming the value
    server.fail("completions", times=None, error=error)
    with pytest.raises(ResponseFormatError, match=match):
        gen(CompletionModel(cfg(server, "cheap", max_retries=1)), "P")


def test_chat_bad_values_are_checked_too(server):
    server.fail("chat", times=None, error="surrogate")
    with pytest.raises(ResponseFormatError, match=r"choices\[0\].message.content holds a lone"):
        gen(ChatModel(cfg(server, "closed", max_retries=0)), "P")


def test_usage_null_or_without_completion_tokens_is_estimated():
    m = CompletionModel(EndpointConfig(base_url="http://h/v1", model="m"))
    for usage in (None, {}, {"prompt_tokens": 3}):
        body = {"choices": [{"text": "x" * 9, "finish_reason": "stop"}], "usage": usage}
        s = m._parse(body, "u", "text", 0.0)
        assert (s.tokens, s.tokens_estimated) == (3, True)


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "no-length"])
def test_oversized_body_fails_typed_not_retried_and_memory_stays_bounded(server, declare):
    import tracemalloc

    from trim_pomdp.serving import ResponseTooLargeError

    limit = 1 << 20
    server.fail("completions", times=1, error="huge", huge_bytes=48 << 20, declare_length=declare)
    m = CompletionModel(cfg(server, "cheap", max_retries=3, max_response_bytes=limit))

    async def go():
        async with m:
            with pytest.raises(ResponseTooLargeError,
                               match="over max_response_bytes=1048576") as ei:
                await m.generate_step("P", [])
            _, peak = tracemalloc.get_traced_memory()
            after = await m.generate_step("P", [])  # the dropped connection broke nothing
            return ei.value, peak, after

    tracemalloc.start()
    try:
        err, peak, after = asyncio.run(go())
    finally:
        tracemalloc.stop()
    assert err.attempts == 1 and err.status == 200 and len(str(err)) < 400
    assert ("Content-Length" in str(err)) is declare
    assert len(server.requests("completions")) == 2  # not retried; then the next call
    assert m.transport.stats.too_large == 1
    # the 48 MiB body was never held: client and server together stayed within a few MiB
    assert peak < 6 * limit, peak
    assert after.text.startswith("[cheap] step 1")


def test_max_response_bytes_validation():
    with pytest.raises(EndpointConfigError, match="max_response_bytes must be an int >= 1"):
        EndpointConfig(base_url="http://h/v1", model="m", max_response_bytes=0)
    assert EndpointConfig(base_url="http://h/v1", model="m").max_response_bytes == 16 << 20


def test_rate_failures_are_deterministic_per_body():
    # the fake server's rate faults depend on the body and its count, not on request order
    def run(order):
        with FakeServer() as srv:
            srv.fail("completions", times=None, error=503, rate=0.5, seed=3)
            m = CompletionModel(cfg(srv, "cheap", max_retries=0))
            out = {}
            for p in order:
                try:
                    gen(m, p)
                    out[p] = "ok"
                except EndpointError:
                    out[p] = "fail"
            return out

    ps = [f"P{i}" for i in range(40)]
    a, b = run(ps), run(ps[::-1])
    assert a == b and 5 < list(a.values()).count("fail") < 35


def test_model_reusable_across_event_loops(server):
    # both clients bind their pools to the event loop: after `async with` closes the pool in
    # one asyncio.run, the next run opens a new one
    m = CompletionModel(cfg(server, "cheap"))
    a = gen(m, "P")
    assert m.transport.backend is None
    b = gen(m, "P")
    assert a.text == b.text and len(server.requests("completions")) == 2


def test_unclosed_pool_of_an_ended_loop_is_dropped_quietly(server, recwarn, caplog):
    # a user who never closes the model and calls asyncio.run twice: the second run must open
    # a fresh pool, and the stale one must not raise, nor make aiohttp log an "Unclosed client
    # session/connector" error.  (The stale sockets themselves are only freed by the garbage
    # collector, with Python's ResourceWarning, which is ignored by default; httpx does the
    # same.  Closing the model in its own loop, as run_batch and `async with` do, avoids it.)
    m = CompletionModel(cfg(server, "cheap"))

    async def one():
        return await m.generate_step("P", [])

    a = asyncio.run(one())
    first = m.transport.backend
    b = asyncio.run(one())
    assert m.transport.backend is not first and a.text == b.text
    asyncio.run(m.aclose())
    del first
    import gc

    gc.collect()
    messages = [str(w.message) for w in recwarn] + [caplog.text]
    assert not [t for t in messages if "Unclosed client session" in t or "Unclosed connector" in t]


# ---- chat ------------------------------------------------------------------------------------


def test_chat_instruct_mode(server):
    server.add_solution("closed", "Q?", [ScriptedStep("A."), ScriptedStep("B \\boxed{1}")])
    m = ChatModel(cfg(server, "closed"))
    s1 = gen(m, "Q?")
    s2 = gen(m, "Q?", ["A."])
    assert (s1.text, s1.is_final, s2.text, s2.is_final) == ("A.", False, "B \\boxed{1}", True)
    r1, r2 = server.requests("chat")
    assert [m["role"] for m in r1.body["messages"]] == ["system", "user"]
    assert [m["role"] for m in r2.body["messages"]] == ["system", "user", "assistant", "user"]
    assert r2.body["messages"][2]["content"] == "A."
    assert "continue_final_message" not in r2.body


def test_chat_prefill_mode(server):
    server.add_solution("closed", "Q?", [ScriptedStep("A."), ScriptedStep("B."), ScriptedStep("C")])
    m = ChatModel(cfg(server, "closed"), mode="prefill")
    s = gen(m, "Q?", ["A.", "B."])
    assert s.text == "C"
    (r,) = server.requests("chat")
    assert r.body["messages"][-1] == {"role": "assistant", "content": "A.\n\nB.\n\n"}
    assert r.body["continue_final_message"] is True and r.body["add_generation_prompt"] is False


def test_generator_argument_errors():
    c = EndpointConfig(base_url="http://h/v1", model="m")
    with pytest.raises(EndpointConfigError, match="must contain '\\{problem\\}'"):
        CompletionModel(c, prompt_template="no placeholder")
    with pytest.raises(EndpointConfigError, match="mode must be"):
        ChatModel(c, mode="x")
    with pytest.raises(EndpointConfigError, match="stop must be a non-empty sequence"):
        CompletionModel(c, stop="\n\n")
    with pytest.raises(TypeError, match="config must be an EndpointConfig"):
        CompletionModel("http://h/v1")


def test_sharded_httpx_pool_serves_all_requests_concurrently():
    # 20 connections -> 3 httpx pools of 7; 20 simultaneous requests must all be in flight
    # together (none queued behind another), and each pool must be used; the latency is long
    # enough for all 20 to arrive before the first answer even on a loaded machine
    with FakeServer(latency={"completions": 2.0}) as server:
        m = CompletionModel(cfg(server, "cheap", max_connections=20, http_client="httpx"))

        async def go():
            async with m:
                out = await asyncio.gather(*[m.generate_step(f"P{i}", []) for i in range(20)])
                n_pools = len(m.transport.backend.clients)
                return out, n_pools

        out, n_pools = asyncio.run(go())
        assert len(out) == 20 and n_pools == 3
        assert server.max_in_flight["completions"] == 20


@pytest.mark.parametrize("max_connections, expected", [(20, 20), (5, 5)])
def test_pool_size_bounds_requests_in_flight(server, max_connections, expected):
    # 20 simultaneous requests: all in flight when the pool has room, never more than
    # max_connections otherwise (the rest wait for a free connection, then succeed)
    server.latency = {"completions": 0.5}  # all 20 are sent before the first answer
    m = CompletionModel(cfg(server, "cheap", max_connections=max_connections))

    async def go():
        async with m:
            return await asyncio.gather(*[m.generate_step(f"P{i}", []) for i in range(20)])

    out = asyncio.run(go())
    assert len(out) == 20 and all(s.text.startswith("[cheap] step 1") for s in out)
    assert server.max_in_flight["completions"] == expected
