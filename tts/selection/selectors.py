"""Selectors: pure functions that pick one sample out of a scored pool for ONE problem.

Shared by strategies ("sample n, apply a selector", through `StrategyContext.finish_choice`) and by
studies (the same selector on many random subsets of one stored pool, `tts.study.selectors`). A pool
is plain arrays: answers (grouped once, up front, into `Groups`), mean token log-probabilities,
optional scores and pass flags from the scorers' verdicts.

Every selector returns a `Selection`: the chosen sample index (None = abstain), the samples that tie
with it (one per tied option, so an evaluation can credit 1/len(tied) for a tie),
for group-based selectors the score each answer group got (`group_scores`), and selector-specific
details in `info` (RPC: `pruned`, `fit`, `fallback`; an abstaining selector: `reason`).

Docs (docs/algorithms/): majority vote self-consistency.md; RPC and perplexity rpc.md; best-of-N and weighted
vote best-of-n.md; first-passing (resample until the verifier accepts) repeated-sampling.md (fLaws).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tts.selection.grouping import Groups, majority_vote
from tts.selection.weibull import MIN_PATHS_TO_PRUNE, reasoning_pruning
from tts.types import Verdict

# Relative difference below which two summed group scores count as a tie (float summation noise).
TIE_RTOL = 1e-12

# ------------------------------------------------------------------------------------------------ results


class Selection(BaseModel):
    """A selector's choice for one pool."""

    chosen: int | None = Field(description="index of the chosen sample; None when the selector abstains")
    tied: list[int] = Field(default_factory=list,
                            description="one sample per option tied with the winner (chosen included), ascending")
    group: int | None = Field(None, description="answer group of the chosen sample, for group-based selectors")
    confidence: float | None = None
    group_scores: list[float] | None = Field(
        None, description="group-based selectors: per answer group (in `Groups` order) the score the vote compared: "
                          "member count (majority), summed weight (weighted vote), probability mass (RPC)")
    info: dict[str, Any] = Field(default_factory=dict)

    def credit(self, correct: Sequence[bool]) -> float:
        """Expected accuracy with ties credited 1/len(tied) (self-consistency.md, "Ties"); 0 when abstaining."""
        if self.chosen is None or not self.tied:
            return 0.0
        return float(np.mean([bool(correct[i]) for i in self.tied]))


# ------------------------------------------------------------------------------------------------ helpers


def _as_float_array(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Floats with None/NaN/inf kept as NaN, so 'missing' is one thing downstream."""
    arr = np.array([np.nan if v is None else v for v in values], dtype=float) if not isinstance(values, np.ndarray) \
        else values.astype(float, copy=True)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def _argmax_groups(members: list[list[int]], scores: np.ndarray) -> tuple[int | None, list[int]]:
    """Best group by score; the winner among ties is the group seen first.

    Sums of floats depend on summation order, so scores within `TIE_RTOL` of the best count as tied
    (a study that sums the same weights in another order then sees the same ties).
    """
    if not members:
        return None, []
    best = scores.max()
    tied = [g for g in range(len(members)) if scores[g] >= best - TIE_RTOL * abs(best)]
    return min(tied, key=lambda g: members[g][0]), tied


# ------------------------------------------------------------------------------------------------ voting


def majority(groups: Groups) -> Selection:
    """Self-consistency (self-consistency.md): the largest answer group; None answers cast no vote.

    Tie-break: the tied group whose first member came first in sample order (`majority_vote`). The chosen
    sample is that group's first member. confidence = group size / pool size.
    """
    members = groups.members
    winner, tied = majority_vote(members)
    votes = [float(len(m)) for m in members]
    if winner is None:
        return Selection(chosen=None, confidence=0.0, group_scores=votes)
    return Selection(chosen=members[winner][0], tied=sorted(members[g][0] for g in tied), group=winner,
                     confidence=len(members[winner]) / len(groups.ids), group_scores=votes)


def weighted_vote(groups: Groups, weights: Sequence[float | None] | np.ndarray) -> Selection:
    """Weighted majority vote (best-of-n.md; self-consistency.md's weighted sum): group score = sum of member weights.

    Missing weights count 0. Ties (equal sums, up to float rounding: TIE_RTOL) go to the group seen first.
    confidence = winning sum / total sum.
    """
    w = np.nan_to_num(_as_float_array(weights), nan=0.0)
    members = groups.members
    sums = np.array([w[m].sum() for m in members])
    winner, tied = _argmax_groups(members, sums)
    if winner is None:
        return Selection(chosen=None, confidence=0.0, group_scores=[])
    total = sums.sum()
    return Selection(chosen=members[winner][0], tied=sorted(members[g][0] for g in tied), group=winner,
                     confidence=float(sums[winner] / total) if total > 0 else None,
                     group_scores=sums.tolist())


# ------------------------------------------------------------------------------------------------ argmax selectors


def _argmax_samples(keys: list[np.ndarray]) -> tuple[int, list[int]]:
    """Index maximising the keys lexicographically (first key most significant); NaN ranks lowest.

    Ties (all keys equal) go to the earliest sample; the tied indices are returned too.
    """
    candidates = np.arange(len(keys[0]))
    for key in keys:
        values = np.nan_to_num(key[candidates], nan=-np.inf)
        candidates = candidates[values == values.max()]
    return int(candidates[0]), candidates.tolist()


def perplexity(mean_logprobs: Sequence[float | None] | np.ndarray) -> Selection:
    """The single most probable path: highest mean token log-prob (the RPC paper's baseline, rpc.md).

    Samples without a log-prob are never chosen; with none at all the selector abstains. Its answer
    is taken as is (a path with no extracted answer can win and is then wrong). Ties: earliest.
    confidence = exp(mean log-prob) of the chosen path (its per-token geometric-mean probability).
    """
    lp = _as_float_array(mean_logprobs)
    if not np.isfinite(lp).any():
        return Selection(chosen=None, info={"reason": "no sample has a mean log-probability"})
    chosen, tied = _argmax_samples([lp])
    return Selection(chosen=chosen, tied=tied, confidence=float(np.exp(lp[chosen])))


def best_of_n(scores: Sequence[float | None] | np.ndarray,
              mean_logprobs: Sequence[float | None] | np.ndarray | None = None) -> Selection:
    """Best-of-N (best-of-n.md): the highest score; ties broken by mean log-prob, then sample order.

    Missing scores rank lowest, so with no scores at all this is `perplexity` (and with neither, the
    first sample). confidence = the chosen score when there is one.
    """
    s = _as_float_array(scores)
    lp = _as_float_array(mean_logprobs) if mean_logprobs is not None else np.full(len(s), np.nan)
    if len(s) == 0:
        return Selection(chosen=None)
    chosen, tied = _argmax_samples([s, lp])
    return Selection(chosen=chosen, tied=tied, confidence=None if np.isnan(s[chosen]) else float(s[chosen]))


def first_passing(passed: Sequence[bool | None]) -> Selection:
    """Resample until the scorers accept (repeated-sampling.md, fLaws): the first passing sample.

    Abstains (chosen=None) when none passes, as the fLaws accuracy Acc(k) does; a strategy that must
    answer can fall back to its own default.
    """
    for i, ok in enumerate(passed):
        if ok is not None and bool(ok):
            return Selection(chosen=i, tied=[i])
    return Selection(chosen=None, info={"reason": "no sample passed the scorers"})


# ------------------------------------------------------------------------------------------------ verdicts


def verdict_score(verdicts: Sequence[Verdict]) -> float | None:
    """A candidate's selection score: the mean score of its verdicts, one per scorer (None without any)."""
    return float(np.mean([v.score for v in verdicts])) if verdicts else None


def verdict_passed(verdicts: Sequence[Verdict]) -> bool | None:
    """True if every verdict with a pass flag passed, False if one failed, None if none has a flag.

    The same rule as `Candidate.selection_passed`, for pools read back from a run folder.
    """
    flags = [v.passed for v in verdicts if v.passed is not None]
    return all(flags) if flags else None


# ------------------------------------------------------------------------------------------------ RPC


def rpc(groups: Groups, mean_logprobs: Sequence[float | None] | np.ndarray,
        texts: Sequence[Hashable] | None = None, min_paths: int = MIN_PATHS_TO_PRUNE) -> Selection:
    """Perplexity Consistency with Reasoning Pruning (rpc.md, exactly as published).

    p_i = exp(mean token log-prob). The Weibull mixture is fitted to every path that has a
    log-prob (answered or not: unanswered paths are part of the probability distribution); paths
    are pruned by the AND rule; an answer group's mass is the sum of p over its DISTINCT unpruned
    completions (identical `texts` count once; without `texts` every sample is distinct). Pruned
    paths still belong to their groups but add no mass. The winner is the group with the largest
    mass, ties to the group seen first; its chosen sample is its most probable unpruned path.

    Decisions where the spec leaves room: samples with no answer form no group (as in `majority`;
    the reference lets an "[Invalid]" group win); samples without a log-prob add no mass and are not
    fitted; if no group has mass (every answered path pruned or without log-prob) the group of the
    most probable answered path wins, as the spec's "keep the argmax-probability path".
    confidence = winning mass / total mass; `group_scores` = each group's mass; `info`: the pruned
    samples, the fitted mixture (None when no fit ran) and, when no group has mass, `fallback`.
    """
    lp = _as_float_array(mean_logprobs)
    n = len(lp)
    has_p = np.isfinite(lp)
    p = np.where(has_p, np.exp(np.where(has_p, lp, 0.0)), 0.0)
    pruned = np.zeros(n, dtype=bool)
    flags, mixture = reasoning_pruning(p[has_p], min_paths)
    pruned[np.flatnonzero(has_p)] = flags

    members = groups.members
    keys = list(range(n)) if texts is None else list(texts)
    mass = np.zeros(len(members))
    for g, idx in enumerate(members):
        distinct: dict[Hashable, float] = {}
        for i in idx:
            if has_p[i] and not pruned[i]:
                distinct.setdefault(keys[i], p[i])
        mass[g] = sum(distinct.values())

    info: dict[str, Any] = {
        "pruned": np.flatnonzero(pruned).tolist(),
        "fit": None if mixture is None else {
            "w1": mixture.w1, "k1": mixture.k1, "lam1": mixture.lam1, "k2": mixture.k2, "lam2": mixture.lam2,
            "converged": mixture.converged},
    }
    if not members:
        return Selection(chosen=None, confidence=0.0, group_scores=[], info=info)
    total = mass.sum()
    if total <= 0:
        answered = np.flatnonzero(groups.ids >= 0)
        best = answered[np.argmax(np.where(has_p[answered], p[answered], -1.0))]
        info["fallback"] = "no group has mass: the most probable answered path decides"
        return Selection(chosen=int(best), tied=[int(best)], group=int(groups.ids[best]), confidence=None,
                         group_scores=mass.tolist(), info=info)

    winner, tied = _argmax_groups(members, mass)
    assert winner is not None  # members is not empty (checked above)

    def representative(g: int) -> int:
        idx = members[g]
        live = [i for i in idx if has_p[i] and not pruned[i]]
        return max(live, key=lambda i: (p[i], -i)) if live else idx[0]

    return Selection(chosen=representative(winner), tied=sorted(representative(g) for g in tied), group=winner,
                     confidence=float(mass[winner] / total), group_scores=mass.tolist(), info=info)
