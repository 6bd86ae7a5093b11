"""Route real models: OpenAI-compatible / vLLM endpoints, a PRM scorer, an async runner.

Requires the ``http`` extra (``pip install trim_pomdp[http]``, i.e. aiohttp; httpx works too,
with ``EndpointConfig(http_client="httpx")``).  Nothing connects and no HTTP library is
imported until the first request.

Example (three servers; the policy may be any router, e.g. ``trim_pomdp.Router``)::

    import asyncio
    from trim_pomdp.routing.baselines import ThresholdPolicy
    from trim_pomdp.serving import (EndpointConfig, CompletionModel, VLLMPRMScorer,
                                    MathAnswerChecker, run_episode)

    url = EndpointConfig.from_url
    cheap = CompletionModel(url("http://127.0.0.1:8001/v1/Qwen/Qwen2.5-1.5B-Instruct"))
    strong = CompletionModel(url("http://127.0.0.1:8002/v1/Qwen/Qwen2.5-72B-Instruct"))
    prm = VLLMPRMScorer(url("http://127.0.0.1:8003/v1/Qwen/Qwen2.5-Math-PRM-7B"))
    result = asyncio.run(run_episode("What is 1+1?", ThresholdPolicy(0.5), cheap, strong, prm,
                                     checker=MathAnswerChecker()))
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "EndpointConfig": "trim_pomdp.serving.http",
    "EndpointConfigError": "trim_pomdp.errors",
    "EndpointError": "trim_pomdp.errors",
    "ResponseFormatError": "trim_pomdp.errors",
    "ResponseTooLargeError": "trim_pomdp.errors",
    "CompletionModel": "trim_pomdp.serving.endpoints",
    "ChatModel": "trim_pomdp.serving.endpoints",
    "GeneratedStep": "trim_pomdp.serving.endpoints",
    "StepGenerator": "trim_pomdp.serving.endpoints",
    "QWEN_MATH_PROMPT": "trim_pomdp.serving.endpoints",
    "VLLMPRMScorer": "trim_pomdp.serving.prm",
    "CallableScorer": "trim_pomdp.serving.prm",
    "StepScorer": "trim_pomdp.serving.prm",
    "MathAnswerChecker": "trim_pomdp.serving.checker",
    "extract_boxed": "trim_pomdp.serving.checker",
    "normalize_answer": "trim_pomdp.serving.checker",
    "answers_equal": "trim_pomdp.serving.checker",
    "Problem": "trim_pomdp.serving.problems",
    "ProblemFormatError": "trim_pomdp.errors",
    "EpisodeResult": "trim_pomdp.serving.records",
    "EpisodeError": "trim_pomdp.errors",
    "OutputLockedError": "trim_pomdp.errors",
    "OutputWriteError": "trim_pomdp.errors",
    "ResumeMismatchError": "trim_pomdp.errors",
    "problem_hash": "trim_pomdp.serving.problems",
    "BatchSummary": "trim_pomdp.serving.records",
    "ProgressBar": "trim_pomdp.serving.runner",
    "TraceWriter": "trim_pomdp.serving.records",
    "load_problems": "trim_pomdp.serving.problems",
    "context_exceeded": "trim_pomdp.serving.episode",
    "read_finished": "trim_pomdp.serving.records",
    "run_episode": "trim_pomdp.serving.episode",
    "run_batch": "trim_pomdp.serving.runner",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
