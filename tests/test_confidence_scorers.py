"""Confidence scorers (scorers/confidence.py): mean-logprob, DeepConf group and tail confidence.

Traces are built by hand (a `Sample` with fixed top logprobs -> `Candidate.from_sample` -> scorer), so every
number below is exact. With k = 1 and top logprob -c at a position, the token confidence there is c,
which makes window and tail cases easy to write down.
"""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
from pydantic import ValidationError

from tts.errors import UserError
from tts.scorer import Scorer, ScoringContext
from tts.scorers.confidence import (
    LowestGroupConfidence,
    MeanLogprob,
    TailConfidence,
    bottom_group_confidence,
    confidence_score,
    group_means,
    logprob_score,
    lowest_group_confidence,
    tail_confidence,
)
from tts.strategies.best_of_n import BestOfN
from tts.testing import ScriptedBackend, ToyTask, run_strategy, toy_script
from tts.types import Candidate, Problem, Sample, SamplingConfig, TokenTrace, Usage

PROBLEM = Problem(id="p", task="toy", question="q", prompt="q")


def sample_of(tops: list[dict[str, float]]) -> Sample:
    """A sample whose sampled token at each position is the first (most likely) of its top logprobs."""
    lps = [next(iter(top.values())) for top in tops]
    return Sample(text=" ".join(next(iter(top)) for top in tops), token_count=len(tops), logprob_sum=sum(lps),
                  token_logprobs=lps, top_logprobs=tops)


def confs_sample(confs: list[float]) -> Sample:
    """k = 1: one top logprob -c per position, so token confidence c."""
    return sample_of([{f"t{i}": -c} for i, c in enumerate(confs)])


async def score_one(scorer: Scorer, sample: Sample) -> tuple[float, str, Candidate]:
    cand = Candidate.from_sample(sample, None)
    (verdict,) = await scorer.score(PROBLEM, [cand], ScoringContext(policy=None, usage=Usage()))  # type: ignore[arg-type]
    assert verdict.verifier == scorer.name and 0.0 <= verdict.score <= 1.0
    return verdict.score, verdict.feedback, cand


def raw_c(feedback: str) -> float:
    return float(re.search(r" C=(\S+)", feedback).group(1))


# ---- token confidence from fixed top logprobs -------------------------------------------------------------

TOKEN_CONFIDENCE = [
    # two equally likely tokens: C = -(ln .5 + ln .5)/2 = ln 2
    ({"a": math.log(0.5), "b": math.log(0.5)}, math.log(2)),
    # a peaked pair: C = -(ln .9 + ln .1)/2
    ({"a": math.log(0.9), "b": math.log(0.1)}, -(math.log(0.9) + math.log(0.1)) / 2),
    # confident: the runners-up are far below, C = (0 + 10 + 20)/3
    ({"a": 0.0, "b": -10.0, "c": -20.0}, 10.0),
    # k = 1: C is the top token's negative logprob
    ({"a": -0.25}, 0.25),
    # k = 20 uniform over the top 20 (the least confident full top-20): C = ln 20
    ({f"t{j}": math.log(1 / 20) for j in range(20)}, math.log(20)),
]


@pytest.mark.parametrize("top,expected", TOKEN_CONFIDENCE)
async def test_token_confidence_from_fixed_top_logprobs(top, expected):
    k = len(top)
    score, feedback, cand = await score_one(TailConfidence(top_k=k), sample_of([top]))
    assert cand.trace is not None and cand.trace.k == k
    assert cand.trace.token_confidence()[0] == pytest.approx(expected, rel=1e-6)  # float32 storage
    assert raw_c(feedback) == pytest.approx(expected, rel=1e-5)
    assert score == pytest.approx(expected / (1 + expected), rel=1e-6)


# ---- group (sliding window) confidence --------------------------------------------------------------------

GROUPS = [
    # rising confidence, window 2: windows 1.5, 2.5, 3.5, 4.5 -> the first
    ([1, 2, 3, 4, 5], 2, "lowest", 1.5),
    # a dip in the middle, window 2: the window over the two 1s
    ([5, 1, 1, 5, 5], 2, "lowest", 1.0),
    # the same dip, window 3: windows 7/3, 7/3, 11/3
    ([5, 1, 1, 5, 5], 3, "lowest", 7 / 3),
    # window as long as the trace: one window, the mean
    ([4, 2, 6], 3, "lowest", 4.0),
    # window longer than the trace: one group, the mean (not the minimum token)
    ([4, 2, 6], 10, "lowest", 4.0),
    # window 1: the least confident token
    ([4, 2, 6], 1, "lowest", 2.0),
    # bottom 10% of 20 windows = the 2 lowest: (1 + 3) / 2
    ([10] * 9 + [1] + [10] * 8 + [3] + [10], 1, "bottom10", 2.0),
    # bottom 10% of 5 windows is less than one: the lowest window, as reduce=lowest
    ([5, 1, 1, 5, 5], 2, "bottom10", 1.0),
    # bottom 10% with one group (trace shorter than the window): the mean
    ([4, 2, 6], 10, "bottom10", 4.0),
]


@pytest.mark.parametrize("confs,window,reduce,expected", GROUPS)
async def test_group_confidence_over_sliding_windows(confs, window, reduce, expected):
    scorer = LowestGroupConfidence(top_k=1, window=window, reduce=reduce)
    score, feedback, _ = await score_one(scorer, confs_sample(confs))
    assert raw_c(feedback) == pytest.approx(expected, rel=1e-5)  # feedback: 6 significant digits
    assert score == pytest.approx(expected / (1 + expected), rel=1e-6)
    windows = max(1, len(confs) - window + 1)
    assert f"{windows} windows" in feedback and f"window {window}" in feedback


def test_group_measures_on_an_empty_trace_are_zero():
    # no tokens: no group; the reference scores such a trace 0
    empty = np.zeros(0)
    assert len(group_means(empty, 4)) == 0
    assert lowest_group_confidence(empty, 4) == bottom_group_confidence(empty, 4) == tail_confidence(empty, 4) == 0.0


# ---- tail confidence --------------------------------------------------------------------------------------

TAILS = [
    # the last two tokens
    ([1, 2, 3, 4], 2, 3.5),
    # the last token only
    ([1, 2, 3, 4], 1, 4.0),
    # a tail longer than the trace: the whole trace (DeepConf's mean confidence)
    ([1, 2, 3, 4], 10, 2.5),
    # a confident start does not lift a hesitant ending
    ([20, 20, 20, 1, 1], 2, 1.0),
]


@pytest.mark.parametrize("confs,tail,expected", TAILS)
async def test_tail_confidence(confs, tail, expected):
    score, feedback, _ = await score_one(TailConfidence(top_k=1, tail=tail), confs_sample(confs))
    assert raw_c(feedback) == pytest.approx(expected, rel=1e-5)
    assert score == pytest.approx(expected / (1 + expected), rel=1e-6)


# ---- monotone maps into [0, 1] ----------------------------------------------------------------------------

MAPS = [
    # C = 0 (nothing is less confident) scores 0
    (confidence_score, 0.0, 0.0),
    # C = 1 -> 1/2
    (confidence_score, 1.0, 0.5),
    # C = ln 20, the least confident full top-20 position -> ln20/(1+ln20) ~ 0.75
    (confidence_score, math.log(20), math.log(20) / (1 + math.log(20))),
    # infinitely confident (a -inf logprob among the top k) -> 1
    (confidence_score, math.inf, 1.0),
    # mean logprob 0 (every token certain) -> 1
    (logprob_score, 0.0, 1.0),
    # mean logprob ln .5 -> geometric-mean token probability .5
    (logprob_score, math.log(0.5), 0.5),
    # -inf -> 0
    (logprob_score, -math.inf, 0.0),
]


@pytest.mark.parametrize("fn,raw,expected", MAPS)
def test_monotone_maps(fn, raw, expected):
    assert fn(raw) == pytest.approx(expected)


def test_maps_keep_rankings_and_do_not_saturate():
    rng = np.random.default_rng(0)
    cs = rng.uniform(0, 40, 200)
    scores = [confidence_score(c) for c in cs]
    assert list(np.argsort(cs)) == list(np.argsort(scores))  # same order: best-of-n and AUROC unchanged
    assert confidence_score(30.0) < confidence_score(31.0) < confidence_score(60.0) < 1.0  # no ties up high
    assert [s / (1 - s) for s in scores] == pytest.approx(list(cs))  # invertible: the raw C comes back
    lps = -rng.exponential(1.0, 200)
    lp_scores = [logprob_score(m) for m in lps]
    assert list(np.argsort(lps)) == list(np.argsort(lp_scores))
    assert [math.log(s) for s in lp_scores] == pytest.approx(list(lps))


# ---- mean-logprob -----------------------------------------------------------------------------------------

async def test_mean_logprob_scores_the_geometric_mean_token_probability():
    # sampled tokens at p = .5 and p = .125: mean logprob ln(.25) -> score .25
    score, feedback, _ = await score_one(MeanLogprob(), sample_of([{"a": math.log(0.5)}, {"b": math.log(0.125)}]))
    assert score == pytest.approx(0.25)
    assert f"{math.log(0.25):.6g}" in feedback and MeanLogprob.top_logprobs_needed == 0


async def test_threshold_sets_passed_otherwise_none():
    tops = [{"a": -3.0}]  # C = 3 -> score .75
    score, _, cand = await score_one(TailConfidence(top_k=1), sample_of(tops))
    assert cand.verdicts == [] and score == pytest.approx(0.75)
    ctx = ScoringContext(policy=None, usage=Usage())  # type: ignore[arg-type]
    (v,) = await TailConfidence(top_k=1).score(PROBLEM, [cand], ctx)
    assert v.passed is None  # a score, not a pass/fail
    (v,) = await TailConfidence(top_k=1, threshold=0.7).score(PROBLEM, [cand], ctx)
    assert v.passed is True
    (v,) = await TailConfidence(top_k=1, threshold=0.8).score(PROBLEM, [cand], ctx)
    assert v.passed is False


# ---- compact storage --------------------------------------------------------------------------------------

def test_trace_storage_round_trips_as_float32_at_four_bytes_a_token():
    rng = np.random.default_rng(1)
    n, k = 1000, 20
    tops = [{f"t{j}": float(v) for j, v in enumerate(np.sort(-rng.exponential(3.0, k)))} for _ in range(n)]
    cand = Candidate.from_sample(sample_of(tops), None)
    trace = cand.trace
    assert trace is not None and trace.k == k
    assert len(base64.b64decode(trace.confidence)) == 4 * n and len(base64.b64decode(trace.logprobs)) == 4 * n
    assert len(trace.confidence) == 4 * math.ceil(4 * n / 3)  # base64 text: ~5.3 characters a token
    back = TokenTrace.model_validate(json.loads(json.dumps(trace.model_dump())))  # as a run folder stores it
    expected = np.array([-np.mean(list(t.values())) for t in tops], dtype=np.float32).astype(np.float64)
    assert np.array_equal(back.token_confidence(), expected)
    assert np.array_equal(back.token_logprobs(), trace.token_logprobs())


# ---- through a strategy -----------------------------------------------------------------------------------

class ScoredToyTask(ToyTask):
    def __init__(self, scorer: Scorer):
        super().__init__()
        self.scorer = scorer

    def default_scorers(self) -> list[Scorer]:
        return [self.scorer]


@pytest.mark.parametrize("scorer,asked", [
    # DeepConf's default k: the backend is asked for the top 20
    (LowestGroupConfidence(window=4), 20),
    # a smaller k is asked for as such
    (TailConfidence(top_k=5, tail=3), 5),
    # mean-logprob reads the sampled tokens' logprobs only: no top logprobs asked
    (MeanLogprob(), 0),
])
async def test_best_of_n_asks_the_backend_for_top_logprobs(scorer, asked):
    backend = ScriptedBackend(toy_script)
    result = await run_strategy(BestOfN(n=3), ScoredToyTask(scorer), backend)
    assert [req.sampling.top_logprobs for call in backend.calls for req in call] == [asked]
    for cand in result.candidates:
        assert (cand.trace is not None and cand.trace.k == asked) if asked else cand.trace is None
        assert [v.verifier for v in cand.verdicts] == [scorer.name]
    scores = [c.verdicts[0].score for c in result.candidates]
    assert result.chosen == int(np.argmax(scores)) and len(set(scores)) == 3


# ---- errors -----------------------------------------------------------------------------------------------

async def test_a_candidate_without_a_trace_is_an_error_not_a_zero():
    ctx = ScoringContext(policy=None, usage=Usage())  # type: ignore[arg-type]
    no_top = Candidate.from_sample(Sample(text="x", token_count=1, logprob_sum=-1.0, token_logprobs=[-1.0]), "1")
    for scorer in (LowestGroupConfidence(), TailConfidence()):
        with pytest.raises(UserError, match=rf"{scorer.name}.*--top-logprobs 20"):
            await scorer.score(PROBLEM, [no_top], ctx)
    with pytest.raises(UserError, match="mean-logprob.*logprobs"):
        await MeanLogprob().score(PROBLEM, [Candidate(text="x")], ctx)


@pytest.mark.parametrize("sampled_k,option_k", [
    # sampled with fewer top tokens than the scorer averages over
    (5, 20),
    # sampled with more: the trace keeps C over its own k only, which cannot be narrowed
    (20, 5),
])
async def test_a_trace_of_another_k_is_an_error(sampled_k, option_k):
    tops = [{f"t{j}": -float(j) for j in range(sampled_k)}] * 3
    with pytest.raises(UserError, match=rf"top_k={option_k}.*top-{sampled_k}.*--top-logprobs {option_k}"):
        await score_one(LowestGroupConfidence(top_k=option_k), sample_of(tops))


async def test_sampling_with_more_top_logprobs_than_the_scorer_reads_is_an_error():
    # --top-logprobs 20 with top_k=5: sample_candidates only raises k, so the traces keep k = 20
    with pytest.raises(UserError, match=r"top_k=5.*top-20.*top_k=20"):
        await run_strategy(BestOfN(n=2), ScoredToyTask(TailConfidence(top_k=5)), ScriptedBackend(toy_script),
                           sampling=SamplingConfig(max_tokens=64, top_logprobs=20))


@pytest.mark.parametrize("cls,options", [
    (LowestGroupConfidence, {"top_k": 0}),  # k is 1..20 (what backends return)
    (TailConfidence, {"top_k": 21}),
    (LowestGroupConfidence, {"window": 0}),
    (LowestGroupConfidence, {"reduce": "median"}),
    (TailConfidence, {"tail": 0}),
    (MeanLogprob, {"threshold": 1.5}),
    (MeanLogprob, {"top_k": 20}),  # mean-logprob has no k
])
def test_bad_options_are_refused(cls, options):
    with pytest.raises(ValidationError):
        cls(**options)


# ---- the same numbers as the reference (facebookresearch/deepconf, deepconf/utils.py) ----------------------
# Re-derived here from the reference's formulas, not imported:
#   token confidence  compute_confidence:   conf_i = round(-mean(logprob for each of the top-k at i), 3)
#   group confidence  compute_least_grouped: len(confs) < group_size -> [mean(confs)], else
#                     [round(mean(confs[i:i+group_size]), 3) for i in range(len(confs) - group_size + 1)];
#                     lowest group confidence ("min_conf") = min of those
#   bottom window     calculate_bottom_window_confidence: window means; num_bottom = max(1, int(len * 0.1));
#                     mean of the num_bottom smallest (bottom_percent=-1: the minimum)
#   tail              calculate_tail_confidence: mean(confs[-tail_tokens:]) (all confs when shorter)

def _reference_numbers(tops, window, tail):
    confs = [round(-sum(t.values()) / len(t), 3) for t in tops]
    if len(confs) < window:
        groups = [sum(confs) / len(confs)]
    else:
        groups = [round(sum(confs[i:i + window]) / window, 3) for i in range(len(confs) - window + 1)]
    plain = [sum(confs[i:i + window]) / window for i in range(len(confs) - window + 1)] or [sum(confs) / len(confs)]
    bottom = sorted(plain)[:max(1, int(len(plain) * 0.1))]
    tail_confs = confs[-tail:]
    return min(groups), sum(bottom) / len(bottom), sum(tail_confs) / len(tail_confs)


@pytest.mark.parametrize("n,window,tail", [
    (300, 32, 50),  # many windows
    (20, 32, 50),  # shorter than window and tail: one group
])
async def test_matches_the_reference_formulas_on_a_fixed_trace(n, window, tail):
    rng = np.random.default_rng(2)
    tops = [{f"t{j}": float(v) for j, v in enumerate(np.sort(-rng.exponential(4.0, 20))[::-1])} for _ in range(n)]
    lowest, bottom, tail_c = _reference_numbers(tops, window, tail)
    sample = sample_of(tops)
    # 3-decimal rounding there, float32 storage here: agreement to ~1e-3
    _, fb, _ = await score_one(LowestGroupConfidence(window=window), sample)
    assert raw_c(fb) == pytest.approx(lowest, abs=2e-3)
    _, fb, _ = await score_one(LowestGroupConfidence(window=window, reduce="bottom10"), sample)
    assert raw_c(fb) == pytest.approx(bottom, abs=2e-3)
    _, fb, _ = await score_one(TailConfidence(tail=tail), sample)
    assert raw_c(fb) == pytest.approx(tail_c, abs=2e-3)
