"""Beam search, DVTS, particle filtering and particle Gibbs on two GSM8K problems with the real default model
and the judge (the policy model judging its own partial answers), through the runner, with small caps."""

import json

import pytest

from tts.runner import evaluate
from tts.runs import RunFolder
from tts.scorers.judge import JudgeScorer
from tts.strategies.beam_search import BeamSearch
from tts.strategies.dvts import DVTS
from tts.strategies.particle_filtering import ParticleFiltering
from tts.strategies.particle_gibbs import ParticleGibbs
from tts.tasks.gsm8k import GSM8K
from tts.types import SamplingConfig

pytestmark = pytest.mark.integration

SMALL = {"n": 4, "max_steps": 3, "step_max_tokens": 48}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("strategy", "finals"), [
    (BeamSearch(**SMALL, beam_width=2), 4),
    (DVTS(**SMALL, beam_width=2), 4),
    (ParticleFiltering(**SMALL), 4),
    (ParticleGibbs(**SMALL, iterations=2), 2),
], ids=lambda v: getattr(v, "name", str(v)))
async def test_step_search_on_two_gsm8k_problems(engine, tmp_path, strategy, finals):
    task = GSM8K()
    items = task.load(2)
    judge = JudgeScorer()
    config = {"task": "gsm8k", "strategy": strategy.name, "strategy_options": strategy.config.model_dump(),
              "model": engine.model, "backend": "vllm", "sampling": {}, "seed": 0, "task_options": {},
              "scorers": [judge.identity()]}
    metrics = await evaluate(task, items, strategy, engine, RunFolder(tmp_path), config,
                             SamplingConfig(max_tokens=128), progress=False, scorers=[judge])
    assert metrics["problems"] == 2 and metrics["accuracy"] is not None

    results, samples = read_jsonl(tmp_path / "results.jsonl"), read_jsonl(tmp_path / "samples.jsonl")
    assert len(results) == 2 and len(samples) == 2 * finals
    for row in results:
        info, usage = row["info"], row["usage"]
        calls = info["engine_calls"]
        # one generation call and one scoring call per step phase
        assert calls["steps"] == calls["scoring"] == usage["backend_calls"] == usage["scorer_calls"] >= 1
        assert usage["completion_tokens"] > 0 and usage["scorer_prompt_tokens"] > 0
        assert usage["scorer_completion_tokens"] > 0  # one judged token per partial answer per step
        assert usage["generator_flops"] > 0 and usage["scorer_flops"] > 0
        assert row["chosen"] is not None and info["final"] == "score"
    # continuations and judge requests extend prefixes the engine has computed: the cache serves some
    assert sum(r["usage"]["cached_tokens"] for r in results) > 0
    assert sum(r["usage"]["scorer_cached_tokens"] for r in results) > 0
    for s in samples:
        (verdict,) = s["selection"]
        assert verdict["verifier"] == "judge" and verdict["step_scores"]
        assert all(0.0 <= x <= 1.0 for x in verdict["step_scores"])
        assert len(verdict["step_scores"]) == s["info"]["steps"] <= 3
        assert s["completion_tokens"] <= 128
