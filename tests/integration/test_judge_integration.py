"""The judge on the real default model: in-process (vLLM) and through `vllm serve` (OpenAI backend)."""

import pytest

from tts.scorer import ScoringContext
from tts.scorers.judge import JudgeScorer
from tts.scorers.judge_prompts import DEFAULT_QUESTION, judge_prompt
from tts.tasks.gsm8k import GSM8K
from tts.types import Candidate, GenerationRequest, SamplingConfig, Usage

pytestmark = pytest.mark.integration

PROBLEM = GSM8K().make_problem("Tom has 3 apples and buys 4 more. How many apples does he have now?")
CANDIDATES = [Candidate(text="Tom starts with 3 apples.\n\nHe buys 4 more, so 3 + 4 = 7.\n\n#### 7"),
              Candidate(text="Tom starts with 3 apples.\n\nHe buys 4 more, so 3 * 4 = 12.\n\n#### 12")]


async def judge(scorer, backend):
    usage = Usage()
    verdicts = await scorer.score(PROBLEM, CANDIDATES, ScoringContext(policy=backend, usage=usage))
    return verdicts, usage


def http_backend(url):
    from tts.backends.openai import OpenAIBackend

    return OpenAIBackend(base_url=url, send_seed=False)


async def test_judge_in_process_scores_in_one_call_and_shares_the_generation_prefix(engine):
    verdicts, usage = await judge(JudgeScorer(), engine)
    assert len(verdicts) == 2 and all(0.0 <= v.score <= 1.0 for v in verdicts)
    assert all(v.feedback.startswith("judge: P(correct) = ") for v in verdicts)
    assert usage.scorer_calls == 1 and usage.scorer_completion_tokens == 2 and usage.scorer_prompt_tokens > 0
    assert usage.completion_tokens == 0 and usage.scorer_flops and usage.scorer_flops > 0
    # with the model's chat template, the judge's prompt starts with the generation prompt (prefix cache)
    gen = engine.render(GenerationRequest(prompt=PROBLEM.prompt))
    jud = engine.render(GenerationRequest(prompt=judge_prompt(PROBLEM, CANDIDATES[0].text, DEFAULT_QUESTION)))
    assert jud.startswith(gen) and CANDIDATES[0].text in jud[len(gen):]


async def test_process_level_gives_one_score_per_step(engine):
    verdicts, usage = await judge(JudgeScorer(level="process", aggregation="min"), engine)
    assert usage.scorer_calls == 1 and usage.scorer_completion_tokens == 6  # 3 prefixes per candidate
    for v in verdicts:
        assert v.step_scores is not None and len(v.step_scores) == 3
        assert all(0.0 <= s <= 1.0 for s in v.step_scores) and v.score == pytest.approx(min(v.step_scores))


async def test_openai_backend_returns_top_logprobs_and_agrees_with_the_engine(engine, vllm_server):
    backend = http_backend(vllm_server)
    try:
        cfg = SamplingConfig(max_tokens=3, temperature=0.0, top_logprobs=5)
        (samples,) = await backend.generate([GenerationRequest(prompt=PROBLEM.prompt, sampling=cfg)])
        top = samples[0].top_logprobs
        assert top is not None and len(top) == samples[0].token_count and all(1 <= len(t) <= 5 for t in top)
        http, _ = await judge(JudgeScorer(), backend)
    finally:
        await backend.aclose()
    local, _ = await judge(JudgeScorer(), engine)
    assert all(0.0 <= v.score <= 1.0 for v in http)
    print("judge scores (http, in-process):", [(h.score, v.score, h.feedback) for h, v in zip(http, local)])
    # same model, same prompt, float32 on both sides: the same probabilities up to kernel noise
    assert [v.score for v in http] == pytest.approx([v.score for v in local], abs=0.02)


async def test_explained_judgement_reads_the_real_tokens(engine):
    scorer = JudgeScorer(explain=True, explain_tokens=48)
    verdicts, usage = await judge(scorer, engine)
    assert usage.scorer_calls == 1 and 2 <= usage.scorer_completion_tokens <= 96
    for v in verdicts:
        assert 0.0 <= v.score <= 1.0 and "judge: P(correct) = " in v.feedback
    print([(round(v.score, 3), v.feedback[-200:]) for v in verdicts])
