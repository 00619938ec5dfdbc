"""Confidence scorers: scores read from a sample's own token log-probabilities, no extra model call
(docs/scorers/confidence.md).

* `mean-logprob`: the sample's mean token log-probability (length-normalised likelihood).
* `group-confidence`: DeepConf's lowest group confidence (Fu et al. 2025, "Deep Think with Confidence"):
  token confidence C_i = -(1/k) sum_j log P_i(j) over the k most likely tokens at position i, averaged over
  sliding windows of `window` tokens; the score is the least confident window (or, `reduce=bottom10`, the
  mean of the least confident 10% of windows).
* `tail-confidence`: DeepConf's tail confidence, the mean C over the last `tail` tokens.

Scores live in [0, 1] (`Verdict.score`), so each raw measure goes through a monotone map, which keeps
rankings (best-of-n) and AUROC unchanged; the raw value is written in the verdict's feedback:

* mean log-probability m (<= 0) -> exp(m): the geometric-mean token probability. Inverse: m = ln(score).
* confidence C (>= 0; higher = more confident) -> C / (1 + C). Inverse: C = score / (1 - score). A rational
  map rather than 1 - exp(-C): C of a confident model is often 15-30, where 1 - exp(-C) rounds distinct
  values to the same float and would tie candidates that differ. With every top-k position full, C >= ln k
  (2.996 for k = 20, a score of 0.75): the k tokens uniform is the least confident a position can be.

The confidence scorers need the top-k log-probabilities of every generated token: `top_logprobs_needed`
is their `top_k`, so strategies that sample through `StrategyContext.sample_candidates` ask the backend
for them and the candidates carry a `TokenTrace`. A candidate without one is an error (sample with
`--top-logprobs K`), never a silent 0. A trace whose k differs from `top_k` is an error too: a trace keeps
C averaged over the k tokens it was sampled with, not the tokens themselves, and C grows with k, so
scores of two k's are not comparable and cannot be converted.

`passed` is None (confidence is a score, not a verdict) unless a `threshold` on the score is given.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from tts.confidence import (  # noqa: F401 - the measures live in core; re-exported here
    BOTTOM_SHARE,
    DEFAULT_TOP_K,
    DEFAULT_WINDOW,
    bottom_group_confidence,
    group_means,
    lowest_group_confidence,
    tail_confidence,
)
from tts.errors import UserError
from tts.scorer import Scorer, ScorerOptions, ScoringContext
from tts.types import Candidate, Problem, Verdict


def confidence_score(c: float) -> float:
    """A confidence C >= 0 as a score in [0, 1): C / (1 + C) (monotone; inverse s / (1 - s))."""
    if not math.isfinite(c):
        return 1.0 if c > 0 else 0.0
    c = max(c, 0.0)
    return c / (1.0 + c)


def logprob_score(mean_logprob: float) -> float:
    """A mean token log-probability as a score in [0, 1]: exp(m), the geometric-mean token probability."""
    if math.isnan(mean_logprob):
        return 0.0
    return min(1.0, math.exp(min(mean_logprob, 0.0)))


# ---- the scorers --------------------------------------------------------------------------------------

class MeanLogprobOptions(ScorerOptions):
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score (exp of the mean logprob) at or "
                                    "above which a candidate passes; unset: passed stays None")


class ConfidenceOptions(ScorerOptions):
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=20, description="k most likely tokens per position that token "
                       "confidence averages over (the backend is asked for them)")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score (C / (1 + C)) at or above which a "
                                    "candidate passes; unset: passed stays None")


class GroupOptions(ConfidenceOptions):
    window: int = Field(DEFAULT_WINDOW, ge=1, description="tokens per group (sliding window); a shorter "
                        "trace is one group")
    reduce: Literal["lowest", "bottom10"] = Field("lowest", description="lowest: the least confident window; "
                                                  "bottom10: mean of the least confident 10% of windows")


class TailOptions(ConfidenceOptions):
    tail: int = Field(DEFAULT_WINDOW, ge=1, description="last tokens averaged (a shorter trace: all of it)")


class _OwnTokensScorer(Scorer):
    """A scorer computed from each candidate alone, with no model call."""

    reads_sampled_tokens = True
    calls_model = False

    def verdict(self, score: float, feedback: str) -> Verdict:
        threshold = getattr(self.options, "threshold", None)
        passed = None if threshold is None else score >= threshold
        return Verdict(verifier=self.name, score=score, passed=passed, feedback=feedback)

    def measure(self, candidate: Candidate) -> Verdict:
        raise NotImplementedError

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        return [self.measure(c) for c in candidates]


class MeanLogprob(_OwnTokensScorer):
    """The sample's mean token log-probability m, scored exp(m) (geometric-mean token probability)."""

    name = "mean-logprob"
    description = "mean token log-probability of the sample, scored exp(mean) (no model call)"
    Options = MeanLogprobOptions
    top_logprobs_needed = 0

    def measure(self, candidate: Candidate) -> Verdict:
        m = candidate.mean_logprob
        if m is None:
            raise UserError(f"scorer {self.name!r}: a candidate has no token log-probabilities; sample with "
                            "logprobs (strategies that sample through sample_candidates ask for them)")
        s = logprob_score(m)
        return self.verdict(s, f"mean token logprob {m:.6g} over {candidate.completion_tokens} tokens; "
                               f"score = exp(mean) = {s:.6g}")


class _ConfidenceScorer(_OwnTokensScorer):
    options: ConfidenceOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.top_logprobs_needed = self.options.top_k

    def token_confidence(self, candidate: Candidate) -> np.ndarray:
        trace = candidate.trace
        k = self.options.top_k
        if trace is None:
            raise UserError(f"scorer {self.name!r} needs the top-{k} log-probabilities of every generated token, "
                            f"and a candidate has none: sample with top logprobs (`--top-logprobs {k}`; strategies "
                            "that sample through sample_candidates ask for them)")
        if trace.k != k:
            raise UserError(f"scorer {self.name!r} has top_k={k} but a candidate was sampled with top-{trace.k} "
                            f"log-probabilities; token confidence depends on k: sample with `--top-logprobs {k}` "
                            f"or set the scorer option top_k={trace.k}")
        return trace.token_confidence()

    def raw(self, conf: np.ndarray) -> tuple[float, str]:
        raise NotImplementedError

    def measure(self, candidate: Candidate) -> Verdict:
        conf = self.token_confidence(candidate)
        c, what = self.raw(conf)
        s = confidence_score(c)
        return self.verdict(s, f"{what} C={c:.6g} (k={self.options.top_k}, {len(conf)} tokens); "
                               f"score = C/(1+C) = {s:.6g}")


class LowestGroupConfidence(_ConfidenceScorer):
    """DeepConf's lowest group confidence (or bottom-10% group confidence), scored C / (1 + C)."""

    name = "group-confidence"
    description = ("DeepConf lowest group confidence: least confident sliding window of top-k token "
                   "confidence, scored C/(1+C) (no model call; needs --top-logprobs)")
    Options = GroupOptions
    options: GroupOptions

    def raw(self, conf: np.ndarray) -> tuple[float, str]:
        o = self.options
        groups = len(group_means(conf, o.window))
        if o.reduce == "bottom10":
            c = bottom_group_confidence(conf, o.window, BOTTOM_SHARE)
            return c, f"bottom-10% group confidence (window {o.window}, {groups} windows)"
        return lowest_group_confidence(conf, o.window), f"lowest group confidence (window {o.window}, {groups} windows)"


class TailConfidence(_ConfidenceScorer):
    """DeepConf's tail confidence: mean top-k token confidence of the last `tail` tokens, scored C / (1 + C)."""

    name = "tail-confidence"
    description = ("DeepConf tail confidence: mean top-k token confidence of the last tokens, scored C/(1+C) "
                   "(no model call; needs --top-logprobs)")
    Options = TailOptions
    options: TailOptions

    def raw(self, conf: np.ndarray) -> tuple[float, str]:
        return tail_confidence(conf, self.options.tail), f"tail confidence (last {self.options.tail} tokens)"
