"""Adaptive compute with the real built-in model: engine abort of a watched sample (in-process and through
vllm serve), and adaptive-consistency, early-stop, deepconf (online and offline), a perturbed
self-consistency and a mixture on two GSM8K problems through the runner, with small caps."""

import json

import pytest

from tts.confidence import token_confidence
from tts.runner import evaluate
from tts.runs import RunFolder
from tts.scorers.confidence import LowestGroupConfidence
from tts.strategies.adaptive_consistency import AdaptiveConsistency
from tts.strategies.deepconf import DeepConf
from tts.strategies.early_stop import EarlyStop
from tts.strategies.mixture import Mixture
from tts.strategies.self_consistency import SelfConsistency
from tts.tasks.gsm8k import GSM8K
from tts.types import GenerationRequest, SamplingConfig

pytestmark = pytest.mark.integration


class StopAfter:
    """Stops its sample once `limit` tokens have been seen; records every confidence it was shown."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: list[float] = []

    def observe(self, confidences) -> bool:
        self.seen.extend(confidences)
        return len(self.seen) >= self.limit


async def test_the_engine_aborts_a_watched_sample_and_counts_only_its_tokens(engine):
    """A watched sample stops at the watcher's word with exactly the tokens generated so far (one token per
    engine step on this model), while an unwatched request in the same call runs to its end."""
    prompt = "Count from one to fifty in words, separated by commas:"
    cfg = SamplingConfig(n=1, temperature=0.0, max_tokens=96, top_logprobs=5)
    stop = StopAfter(6)
    (cut, free) = await engine.generate_watched(
        [GenerationRequest(prompt=prompt, sampling=cfg), GenerationRequest(prompt=prompt, sampling=cfg)],
        [stop, StopAfter(10_000)])
    assert cut.finish_reason == "abort"
    assert cut.token_count == len(stop.seen) == 6
    assert len(cut.top_logprobs) == len(cut.token_logprobs) == 6
    # the watcher saw DeepConf's token confidence of exactly those tokens
    assert stop.seen == pytest.approx([token_confidence(top) for top in cut.top_logprobs], rel=1e-5)
    assert cut.text and free.text.startswith(cut.text)  # greedy: the same tokens, cut
    assert free.finish_reason != "abort" and free.token_count > cut.token_count
    # the aborted request is gone from the engine: nothing left running
    assert not engine._engine.has_unfinished_requests()


async def test_vllm_serve_aborts_a_watched_sample_when_the_client_closes_the_stream(vllm_server):
    """Over HTTP the sample is streamed and the client hangs up at the watcher's word: the sample holds the
    tokens received (exactly the watcher's count here, one token per chunk), with its prompt tokens known."""
    from tts.backends.openai import OpenAIBackend

    backend = OpenAIBackend(base_url=vllm_server, send_seed=False)
    cfg = SamplingConfig(n=1, temperature=0.0, max_tokens=96, top_logprobs=5)
    prompt = "Count from one to fifty in words, separated by commas:"
    stop = StopAfter(6)
    try:
        (cut, free) = await backend.generate_watched(
            [GenerationRequest(prompt=prompt, sampling=cfg), GenerationRequest(prompt=prompt, sampling=cfg)],
            [stop, StopAfter(10_000)])
    finally:
        await backend.aclose()
    assert cut.finish_reason == "abort" and cut.token_count == len(stop.seen) == 6
    assert cut.prompt_tokens > 0 and free.text.startswith(cut.text)
    assert free.finish_reason != "abort" and free.token_count > 6


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def run_two(engine, tmp_path, strategy, scorers=(), top_logprobs=0):
    task = GSM8K()
    items = task.load(2)
    config = {"task": "gsm8k", "strategy": strategy.name, "strategy_options": strategy.config.model_dump(mode="json"),
              "model": engine.model, "backend": "vllm", "sampling": {}, "seed": 0, "task_options": {},
              "scorers": [s.identity() for s in scorers]}
    metrics = await evaluate(task, items, strategy, engine, RunFolder(tmp_path), config,
                             SamplingConfig(max_tokens=96, top_logprobs=top_logprobs), progress=False,
                             scorers=list(scorers))
    assert metrics["problems"] == 2
    return read_jsonl(tmp_path / "results.jsonl"), read_jsonl(tmp_path / "samples.jsonl")


async def test_adaptive_consistency_samples_in_rounds(engine, tmp_path):
    results, samples = await run_two(engine, tmp_path, AdaptiveConsistency(n=6, round=2))
    for row in results:
        info = row["info"]
        assert info["samples_used"] == row["n_samples"] <= 6 and info["stopped"] in ("settled", "budget")
        assert row["usage"]["backend_calls"] == info["rounds"] == len(info["history"])
    assert len(samples) == sum(r["n_samples"] for r in results)


async def test_early_stop_on_the_samples_own_confidence(engine, tmp_path):
    scorer = LowestGroupConfidence(window=16)
    results, _ = await run_two(engine, tmp_path, EarlyStop(n=4, tau=0.8), scorers=[scorer], top_logprobs=20)
    for row in results:
        info = row["info"]
        assert info["samples_used"] == row["n_samples"] <= 4
        assert len(info["confidences"]) == info["samples_used"]
        if info["stopped"] == "confident":
            assert info["confidences"][info["stop_index"]] >= 0.8
            assert all(c < 0.8 for c in info["confidences"][:info["stop_index"]])


@pytest.mark.parametrize("mode", ["online", "offline"])
async def test_deepconf(engine, tmp_path, mode):
    strategy = DeepConf(n=6, mode=mode, warmup=2, round=2, window=8, keep_percent=50)
    results, samples = await run_two(engine, tmp_path, strategy, top_logprobs=20)
    for row in results:
        info = row["info"]
        assert info["mode"] == mode and info["traces"] == row["n_samples"] <= 6
        assert row["usage"]["completion_tokens"] == info["tokens"]
    aborted = [s for s in samples if s["info"].get("aborted")]
    for s in aborted:  # an aborted trace holds the tokens generated before the stop, at least one window
        assert s["finish_reason"] == "abort" and 8 <= s["completion_tokens"] < 96
    if mode == "offline":
        assert not aborted


async def test_perturbed_self_consistency_writes_and_counts_its_hints(engine, tmp_path):
    results, samples = await run_two(engine, tmp_path, SelfConsistency(n=4, perturb="hint"))
    assert len(samples) == 8
    for s in samples:
        (part,) = s["info"]["perturbation"]["parts"]
        assert part["name"] == "hint"
    for row in results:  # the hint request and the samples: two engine calls, both counted
        assert row["usage"]["backend_calls"] == 2


async def test_mixture_draws_each_component(engine, tmp_path):
    mixture = {"components": [{"label": "cold", "n": 1, "temperature": 0.0},
                              {"label": "hot", "n": 3, "temperature": 1.0, "perturb": "role"}]}
    results, samples = await run_two(engine, tmp_path, Mixture(n=4, mixture=mixture))
    assert sorted(s["info"]["component"] for s in samples) == ["cold"] * 2 + ["hot"] * 6
    for row in results:
        assert row["usage"]["backend_calls"] == 1 and row["n_samples"] == 4
