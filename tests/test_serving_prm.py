"""PRM scorers: vLLM pooling (Qwen2.5-Math-PRM format) over HTTP (each test that takes the
``server`` fixture runs once per HTTP client), and plain callables."""

from __future__ import annotations

import asyncio
import math

import pytest
from fake_server import FakeServer

from trim_pomdp.serving import CallableScorer, EndpointConfig, ResponseFormatError, VLLMPRMScorer
from trim_pomdp.serving.endpoints import HTTP_CLIENTS, EndpointConfigError


@pytest.fixture(params=HTTP_CLIENTS)
def server(request):
    with FakeServer(default_score=0.5) as srv:
        srv.http_client = request.param
        yield srv


def cfg(srv, base=None, **kw):
    kw.setdefault("backoff_base", 0.001)
    return EndpointConfig(base_url=base or srv.url + "/v1", model="prm",
                          http_client=srv.http_client, **kw)


def score(scorer, problem, steps):
    async def go():
        try:
            return await scorer.score(problem, steps)
        finally:
            await scorer.aclose()

    return asyncio.run(go())


def test_pooling_request_format_and_scores(server):
    server.scores.update({"a": 0.25, "b": 0.875})
    prm = VLLMPRMScorer(cfg(server))
    assert prm.url == server.url + "/pooling"  # vLLM's pooling route is at the server root
    assert score(prm, "Q", ["a", "b", "c"]) == [0.25, 0.875, 0.5]
    (req,) = server.requests("pooling")
    assert req.body == {
        "model": "prm",
        "input": (
            "<|im_start|>system\nPlease reason step by step, and put your final answer within "
            "\\boxed{}.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
            "<|im_start|>assistant\na<extra_0>b<extra_0>c<extra_0><|im_end|>\n"
        ),
    }


def test_pooling_logit_rows_get_softmax(server):
    server.logits = True  # rows [0, log(p / (1 - p))]: softmax gives back p
    server.scores.update({"a": 0.2, "b": 0.7})
    prm = VLLMPRMScorer(cfg(server, server.url))
    got = score(prm, "Q", ["a", "b"])
    assert got == pytest.approx([0.2, 0.7], abs=1e-12)


def test_row_score_rules():
    prm = VLLMPRMScorer(EndpointConfig(base_url="http://h/v1", model="p"))
    assert prm._row_score([0.3, 0.7], 0) == 0.7
    z = [1.0, 3.0]  # logits: softmax(z)[1] = 1 / (1 + e^-2)
    assert prm._row_score(z, 0) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-15)
    assert prm._row_score(0.4, 0) == 0.4
    with pytest.raises(ResponseFormatError, match="row 0 .*expected a list of class scores"):
        prm._row_score([0.3], 0)
    with pytest.raises(ResponseFormatError, match="non-finite"):
        prm._row_score([0.3, float("nan")], 0)


def _bf16(x):
    """Round to bfloat16 (8-bit mantissa, round to nearest even), as a float."""
    import numpy as np

    u = np.array(x, dtype=np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return float(u.astype(np.uint32).view(np.float32))


def test_auto_takes_bfloat16_probabilities_as_probabilities():
    # vLLM ~0.7 applies the PRM's softmax in bfloat16: the pair no longer sums to 1 within
    # 1e-3, and must not be mistaken for logits and softmaxed again
    prm = VLLMPRMScorer(EndpointConfig(base_url="http://h/v1", model="p"))
    ps = [i / 200 for i in range(1, 200)]
    rows = [[_bf16(1 - p), _bf16(p)] for p in ps]
    assert _bf16(0.8) != 0.8 and _bf16(1.0) == 1.0
    off = sum(abs(sum(r) - 1) > 1e-3 for r in rows)
    assert off > 40  # the rows a 1e-3 check would have softmaxed a second time
    got = [prm._row_score(r, i) for i, r in enumerate(rows)]
    assert got == pytest.approx(ps, abs=4e-3)  # bfloat16 resolution near 1 is 2^-8


def test_pooling_wrong_row_count(server):
    # a separator inside a step's text makes the server return one row too many
    prm = VLLMPRMScorer(cfg(server, server.url, max_retries=1))
    with pytest.raises(ResponseFormatError, match="got 3 step scores for 2 steps"):
        score(prm, "Q", ["a<extra_0>x", "b"])
    assert len(server.requests("pooling")) == 2  # retried like any unusable answer


@pytest.mark.parametrize(
    "error, match",
    [
        ("prm_short_row", r"row 0 is \[0.5\]; expected a list of class scores with index 1"),
        ("prm_long_row", r"row 0 has 3 entries: \[0.5, 0.5, 0.0\]; expected 2 class scores"),
        ("prm_nan", r"row 0 has non-finite or non-numeric values: \[nan, nan\]"),
        ("prm_inf", r"row 0 has non-finite or non-numeric values: \[0.0, inf\]"),
        ("prm_bool", r"row 0 has non-finite or non-numeric values: \[False, True\]"),
        ("prm_string", "row 0 has non-finite or non-numeric values"),
        ("prm_extra_row", "got 3 step scores for 2 steps"),
        ("prm_no_rows", "got 0 step scores for 2 steps"),
        ("prm_no_data", "returned no pooling 'data'"),
        ("prm_bare_score", "score 0 is 1.5; expected a float in \\[0, 1\\]"),
        ("truncate", "not JSON"),
    ],
)
def test_bad_pooling_answer_fails_only_that_call_and_is_retried(server, error, match):
    server.fail("pooling", times=1, error=error)
    prm = VLLMPRMScorer(cfg(server, max_retries=1))
    assert score(prm, "Q", ["a", "b"]) == [0.5, 0.5]
    assert prm.transport.stats.bad_responses == 1
    server.fail("pooling", times=None, error=error)
    with pytest.raises(ResponseFormatError, match=match):
        score(VLLMPRMScorer(cfg(server, max_retries=1)), "Q", ["a", "b"])


def test_n_classes_none_accepts_longer_rows():
    prm = VLLMPRMScorer(EndpointConfig(base_url="http://h/v1", model="p"), n_classes=None)
    assert prm._row_score([0.2, 0.3, 0.5], 0) == 0.3
    with pytest.raises(EndpointConfigError, match="n_classes must be None or an int > positive"):
        VLLMPRMScorer(EndpointConfig(base_url="http://h/v1", model="p"), n_classes=1)


def test_scorer_config_errors():
    c = EndpointConfig(base_url="http://h/v1", model="p")
    with pytest.raises(EndpointConfigError, match="must contain '\\{problem\\}' and '\\{steps\\}'"):
        VLLMPRMScorer(c, template="{problem}")
    with pytest.raises(EndpointConfigError, match="output must be"):
        VLLMPRMScorer(c, output="raw")


def test_callable_scorer_sync_async_and_single_float():
    def per_step(problem, steps):
        return [0.1 * len(s) for s in steps]

    async def last_only(problem, steps):
        return 0.5

    assert score(CallableScorer(per_step), "Q", ["a", "bb"]) == pytest.approx([0.1, 0.2])
    assert score(CallableScorer(last_only), "Q", ["a", "bb"]) == [0.5]


@pytest.mark.parametrize(
    "out, match",
    [
        ([0.5, 1.5], "score 1 is 1.5; expected a float in \\[0, 1\\]"),
        ([float("nan"), 0.5], "score 0 is nan"),
        ([0.5], "got 1 step scores for 2 steps"),
        ("x", "score 0 is 'x'"),
        (None, "returned NoneType; expected a float or a sequence"),
    ],
)
def test_callable_scorer_bad_output(out, match):
    with pytest.raises(ResponseFormatError, match=match):
        score(CallableScorer(lambda p, s: out, name="mine"), "Q", ["a", "b"])
