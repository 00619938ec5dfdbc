"""The deepconf strategy on the scripted backend: offline filter and weighted vote, the warm-up threshold,
online stops, consensus, budget, and what is counted, each against a hand computation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError

from tests.fakes import ToyTask
from tts.backends.scripted import ScriptedBackend
from tts.strategies.deepconf import DeepConf, offline_filter
from tts.strategy import StrategyContext
from tts.types import Sample, SamplingConfig


def trace(answer: str | None, confs: list[float]) -> Sample:
    """A scripted trace of one word per token, token i of confidence confs[i]; its last word is the answer.
    Fillers are "x" (no digit), so the toy task's answer (the last integer) is `answer` or None."""
    words = ["x"] * (len(confs) - 1) + [answer or "x"]
    return Sample(text=" ".join(words), token_count=len(confs), logprob_sum=-0.5 * len(confs),
                  token_logprobs=[-0.5] * len(confs), top_logprobs=[{"a": -c, "b": -c} for c in confs],
                  finish_reason="stop")


def flat(answer: str | None, c: float, tokens: int = 4) -> Sample:
    """A trace whose every window has confidence c (so its lowest group confidence is c)."""
    return trace(answer, [c] * tokens)


async def run(script: list[Sample], **options):
    task = ToyTask()
    backend = ScriptedBackend(script)
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig())
    result = await DeepConf(**options).run(task.load(1)[0].problem, ctx)
    return result, backend, ctx


# ---- offline ------------------------------------------------------------------------------------

# Answers and C of six traces; the last has no answer (C = 12), so it is outside the percentile pool.
OFFLINE = [flat("1", 3), flat("2", 8), flat("1", 5), flat("2", 9), flat("1", 10), flat(None, 12)]


@pytest.mark.parametrize("keep, threshold, kept, answer, share", [
    # eta = 100: the 0th percentile = the least C (3): every answered trace votes; "1" 3+5+10=18 beats "2" 8+9=17
    (100, 3.0, [0, 1, 2, 3, 4], "1", 18 / 35),
    # eta = 50: the median of [3, 5, 8, 9, 10] is 8: "2" (8+9) beats "1" (10)
    (50, 8.0, [1, 3, 4], "2", 17 / 27),
    # eta = 10: the 90th percentile, 9 + 0.6 * (10 - 9) = 9.6 (linear): only the trace of C = 10 is kept
    (10, 9.6, [4], "1", 1.0),
])
async def test_offline_filters_at_the_percentile_and_votes_by_confidence(keep, threshold, kept, answer, share):
    result, backend, ctx = await run(list(OFFLINE), mode="offline", n=6, keep_percent=keep, window=2, top_k=2)
    assert result.info["threshold"] == pytest.approx(threshold)
    assert result.info["threshold"] == pytest.approx(np.percentile([3, 8, 5, 9, 10], 100 - keep))
    assert [i for i, c in enumerate(result.candidates) if c.info["voted"]] == kept
    assert result.info["kept"] == result.info["voters"] == len(kept)
    assert result.answer == answer and result.confidence == pytest.approx(share)
    assert [c.info["group_confidence"] for c in result.candidates] == [3, 8, 5, 9, 10, 12]
    assert len(backend.calls) == 1 and backend.calls[0][0].sampling.n == 6
    assert backend.calls[0][0].sampling.top_logprobs == 2
    assert result.info["tokens"] == ctx.usage.completion_tokens == 24


def test_offline_filter_leaves_unanswered_traces_out_of_the_pool():
    # with the unanswered C = 20 in the pool the 50th percentile would be 6.5 and keep only two
    threshold, kept = offline_filter([2, 5, 8, 20], [True, True, True, False], 50)
    assert threshold == pytest.approx(5.0) and kept == [False, True, True, False]
    assert offline_filter([1, 2], [False, False], 10) == (None, [False, False])


async def test_offline_lowest_group_is_the_least_confident_window():
    # windows of 2 over [9, 9, 1, 9]: 9, 5, 5 -> C = 5; the other trace's C is 6, so at eta = 50 (median 5.5)
    # only that one is kept, though the first trace's mean (7) is higher
    result, _, _ = await run([trace("4", [9, 9, 1, 9]), flat("6", 6)], mode="offline", n=2, keep_percent=50, window=2,
                       top_k=2)
    assert [c.info["group_confidence"] for c in result.candidates] == [5, 6]
    assert result.answer == "6"


async def test_offline_with_no_answer_abstains():
    result, _, _ = await run([flat(None, 3), flat(None, 5)], mode="offline", n=2, window=2, top_k=2)
    assert result.answer is None and result.chosen is None and result.info["threshold"] is None
    assert "no trace with an answer" in result.info["reason"]


# ---- online: the warm-up threshold --------------------------------------------------------------


@pytest.mark.parametrize("keep, threshold", [
    # warm-up C = [4, 6, 8, 2]; sorted [2, 4, 6, 8]; the (100 - eta)-th percentile, linear between ranks:
    (50, 5.0),   # position 1.5: 4 + 0.5 * 2
    (10, 7.4),   # position 2.7: 6 + 0.7 * 2 (DeepConf-low)
    (90, 2.6),   # position 0.3: 2 + 0.3 * 2 (DeepConf-high)
    (100, 2.0),  # the least
])
async def test_online_threshold_is_the_warmup_percentile(keep, threshold):
    warm = [flat("7", 4), flat("7", 6), flat("7", 8), flat("3", 2)]
    result, backend, _ = await run(warm, n=4, warmup=4, keep_percent=keep, window=2, top_k=2)
    assert result.info["threshold"] == pytest.approx(threshold)
    assert result.info["threshold"] == pytest.approx(np.percentile([4, 6, 8, 2], 100 - keep))
    assert [c.info["voted"] for c in result.candidates] == [c >= threshold for c in [4, 6, 8, 2]]
    assert len(backend.calls) == 1  # the budget is spent by the warm-up


# ---- online: stops, consensus, budget -----------------------------------------------------------

# window 2, eta 50: the warm-up sets s = 5 (median of 4, 6, 8, 2).
WARM = [flat("7", 4), flat("7", 6), flat("7", 8), flat("3", 2)]
# Round 1: A's windows are 6, 3.5 -> stopped after 3 tokens ("x 3 x": an answer in its partial text, which must
# not count); B finishes with C = 7. Round 2: C = 9 and 6, both finish. E and F must never be generated.
A = trace("3", [6, 6, 1, 1, 6]).model_copy(update={"text": "x 3 x x 3"})
ROUNDS = [A, trace("7", [7, 7, 7]), trace("7", [9, 9, 9]), flat("7", 6), flat("3", 9), flat("3", 9)]


async def test_online_stops_traces_below_the_threshold_and_sampling_at_consensus():
    result, backend, ctx = await run(WARM + ROUNDS, n=12, warmup=4, round=2, keep_percent=50, window=2, top_k=2)
    # consensus over the finished traces, weighted by C: warm-up "7" 18 of 20; + B 25 of 27; + C, D 40 of 42
    assert result.info["history"] == pytest.approx([18 / 20, 25 / 27, 40 / 42])
    assert result.info["stopped_by"] == "consensus" and result.info["consensus"] == pytest.approx(40 / 42)
    # no trace after the decision: the warm-up call (n = 4) and two rounds of two watched n = 1 requests
    assert [[r.sampling.n for r in call] for call in backend.calls] == [[4], [1, 1], [1, 1]]
    assert backend._drawn[next(iter(backend._drawn))] == 8
    stopped = result.candidates[4]
    assert stopped.info["aborted"] is True and stopped.text == "x 3 x" and stopped.completion_tokens == 3
    assert stopped.answer == "3" and stopped.info["voted"] is False and stopped.info["group"] == -1
    # tokens: warm-up 4 x 4, A 3 (stopped), B 3, C 3, D 4; every one is counted, the stopped ones included
    assert result.info["tokens"] == ctx.usage.completion_tokens == 29
    assert result.info["aborted"] == 1 and result.info["traces"] == 8
    # voters: warm-up 6 and 8 (not 4 or 2, below s = 5), then B, C, D: all "7"
    assert [c.info["voted"] for c in result.candidates] == [False, True, True, False, False, True, True, True]
    assert result.answer == "7" and result.confidence == pytest.approx(1.0)
    assert result.info["groups"] == [{"answer": "7", "count": 5, "score": pytest.approx(36.0)}]


async def test_online_stops_after_the_warmup_when_it_agrees():
    result, backend, _ = await run([flat("5", 3), flat("5", 4), flat("5", 9), flat("5", 6), flat("1", 9)],
                             n=16, warmup=4, window=2, top_k=2)
    assert result.info["stopped_by"] == "consensus" and result.info["history"] == [1.0]
    assert len(backend.calls) == 1 and result.info["traces"] == 4
    assert result.answer == "5"


async def test_online_spends_the_budget_and_shortens_the_last_round():
    script = [flat("1", 5), flat("2", 5), flat("1", 5), flat("2", 5)]  # never more than half the weight
    result, backend, _ = await run(script, n=10, warmup=4, round=4, keep_percent=90, window=2, top_k=2)
    assert result.info["stopped_by"] == "budget" and result.info["traces"] == 10
    assert [len(call) for call in backend.calls] == [1, 4, 2]  # 4 + 4 + the 2 left
    assert result.info["history"] == pytest.approx([0.5, 0.5, 0.5])
    assert result.answer == "1" and result.info["tied_answers"] == ["1", "2"]  # ties: the answer seen first


async def test_online_abstains_when_no_voter_has_an_answer():
    # s = the 90th percentile of [9, 1, 1, 1] = 6.6: only the unanswered trace reaches it
    result, _, _ = await run([flat(None, 9), flat("3", 1), flat("3", 1), flat("3", 1)], n=4, warmup=4, window=2, top_k=2)
    assert result.info["threshold"] == pytest.approx(6.6)
    assert result.answer is None and result.info["voters"] == 0 and "no trace with an answer" in result.info["reason"]


# ---- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"n": 4, "warmup": 8}, "warmup (8) exceeds the trace budget n (4)"),  # online needs room for its warm-up
    ({"keep_percent": 0}, "greater than or equal to 1"),                   # eta is a percentage, 1..100
    ({"keep_percent": 101}, "less than or equal to 100"),
    ({"top_k": 21}, "less than or equal to 20"),                           # servers give at most 20
    ({"window": 0}, "greater than or equal to 1"),
    ({"mode": "both"}, "'online' or 'offline'"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        DeepConf(**options)


def test_offline_ignores_the_warmup_budget():
    assert DeepConf(mode="offline", n=2, warmup=8).config.n == 2  # warm-up is an online option
