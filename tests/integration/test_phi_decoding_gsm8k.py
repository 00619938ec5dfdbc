"""φ-Decoding on two GSM8K problems with the real default model (small caps), through the runner."""

import json

import pytest

from tts.runner import evaluate
from tts.runs import RunFolder
from tts.strategies.phi_decoding import PhiDecoding
from tts.tasks.gsm8k import GSM8K
from tts.types import SamplingConfig

pytestmark = pytest.mark.integration

OPTIONS = {"beams": 2, "candidates": 2, "max_steps": 3, "rollout_max_tokens": 32, "step_max_tokens": 64,
           "final_max_tokens": 64}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_phi_decoding_on_two_gsm8k_problems(engine, tmp_path):
    task = GSM8K()
    items = task.load(2)
    strategy = PhiDecoding(**OPTIONS)
    config = {"task": "gsm8k", "strategy": "phi-decoding", "strategy_options": strategy.config.model_dump(),
              "model": engine.model, "backend": "vllm", "sampling": {}, "seed": 0, "task_options": {}}
    metrics = await evaluate(task, items, strategy, engine, RunFolder(tmp_path), config, SamplingConfig(),
                             progress=False)
    assert metrics["problems"] == 2 and metrics["accuracy"] is not None

    results, samples = read_jsonl(tmp_path / "results.jsonl"), read_jsonl(tmp_path / "samples.jsonl")
    assert len(results) == 2 and len(samples) == 4  # two final answers per problem
    for row in results:
        info, usage = row["info"], row["usage"]
        assert 1 <= info["steps_run"] <= 3
        assert info["stop_reason"] in {"max_steps", "all_finished", "identical_steps", "cluster_agreement"}
        first = info["steps"][0]
        assert first["width"] == 2 and len(first["candidates"]) == 4
        assert all(c["step_mlogp"] is not None and c["step_mlogp"] <= 0 for c in first["candidates"])
        kept = [c for c in first["candidates"] if c["kept"]]
        assert len(kept) >= 2 and all(c["advantage"] is not None for c in kept)
        assert all(c["foresight_tokens"] <= 32 for c in kept)
        assert 0 <= info["width_pruned_steps"] <= info["candidate_steps"]
        # one engine call per phase: steps and foresight per step (foresight skipped only when every
        # kept candidate had already answered), plus at most one final call
        assert usage["backend_calls"] <= 2 * info["steps_run"] + 1
        compute = info["compute"]
        assert compute["generated_tokens"] == usage["completion_tokens"] > 0
        assert compute["prompt_tokens"] == usage["prompt_tokens"] > 0
        assert compute["cached_prompt_tokens"] == usage["cached_tokens"]
        assert compute["parameters"] and compute["parameters"] > 100_000_000
        assert compute["flops_with_prefix_cache"] <= compute["flops_without_prefix_cache"]
        assert row["chosen"] in (0, 1)
    # continuations share their problem's prompt: the prefix cache must have served some of it
    assert sum(r["usage"]["cached_tokens"] for r in results) > 0
    for s in samples:
        assert s["text"].startswith("The reasoning steps are:")
        assert s["completion_tokens"] > 0 and s["mean_logprob"] is not None
