"""The replays of `tts scale` decide as the strategies do: each strategy runs on the scripted backend over a
random script, and its replay on a pool of the same samples, in the same order, must draw as many samples,
count the same tokens and be right exactly when the strategy's answer is right."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.fakes import ToyTask
from tests.step_worlds import FnScorer
from tts.backends.scripted import ScriptedBackend
from tts.selection import Groups
from tts.strategies.adaptive_consistency import AdaptiveConsistency
from tts.strategies.deepconf import DeepConf
from tts.strategies.early_stop import EarlyStop
from tts.strategy import StrategyContext
from tts.study import ProblemPool
from tts.study.adaptive_replay import AdaptiveConsistency as ReplayAC
from tts.study.adaptive_replay import DeepConf as ReplayDeepConf
from tts.study.adaptive_replay import EarlyStop as ReplayEarlyStop
from tts.study.adaptive_replay import ReplayPool
from tts.types import Sample, SamplingConfig

N = 8
GOLD = "1"
WORLDS = 12


def world(seed: int, lengths: tuple[int, int] = (2, 7)) -> list[tuple[str | None, np.ndarray, float]]:
    """N samples: (answer, per-token confidences exact in float32, scorer score); few answers, so votes form."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N):
        answer = None if rng.random() < 0.1 else str(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        conf = rng.uniform(1, 6, int(rng.integers(*lengths))).astype(np.float32).astype(float)
        out.append((answer, conf, float(np.float32(rng.uniform(0.3, 1.0)))))
    return out


def script(samples) -> list[Sample]:
    """One word per token (letters only, so the toy task's answer is the last word's number); the first word
    names the sample, so a scorer can look its score up by text. Token confidence C_i = c (two top tokens)."""
    out = []
    for i, (answer, conf, _) in enumerate(samples):
        words = [chr(97 + i)] + ["x"] * (len(conf) - 2) + [answer or "y"]
        out.append(Sample(text=" ".join(words), token_count=len(conf), logprob_sum=-0.5 * len(conf),
                          token_logprobs=[-0.5] * len(conf), top_logprobs=[{"a": -c, "b": -c} for c in conf],
                          finish_reason="stop"))
    return out


def replay_pool(samples) -> ReplayPool:
    answers = [a for a, _, _ in samples]
    pool = ProblemPool(
        problem_id="toy", groups=Groups.of_answers(answers, lambda a, b: a == b),
        correct=np.array([a == GOLD for a in answers]), mean_logprob=np.full(N, -0.5), text_id=np.arange(N),
        tokens=np.array([len(c) for _, c, _ in samples]), score=None, passed=None,
        scores={"fn-scorer": np.array([s for _, _, s in samples])})
    return ReplayPool(pool, [(2, c) for _, c, _ in samples])


async def run(strategy, samples):
    task = ToyTask()
    texts = script(samples)
    table = {t.text.split()[0]: s for t, (_, _, s) in zip(texts, samples)}  # a stopped trace keeps its 1st word
    ctx = StrategyContext(backend=ScriptedBackend(texts), answers=task, sampling=SamplingConfig(max_tokens=64),
                          scorers=[FnScorer(lambda text: table[text.split()[0]])], rng=random.Random(0))
    result = await strategy.run(task.load(1)[0].problem, ctx)
    return result, ctx.usage.completion_tokens


def check(out, result, tokens):
    assert out.samples == len(result.candidates)
    assert out.tokens == tokens
    right = float(result.answer is not None and int(result.answer) == int(GOLD))
    tied = len(result.info.get("tied_answers") or []) > 1
    assert out.credit == right or (tied and 0 < out.credit < 1), (out, result.answer, result.info)


@pytest.mark.parametrize("seed", range(WORLDS))
@pytest.mark.parametrize("options", [dict(threshold=0.9), dict(threshold=0.95, round=3), dict(prior="dirichlet",
                                                                                            threshold=0.8)])
async def test_adaptive_consistency_replay_decides_as_the_strategy(seed, options):
    samples = world(seed)
    result, tokens = await run(AdaptiveConsistency(n=N, **options), samples)
    check(ReplayAC(**options).run(replay_pool(samples), np.arange(N)), result, tokens)


@pytest.mark.parametrize("seed", range(WORLDS))
@pytest.mark.parametrize("options", [dict(tau=0.9), dict(tau=0.95, round=3), dict(tau=0.7, final="weighted-vote"),
                                     dict(tau=0.8, final="weighted-vote", round=2)])
async def test_early_stop_replay_decides_as_the_strategy(seed, options):
    samples = world(seed)
    result, tokens = await run(EarlyStop(n=N, **options), samples)
    check(ReplayEarlyStop(scorer="fn-scorer", **options).run(replay_pool(samples), np.arange(N)), result, tokens)


@pytest.mark.parametrize("seed", range(WORLDS))
@pytest.mark.parametrize("options", [dict(mode="offline", keep_percent=50), dict(mode="offline", keep_percent=90),
                                     dict(mode="online", keep_percent=50, consensus=0.8),
                                     dict(mode="online", keep_percent=90, warmup=3, round=2, consensus=0.7)])
async def test_deepconf_replay_decides_as_the_strategy(seed, options):
    samples = world(seed)
    common = dict(window=2, top_k=2)
    result, tokens = await run(DeepConf(n=N, **common, **options), samples)
    check(ReplayDeepConf(**common, **options).run(replay_pool(samples), np.arange(N)), result, tokens)


async def test_a_trace_stopped_on_its_last_token_runs_whole_in_the_strategy_and_the_replay():
    # window 2, keep 50, warm-up 2, rounds of 2: see test_adaptive_replay's LAST_TOKEN_STOP
    samples = [(a, np.array(c, dtype=float), 0.5) for a, c in
               [("1", [4, 4]), ("2", [1, 1]), ("1", [3, 3, 1]), ("2", [2, 2, 2, 5]), ("2", [5, 5]), ("2", [5, 5]),
                ("2", [5, 5]), ("2", [5, 5])]]
    options = dict(mode="online", window=2, top_k=2, keep_percent=50, warmup=2, round=2, consensus=0.85)
    result, tokens = await run(DeepConf(n=N, **options), samples)
    assert not result.candidates[2].info.get("aborted") and result.candidates[3].info.get("aborted")
    out = ReplayDeepConf(**options).run(replay_pool(samples), np.arange(N))
    check(out, result, tokens)
    assert out.samples == 4

