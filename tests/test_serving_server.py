"""``trim-pomdp serve`` end to end: the server on 127.0.0.1 (ephemeral port) against the fake
cheap/strong/PRM backends, driven with the official ``openai`` client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_server import FakeServer, ScriptedStep

openai = pytest.importorskip("openai")
pytest.importorskip("aiohttp")
prom_parser = pytest.importorskip("prometheus_client.parser")

from trim_pomdp.serving import CompletionModel, EndpointConfig, VLLMPRMScorer  # noqa: E402
from trim_pomdp.serving.server.protocol import (  # noqa: E402
    APIError,
    parse_body,
    parse_chat_request,
    parse_completion_request,
)
from trim_pomdp.serving.server.service import RouterFactory, RoutingService  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 30.0  # generous: the machine is shared


class ServeThread:
    """The server on its own event loop in a background thread."""

    def __init__(self, srv: FakeServer, routers: RouterFactory, **service_kw):
        self.srv, self.routers, self.kw = srv, routers, service_kw
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = None

    def start(self) -> ServeThread:
        from trim_pomdp.serving.server.app import start_server

        self.thread.start()
        endpoint_kw = self.kw.pop("endpoint_kw", {})

        async def go():
            def c(model):
                return EndpointConfig(base_url=self.srv.url + "/v1", model=model,
                                      backoff_base=0.001, backoff_max=0.01, **endpoint_kw)

            self.service = RoutingService(CompletionModel(c("cheap")),
                                          CompletionModel(c("strong")),
                                          VLLMPRMScorer(c("prm")), self.routers, **self.kw)
            self.runner, self.port = await start_server(self.service)

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(DEADLINE)
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kw):
        kw.setdefault("timeout", DEADLINE)
        return openai.OpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0, **kw)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            if self.runner is not None:
                asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(
                    DEADLINE)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(DEADLINE)
            self.loop.close()


@pytest.fixture
def fake():
    with FakeServer(default_score=0.9, n_steps=3) as srv:
        script_p1(srv)
        yield srv


def script_p1(srv):
    # step 2's draft scores 0.1: TRIM-Thr(0.5) has the strong model rewrite it
    srv.add_solution("cheap", "P1", [
        ScriptedStep("c1", tokens=11, score=0.9),
        ScriptedStep("c2 bad", tokens=12, score=0.1),
        ScriptedStep("c3 so \\boxed{5}", tokens=13, score=0.8),
    ])
    srv.add_solution("strong", "P1", [
        ScriptedStep("s1", tokens=21), ScriptedStep("s2 good", tokens=22),
        ScriptedStep("s3 \\boxed{5}", tokens=23),
    ])


@pytest.fixture
def serve(fake):
    started = []

    def make(routers=None, **kw):
        s = ServeThread(fake, routers or RouterFactory.threshold(0.5), **kw).start()
        started.append(s)
        return s

    try:
        yield make
    finally:
        for s in started:
            s.stop()


def user(text):
    return [{"role": "user", "content": text}]


EXPECTED_TEXT = "c1\n\ns2 good\n\nc3 so \\boxed{5}"


def test_chat_completion_step_routed_with_usage_and_trim(serve, fake):
    s = serve()
    with s.client() as client:
        r = client.chat.completions.create(model="trim", messages=user("P1"))
    assert r.object == "chat.completion" and r.model == "trim"
    assert r.choices[0].message.content == EXPECTED_TEXT
    assert r.choices[0].finish_reason == "stop"
    # the fakes: drafts 11 + 12 + 13, the strong rewrite 22; prompt_tokens 100 on step 1
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        100, 11 + 22 + 13, 146)
    trim = r.model_extra["trim"]
    assert trim["cheap_tokens"] == 36 and trim["strong_tokens"] == 22
    assert trim["discarded_tokens"] == 12
    assert trim["cheap_tokens"] + trim["strong_tokens"] - trim["discarded_tokens"] == (
        r.usage.completion_tokens)
    assert trim["regenerations"] == 1 and trim["fallbacks"] == 0
    assert trim["calls"] == {"cheap": 3, "strong": 1, "prm": 3}
    assert [st["writer"] for st in trim["steps"]] == ["cheap", "strong", "cheap"]
    assert [st["draft_prm_score"] for st in trim["steps"]] == pytest.approx([0.9, 0.1, 0.8])
    assert trim["answer"] == "5" and trim["status"] == "done" and trim["ignored"] == []
    assert trim["final_belief"] is None  # a threshold router keeps no belief
    # what the fake saw: 3 drafts, 1 strong call, 3 PRM calls
    assert len(fake.requests("completions", "cheap")) == 3
    assert len(fake.requests("completions", "strong")) == 1
    assert len(fake.requests("pooling")) == 3


def test_chat_streaming_one_chunk_per_step(serve):
    s = serve()
    with s.client() as client:
        chunks = list(client.chat.completions.create(
            model="trim", messages=user("P1"), stream=True,
            stream_options={"include_usage": True}))
    steps = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(steps) == 3
    assert steps[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content for c in steps) == EXPECTED_TEXT
    assert [c.model_extra["trim"]["step"]["writer"] for c in steps] == [
        "cheap", "strong", "cheap"]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    assert final[0].model_extra["trim"]["regenerations"] == 1
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 46
    assert usage.usage.prompt_tokens == 100


def test_stream_without_usage_and_raw_sse_done(serve):
    import httpx

    s = serve()
    body = {"model": "trim", "messages": user("P1"), "stream": True}
    with httpx.Client(timeout=DEADLINE) as hc:
        r = hc.post(s.base + "/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert len(payloads) == 4  # 3 steps + the finish chunk, no usage chunk
    assert all("usage" not in p for p in payloads)


def test_completions_endpoint(serve):
    s = serve()
    with s.client() as client:
        r = client.completions.create(model="trim", prompt="P1")
        assert r.object == "text_completion" and r.choices[0].text == EXPECTED_TEXT
        assert r.usage.completion_tokens == 46
        chunks = list(client.completions.create(model="trim", prompt=["P1"], stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == EXPECTED_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_health_and_ignored_fields(serve):
    import httpx

    s = serve()
    with s.client() as client:
        models = client.models.list()
        assert [m.id for m in models.data] == ["trim"]
        info = models.data[0].model_extra["trim"]
        assert info["cheap"] == "cheap" and info["policy"] == "threshold(k=0.5)"
        r = client.chat.completions.create(
            model="trim", temperature=0.7, max_tokens=5,
            messages=[{"role": "system", "content": "be brief"}, *user("P1")])
    # not forwarded, but said so
    assert r.model_extra["trim"]["ignored"] == ["max_tokens", "temperature",
                                                "messages[0] (system)"]
    assert r.choices[0].message.content == EXPECTED_TEXT
    h = httpx.get(s.base + "/health", timeout=DEADLINE).json()
    assert h == {"status": "ok", "in_flight": 0, "max_concurrency": 64}


def test_request_errors_in_openai_format(serve, fake):
    import httpx

    s = serve()
    url = s.base + "/v1/chat/completions"
    with httpx.Client(timeout=DEADLINE) as hc:
        r = hc.post(url, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"
        assert "not valid JSON" in err["message"]
        r = hc.post(url, json=[1, 2])
        assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]["message"]
        r = hc.get(s.base + "/v1/nothing")
        assert r.status_code == 404 and "error" in r.json()
        r = hc.get(url)
        assert r.status_code == 405 and "error" in r.json()
    with s.client() as client:
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="gpt-4o", messages=user("P1"))
        assert e.value.body["code"] == "model_not_found" and "'gpt-4o'" in e.value.message
        cases = [
            (dict(n=2), "n"),
            (dict(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
            (dict(logprobs=True), "logprobs"),
            (dict(extra_body={"trim": {"budget": 0.1}}), "trim.budget"),  # threshold server
            (dict(extra_body={"trim": {"nope": 1}}), "trim.nope"),
            (dict(extra_body={"trim": {"max_steps": 31}}), "trim.max_steps"),
        ]
        for kw, param in cases:
            with pytest.raises(openai.BadRequestError) as e:
                client.chat.completions.create(model="trim", messages=user("P1"), **kw)
            assert e.value.body["param"] == param, kw
        with pytest.raises(openai.BadRequestError, match="not supported"):
            client.chat.completions.create(model="trim", messages=[
                *user("P1"), {"role": "assistant", "content": "x"}, *user("more")])
    assert fake.log == []  # nothing reached the backends


def test_upstream_down_is_502_naming_the_endpoint(serve, fake):
    s = serve(endpoint_kw={"max_retries": 0})
    with s.client() as client:
        fake.fail("pooling", times=1, error=503)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="trim", messages=user("P1"))
        assert e.value.status_code == 502
        assert e.value.body["endpoint"] == "prm" and e.value.body["type"] == "upstream_error"
        assert "upstream prm model" in e.value.message
        fake.fail("completions", model="cheap", times=1, error=500)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="trim", messages=user("P1"))
        assert e.value.status_code == 502 and e.value.body["endpoint"] == "cheap"
        # a strong failure falls back to the draft (keep_cheap, the default)
        fake.fail("completions", model="strong", times=1, error=503)
        r = client.chat.completions.create(model="trim", messages=user("P1"))
        assert r.model_extra["trim"]["fallbacks"] == 1
        assert r.choices[0].message.content == "c1\n\nc2 bad\n\nc3 so \\boxed{5}"
        # mid-stream (step 2's draft fails): the stream ends with an error event
        fake.fail("completions", model="cheap", times=1, error=500, skip=1)
        stream = client.chat.completions.create(model="trim", messages=user("P1"), stream=True)
        got = []
        with pytest.raises(openai.APIError, match="upstream cheap model"):
            for c in stream:
                got.append(c.choices[0].delta.content)
        assert got == ["c1"]


def test_strong_down_with_abort_fallback_is_502(serve, fake):
    s = serve(fallback="abort", endpoint_kw={"max_retries": 0})
    fake.fail("completions", model="strong", times=1, error=503)
    with s.client() as client, pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="trim", messages=user("P1"))
    assert e.value.status_code == 502 and e.value.body["endpoint"] == "strong"


def _bank(tmp_path):
    # known answers (as in test_serving_cli): at lambda = 1e6 a regeneration costs 1e6 per
    # strong token, so the policy never regenerates; at lambda = 0 a draft whose score is
    # 12x likelier under S2 than under S0 is regenerated
    np = pytest.importorskip("numpy")
    from trim_pomdp.routing.bank import solve_grid
    from trim_pomdp.routing.model import TrimModel
    obs = np.array([[0.05, 0.15, 0.3, 0.5], [0.5, 0.3, 0.15, 0.05], [0.6, 0.25, 0.1, 0.05]])
    model = TrimModel.from_parameters(p_w=0.85, p_s=0.95, hazard=np.full(30, 0.25),
                                      obs_matrix=obs)
    return solve_grid(model, [0.0, 1e6])


def test_per_request_budget_changes_regenerations(serve, fake, tmp_path):
    bank = _bank(tmp_path)
    fake.add_solution("cheap", "P2", [
        ScriptedStep("a", score=0.9), ScriptedStep("b", score=0.05),
        ScriptedStep("\\boxed{42}", score=0.9)])
    fake.add_solution("strong", "P2", [
        ScriptedStep("A"), ScriptedStep("B", tokens=50), ScriptedStep("\\boxed{42}")])
    s = serve(RouterFactory.from_bank(bank, 1e6))
    with s.client() as client:
        def regens(**kw):
            r = client.chat.completions.create(messages=user("P2"), **kw)
            return r.model_extra["trim"]

        default = regens(model="trim")
        assert default["budget"] == 1e6 and default["regenerations"] == 0
        low = regens(model="trim", extra_body={"trim": {"budget": 0.0}})
        assert low["budget"] == 0.0 and low["regenerations"] == 1
        assert low["strong_tokens"] == 50
        assert [st["decision"] for st in low["steps"]] == ["continue", "regenerate", "continue"]
        assert len(low["final_belief"]) == 3 and sum(low["final_belief"]) == pytest.approx(1)
        assert regens(model="trim:0")["regenerations"] == 1  # the model-name suffix
        assert regens(model="trim:1e6")["regenerations"] == 0
        for bad in (-1.0, 2e6):
            with pytest.raises(openai.BadRequestError) as e:
                regens(model="trim", extra_body={"trim": {"budget": bad}})
            assert e.value.body["code"] == "budget_out_of_range"
            assert "[0, 1e+06]" in e.value.message
        for kw in (dict(model="trim:cheap"), dict(model="trim:0",
                                                  extra_body={"trim": {"budget": 1e6}}),
                   dict(model="trim", extra_body={"trim": {"budget": "low"}})):
            with pytest.raises(openai.BadRequestError):
                regens(**kw)


def test_metrics_parse_and_count(serve, fake):
    import httpx

    s = serve(endpoint_kw={"max_retries": 0})
    with s.client() as client:
        client.chat.completions.create(model="trim", messages=user("P1"))
        fake.fail("pooling", times=1, error=503)
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="trim", messages=user("P1"))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=user("P1"))
    text = httpx.get(s.base + "/metrics", timeout=DEADLINE).text
    fams = {f.name: f for f in prom_parser.text_string_to_metric_families(text)}

    def value(name, suffix="", **labels):
        for smp in fams[name].samples:
            if smp.name == name + suffix and all(smp.labels.get(k) == v
                                                 for k, v in labels.items()):
                return smp.value
        raise KeyError((name, labels))

    assert value("trim_regenerations", "_total") == 1
    assert value("trim_tokens", "_total", model="cheap") == 36 + 11  # + the failed episode's
    assert value("trim_tokens", "_total", model="strong") == 22
    assert value("trim_strong_token_fraction") == pytest.approx(22 / (22 + 36 + 11))
    assert value("trim_upstream_latency_seconds", "_count", endpoint="cheap") == 3 + 1
    assert value("trim_upstream_latency_seconds", "_count", endpoint="prm") == 3
    assert value("trim_upstream_errors", "_total", endpoint="prm") == 1
    assert value("trim_requests", "_total", route="/v1/chat/completions", status="200") == 1
    assert value("trim_requests", "_total", route="/v1/chat/completions", status="502") == 1
    assert value("trim_errors", "_total", type="upstream") == 1
    assert value("trim_errors", "_total", type="bad_request") == 1
    assert value("trim_requests", "_total", route="/v1/chat/completions", status="404") == 1
    assert value("trim_request_duration_seconds", "_count", route="/v1/chat/completions") == 3
    assert value("trim_episodes_in_flight") == 0


def test_concurrency_limit_and_busy(serve, fake):
    fake.latency["completions"] = 0.05
    s = serve(max_concurrency=2)
    from concurrent.futures import ThreadPoolExecutor

    with s.client() as client, ThreadPoolExecutor(6) as ex:
        futs = [ex.submit(client.chat.completions.create, model="trim",
                          messages=user(f"Q{i}")) for i in range(6)]
        texts = [f.result(DEADLINE).choices[0].message.content for f in futs]
    assert all(t.endswith("\\boxed{42}$ (" + t.rsplit("(", 1)[1]) for t in texts)
    assert fake.max_in_flight["completions"] <= 2  # one model call per episode at a time
    assert fake.max_in_flight["completions"] + fake.max_in_flight["pooling"] <= 4


def test_server_busy_is_429(serve, fake):
    fake.add_solution("cheap", "SLOW", [ScriptedStep("x \\boxed{1}", delay=1.0)])
    s = serve(max_concurrency=1, max_waiting=0)
    from concurrent.futures import ThreadPoolExecutor

    with s.client() as client, ThreadPoolExecutor(1) as ex:
        slow = ex.submit(client.chat.completions.create, model="trim", messages=user("SLOW"))
        t0 = time.monotonic()
        while s.service.in_flight == 0 and time.monotonic() - t0 < DEADLINE:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="trim", messages=user("P1"))
        assert e.value.body["code"] == "server_busy"
        assert slow.result(DEADLINE).choices[0].message.content == "x \\boxed{1}"


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_cancels_upstream_calls(serve, fake, tmp_path, stream):
    import httpx

    # step 2's draft takes 20 s: the client gives up after step 1
    fake.add_solution("cheap", "HANG", [ScriptedStep("h1"), ScriptedStep("h2", delay=20.0),
                                        ScriptedStep("\\boxed{1}")])
    log = tmp_path / "served.jsonl"
    s = serve(log_path=str(log))
    body = {"model": "trim", "messages": user("HANG"), "stream": stream}
    with httpx.Client(timeout=httpx.Timeout(DEADLINE, read=1.0)) as hc:
        with pytest.raises(httpx.ReadTimeout):
            with hc.stream("POST", s.base + "/v1/chat/completions", json=body) as r:
                for _ in r.iter_bytes():
                    pass
    t0 = time.monotonic()
    while (s.service.in_flight or fake.dropped == 0) and time.monotonic() - t0 < DEADLINE:
        time.sleep(0.02)
    assert s.service.in_flight == 0
    assert fake.dropped == 1  # the held draft request was closed by our client, not answered
    assert len(fake.requests("pooling")) == 1  # nothing after the cancelled call
    partial = [json.loads(x) for x in Path(str(log) + ".errors.jsonl").read_text().splitlines()]
    assert len(partial) == 1 and partial[0]["status"] == "interrupted"
    assert [st["text"] for st in partial[0]["steps"]] == ["h1"]
    assert not log.exists() or log.read_text() == ""


def test_jsonl_log_is_a_trace_file(serve, fake, tmp_path):
    from trim_pomdp import load_traces

    log = tmp_path / "served.jsonl"
    s = serve(log_path=str(log))
    with s.client() as client:
        r = client.chat.completions.create(model="trim", messages=user("P1"))
        client.completions.create(model="trim", prompt="P9")
    s.stop()
    s.runner = None
    traces = load_traces(log)
    assert [t.id for t in traces][0] == r.id and len(traces) == 2
    t = traces[0]
    assert t.problem == "P1" and [st.text for st in t.steps] == EXPECTED_TEXT.split("\n\n")
    assert t.steps[1].extra["draft_prm_score"] == pytest.approx(0.1)
    assert t.steps[1].extra["writer"] == "strong" and t.steps[1].prm_score == pytest.approx(0.9)


def test_service_without_http(fake):
    from trim_pomdp.serving.server.protocol import RouteRequest

    def c(model):
        return EndpointConfig(base_url=fake.url + "/v1", model=model)

    async def go():
        svc = RoutingService(CompletionModel(c("cheap")), CompletionModel(c("strong")),
                             VLLMPRMScorer(c("prm")), RouterFactory.threshold(0.5),
                             metrics=False)
        seen = []
        try:
            out = await svc.route(RouteRequest(kind="chat", model="trim", problem="P1"),
                                  lambda rec, i: seen.append((i, rec["writer"])))
        finally:
            await svc.aclose()
        return out, seen

    out, seen = asyncio.run(go())
    assert out.text == EXPECTED_TEXT and seen == [(0, "cheap"), (1, "strong"), (2, "cheap")]
    assert out.usage["completion_tokens"] == 46


def test_protocol_validation():
    with pytest.raises(APIError, match="not valid JSON"):
        parse_body(b"\xff")
    ok = parse_chat_request({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text",
                                                                     "text": "b"}]}]})
    assert ok.problem == "ab" and ok.budget is None and not ok.stream
    bad = [
        ({"messages": user("x")}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": user("x"), "stream": "yes"}, "stream"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"model": "m", "messages": user("x"), "trim": {"budget": float("nan")}},
         "trim.budget"),
        ({"model": "m", "messages": user("x"), "trim": {"budget": True}}, "trim.budget"),
        ({"model": "m", "messages": user("x"), "response_format": {"type": "json_object"}},
         "response_format"),
    ]
    for body, param in bad:
        with pytest.raises(APIError) as e:
            parse_chat_request(body)
        assert e.value.status == 400 and e.value.param == param, body
    assert parse_completion_request({"model": "m", "prompt": ["p"]}).problem == "p"
    for prompt in (["a", "b"], "", 3):
        with pytest.raises(APIError):
            parse_completion_request({"model": "m", "prompt": prompt})
    with pytest.raises(APIError, match="'echo'"):
        parse_completion_request({"model": "m", "prompt": "p", "echo": True})


def test_serve_cli_end_to_end(fake, tmp_path):
    # the real command in a subprocess: ready line, a request, then SIGINT ends it with 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    u = fake.url
    cmd = [sys.executable, "-m", "trim_pomdp", "serve", "--cheap", f"{u}/v1/cheap",
           "--strong", f"{u}/v1/strong", "--prm", f"{u}/v1/prm", "--threshold", "0.5",
           "--port", "0", "--served-model-name", "routed", "--log", str(tmp_path / "l.jsonl")]
    from proc_utils import sigint_default

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=sigint_default)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, proc.stderr.read())
        base = line.split("listening on ", 1)[1].split()[0]
        with openai.OpenAI(base_url=base, api_key="x", max_retries=0,
                           timeout=DEADLINE) as client:
            r = client.chat.completions.create(model="routed", messages=user("P1"))
        assert r.choices[0].message.content == EXPECTED_TEXT
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
        assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        proc.stdout.close()
        proc.stderr.close()


def test_serve_cli_bad_arguments(tmp_path, capsys):
    from trim_pomdp.cli import main

    base = ["serve", "--cheap", "http://127.0.0.1:9/v1/c", "--strong", "http://127.0.0.1:9/v1/s",
            "--prm", "http://127.0.0.1:9/v1/p"]
    bank = _bank(tmp_path).save(tmp_path / "bank.npz")
    # bad arguments are bad input: one line, exit status 2
    assert main(base + ["--policy", str(bank)]) == 2
    assert "records no default budget" in capsys.readouterr().err
    assert main(base + ["--policy", str(bank), "--budget", "5e6"]) == 2
    assert "outside the bank's lambdas [0, 1e+06]" in capsys.readouterr().err
    assert main(base + ["--policy", str(bank), "--target-cost", "0.1"]) == 2
    assert "--target-cost needs --calibration-traces" in capsys.readouterr().err
    assert main(base + ["--threshold", "0.5", "--max-steps", "0"]) == 2
    assert "--max-steps must be in [1, 30]" in capsys.readouterr().err


def test_serve_uses_the_budget_the_bank_records(tmp_path, capsys):
    # the journey's defaults: a bank that records a default lambda (as solve-grid writes it)
    # serves with it when neither --budget nor --target-cost is given
    import argparse

    from trim_pomdp.commands import serve as serve_cmd

    bank = _bank(tmp_path)
    bank.default_lambda = 1e6
    path = bank.save(tmp_path / "bank.npz")
    parser = argparse.ArgumentParser()
    serve_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--cheap", "http://127.0.0.1:9/v1/c", "--strong",
                              "http://127.0.0.1:9/v1/s", "--prm", "http://127.0.0.1:9/v1/p",
                              "--policy", str(path)])
    factory = serve_cmd._routers(args)
    assert factory.default_budget == 1e6
    assert "default lambda 1e+06 (recorded in" in capsys.readouterr().out
    args.budget = 0.0  # an explicit --budget still wins
    assert serve_cmd._routers(args).default_budget == 0.0


def test_serve_target_cost_calibrates_on_traces(tmp_path):
    # known answers: on one trace whose step 2 scores 0.05, lambda = 0 regenerates that step
    # (cost fraction > 0) and lambda = 1e6 regenerates nothing (fraction 0)
    from types import SimpleNamespace

    from trim_pomdp.commands.serve import _routers

    bank = _bank(tmp_path).save(tmp_path / "bank.npz")
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps({"id": "a", "problem": "p", "model": "m", "final_correct": None,
                                  "steps": [{"text": "a", "prm_score": 0.9, "tokens": 10},
                                            {"text": "b", "prm_score": 0.05, "tokens": 10},
                                            {"text": "c", "prm_score": 0.9, "tokens": 10}]})
                      + "\n")
    for target, lam in ((0.0, 1e6), (1.0, 0.0)):
        args = SimpleNamespace(threshold=None, policy=str(bank), budget=None,
                               target_cost=target, calibration_traces=str(traces))
        routers = _routers(args)
        assert routers.default_budget == lam and routers.budget_range == (0.0, 1e6)
