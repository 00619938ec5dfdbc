"""The in-process vLLM backend on a real model: samples, logprobs, prefix caching, seeds, batching."""

import asyncio

import pytest

from tts.types import ChatMessage, GenerationRequest, SamplingConfig

pytestmark = pytest.mark.integration


async def test_n_samples_with_per_token_logprobs(engine):
    cfg = SamplingConfig(n=4, temperature=0.8, max_tokens=24)
    (samples,) = await engine.generate([GenerationRequest(prompt=[ChatMessage(role="user", content="Count to five.")],
                                                          sampling=cfg)])
    assert len(samples) == 4
    for s in samples:
        assert 1 <= s.token_count <= 24
        assert s.token_logprobs is not None and len(s.token_logprobs) == s.token_count
        assert all(lp <= 0.0 for lp in s.token_logprobs)
        assert s.logprob_sum == pytest.approx(sum(s.token_logprobs))
        assert s.finish_reason in ("stop", "length")
        assert s.prompt_tokens > 5
    assert len({s.text for s in samples}) > 1  # sampled, not greedy


async def test_greedy_is_deterministic_and_stop_strings_work(engine):
    cfg = SamplingConfig(n=1, temperature=0.0, max_tokens=20, stop=(".",))
    req = GenerationRequest(prompt="The capital of France is", sampling=cfg)
    (a,), (b,) = await engine.generate([req]), await engine.generate([req])
    assert a[0].text == b[0].text
    assert "." not in a[0].text


async def test_prefix_cache_reports_cached_tokens(engine):
    long_prefix = "Here is a long shared context. " * 60  # > 256 tokens: whole 128-token blocks get cached
    cfg = SamplingConfig(n=1, temperature=0.0, max_tokens=4)
    await engine.generate([GenerationRequest(prompt=long_prefix + "First question?", sampling=cfg)])
    (second,) = await engine.generate([GenerationRequest(prompt=long_prefix + "Second question?", sampling=cfg)])
    assert second[0].cached_tokens >= 128


async def test_per_request_seed_does_not_kill_the_cpu_engine(engine):
    cfg = SamplingConfig(n=2, temperature=0.9, max_tokens=8, seed=1234)
    (out,) = await engine.generate([GenerationRequest(prompt="Hello", sampling=cfg)])
    assert len(out) == 2
    (after,) = await engine.generate([GenerationRequest(prompt="Hello again", sampling=cfg.model_copy(update={"seed": None}))])
    assert len(after) == 2


async def test_concurrent_callers_share_the_engine(engine):
    cfg = SamplingConfig(n=2, temperature=0.7, max_tokens=8)
    outs = await asyncio.gather(*(engine.generate([GenerationRequest(prompt=f"Number {i}:", sampling=cfg)])
                                  for i in range(12)))
    assert len(outs) == 12 and all(len(o[0]) == 2 for o in outs)


async def test_prompt_longer_than_context_is_a_clear_error(engine):
    from tts.errors import UserError

    with pytest.raises(UserError, match="max_model_len"):
        await engine.generate([GenerationRequest(prompt="word " * 5000, sampling=SamplingConfig(max_tokens=4))])


async def test_cancelled_requests_are_aborted_and_the_engine_keeps_serving(engine):
    cfg = SamplingConfig(n=4, temperature=0.8, max_tokens=512)
    task = asyncio.ensure_future(engine.generate([GenerationRequest(prompt="Tell a very long story.", sampling=cfg)]))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (out,) = await asyncio.wait_for(
        engine.generate([GenerationRequest(prompt="Hi", sampling=SamplingConfig(max_tokens=4))]), timeout=60)
    assert len(out) == 1


async def test_a_refused_request_fails_alone(engine):
    from tts.errors import BackendError

    bad = GenerationRequest(prompt="", sampling=SamplingConfig(max_tokens=4))  # vLLM refuses an empty prompt
    good = GenerationRequest(prompt="Hi", sampling=SamplingConfig(max_tokens=4))
    results = await asyncio.gather(engine.generate([bad]), engine.generate([good]), return_exceptions=True)
    assert isinstance(results[0], BackendError)
    assert len(results[1][0]) == 1


async def test_stop_reason_min_tokens_and_continuation(engine):
    """Step-wise decoding's needs: which stop ended a sample, no empty steps, continuing a partial answer."""
    prompt = [ChatMessage(role="user", content="List three fruits, one per line.")]
    cfg = SamplingConfig(n=6, temperature=1.0, max_tokens=40, stop=("\n",), min_tokens=1)
    (samples,) = await engine.generate([GenerationRequest(prompt=prompt, sampling=cfg, continuation="1. Apple\n")])
    for s in samples:
        assert s.token_count >= 1
        if s.stop_reason == "\n":
            assert s.finish_reason == "stop" and "\n" not in s.text.lstrip("\n")
        else:
            assert s.stop_reason is None  # EOS or the token cap
    # the continuation is part of the model's input, after the opened assistant turn
    assert engine.render(GenerationRequest(prompt=prompt, continuation="1. Apple\n2.")).endswith(
        "assistant\n1. Apple\n2.")
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=12)
    (fresh,), (cont,) = await asyncio.gather(
        engine.generate([GenerationRequest(prompt=prompt, sampling=greedy)]),
        engine.generate([GenerationRequest(prompt=prompt, sampling=greedy, continuation="1. Apple\n2.")]))
    assert cont[0].prompt_tokens >= fresh[0].prompt_tokens + 4


async def test_engine_stats_count_steps_and_batch_sizes(engine):
    engine.stats.reset()
    cfg = SamplingConfig(n=4, temperature=0.8, max_tokens=8)
    reqs = [GenerationRequest(prompt=f"Story {i}:", sampling=cfg) for i in range(4)]
    await asyncio.gather(*(engine.generate([r]) for r in reqs))
    summary = engine.stats.summary()
    assert summary["steps"] >= 8 and summary["step_seconds"] > 0
    assert 1 <= summary["mean_batch"] <= summary["max_batch"] <= 16
    assert summary["max_batch"] >= 8  # the four concurrent callers' 16 sequences ran together
