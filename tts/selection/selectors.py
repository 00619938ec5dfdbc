"""Selectors: pure functions that pick one sample out of a scored pool for ONE problem.

Shared by strategies ("sample n, apply a selector") and by studies (the same selector on many
random subsets of one stored pool). A pool is plain arrays: answers (grouped once, up front, into
`Groups`), mean token log-probabilities, optional selection-verifier scores and pass flags.

Every selector returns a `Selection`: the chosen sample index (None = abstain), the samples that tie
with it (one per tied option, so an evaluation can credit 1/len(tied) for a tie, ALGORITHMS.md 2 (c))
and selector-specific details in `info`.

Sections of ../shared/ALGORITHMS.md: majority vote 2; RPC (perplexity consistency + reasoning
pruning) 3; best-of-N and weighted vote 7; first-passing (resample until the verifier accepts)
9, fLaws paragraph.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import minimize
from scipy.special import gammaln

from tts.types import Verdict
from tts.voting import group_answers, majority_vote

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
    info: dict[str, Any] = Field(default_factory=dict)

    def credit(self, correct: Sequence[bool]) -> float:
        """Expected accuracy with ties credited 1/len(tied) (ALGORITHMS.md 2, option (c)); 0 when abstaining."""
        if self.chosen is None or not self.tied:
            return 0.0
        return float(np.mean([bool(correct[i]) for i in self.tied]))


# ------------------------------------------------------------------------------------------------ groups


@dataclass(frozen=True)
class Groups:
    """Answer groups of a pool, computed once (the expensive equivalence checks) and reused.

    `ids[i]` is sample i's group (-1: no answer); groups are numbered in order of first occurrence.
    `subset(indices)` regroups a subsample from these ids with no equivalence call, so a study can
    draw thousands of subsets cheaply. (For a non-transitive `equivalent` this can differ slightly
    from grouping the subset afresh, which depends on sample order; for a transitive one it is exact.)
    """

    ids: np.ndarray

    @classmethod
    def of_answers(cls, answers: Sequence[str | None], equivalent: Callable[[str, str], bool]) -> Groups:
        ids = np.full(len(answers), -1, dtype=np.int64)
        for g, members in enumerate(group_answers(answers, equivalent)):
            ids[members] = g
        return cls(ids)

    @classmethod
    def from_ids(cls, ids: Sequence[int] | np.ndarray) -> Groups:
        """Renumber arbitrary group labels (-1 = no answer) in order of first occurrence."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(len(ids), -1, dtype=np.int64)
        valid = ids >= 0
        if valid.any():
            labels, first, inverse = np.unique(ids[valid], return_index=True, return_inverse=True)
            rank = np.empty(len(labels), dtype=np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(len(labels))
            out[valid] = rank[inverse]
        return cls(out)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Groups:
        return Groups.from_ids(self.ids[np.asarray(indices, dtype=np.int64)])

    @property
    def count(self) -> int:
        return int(self.ids.max()) + 1 if len(self.ids) else 0

    @property
    def members(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.count)]
        for i, g in enumerate(self.ids.tolist()):
            if g >= 0:
                out[g].append(i)
        return out


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
    """Self-consistency (ALGORITHMS.md 2): the largest answer group; None answers cast no vote.

    Tie-break: the tied group whose first member came first in sample order (tts.voting). The chosen
    sample is that group's first member. confidence = group size / pool size.
    """
    members = groups.members
    winner, tied = majority_vote(members)
    votes = [len(m) for m in members]
    if winner is None:
        return Selection(chosen=None, confidence=0.0, info={"votes": votes})
    return Selection(chosen=members[winner][0], tied=sorted(members[g][0] for g in tied), group=winner,
                     confidence=len(members[winner]) / len(groups.ids), info={"votes": votes})


def weighted_vote(groups: Groups, weights: Sequence[float | None] | np.ndarray) -> Selection:
    """Weighted majority vote (ALGORITHMS.md 7, and 2's weighted sum): group score = sum of member weights.

    Missing weights count 0. Ties (equal sums, up to float rounding: TIE_RTOL) go to the group seen first.
    confidence = winning sum / total sum.
    """
    w = np.nan_to_num(_as_float_array(weights), nan=0.0)
    members = groups.members
    sums = np.array([w[m].sum() for m in members])
    winner, tied = _argmax_groups(members, sums)
    if winner is None:
        return Selection(chosen=None, confidence=0.0, info={"weights": []})
    total = sums.sum()
    return Selection(chosen=members[winner][0], tied=sorted(members[g][0] for g in tied), group=winner,
                     confidence=float(sums[winner] / total) if total > 0 else None,
                     info={"weights": sums.tolist()})


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
    """The single most probable path: highest mean token log-prob (ALGORITHMS.md 3, the RPC paper's baseline).

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
    """Best-of-N (ALGORITHMS.md 7): the highest score; ties broken by mean log-prob, then sample order.

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
    """Resample until the selection verifier accepts (ALGORITHMS.md 9, fLaws): the first passing sample.

    Abstains (chosen=None) when none passes, as the fLaws accuracy Acc(k) does; a strategy that must
    answer can fall back to its own default.
    """
    for i, ok in enumerate(passed):
        if ok is not None and bool(ok):
            return Selection(chosen=i, tied=[i])
    return Selection(chosen=None, info={"reason": "no sample passed the selection verifier"})


# ------------------------------------------------------------------------------------------------ verdicts


def verdict_score(verdicts: Sequence[Verdict]) -> float | None:
    """A candidate's selection score: the mean score of its selection verdicts (None without any)."""
    return float(np.mean([v.score for v in verdicts])) if verdicts else None


def verdict_passed(verdicts: Sequence[Verdict]) -> bool | None:
    """True if every verdict with a pass flag passed, False if one failed, None if none has a flag.

    The same rule as `Candidate.selection_passed`, for pools read back from a run folder.
    """
    flags = [v.passed for v in verdicts if v.passed is not None]
    return all(flags) if flags else None


# ------------------------------------------------------------------------------------------------ RPC

# ALGORITHMS.md 3: start values and bounds of the two-component Weibull mixture fit.
WEIBULL_START = np.array([0.5, 1.0, 1.0, 1.5, 2.0])
WEIBULL_BOUNDS = [(0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None)]
# Below this many paths with a probability the fit is ill-posed: no pruning (ALGORITHMS.md 3, edge cases).
MIN_PATHS_TO_PRUNE = 5
_MAX_LOG_T = 700.0  # exp() of more overflows; only reached far from any sensible optimum


def _joint_log_density(theta: np.ndarray, logp: np.ndarray):
    """log(w_c Weib(p; k_c, lam_c)) for both components c, as a (2, m) array, from log p (stable).

    Also returns log(p/lam), (p/lam)^k and the (2, 1) shape and scale columns for the gradient.
    """
    w1 = theta[0]
    k = theta[[1, 3], None]
    lam = theta[[2, 4], None]
    log_lam = np.log(lam)
    logz = logp - log_lam
    t = np.exp(np.minimum(k * logz, _MAX_LOG_T))
    log_w = np.array([[np.log(w1)], [np.log1p(-w1)]])
    return log_w + np.log(k) - log_lam + (k - 1.0) * logz - t, logz, t, k, lam


def weibull_mixture_nll(theta: np.ndarray, logp: np.ndarray) -> tuple[float, np.ndarray]:
    """-sum log f(p_i) of the mixture and its analytic gradient (one evaluation per L-BFGS-B step).

    d log Weib / dk = 1/k + log z (1 - t), d log Weib / dlam = (k/lam)(t - 1), with z = p/lam, t = z^k;
    each weighted by the component's responsibility r_c.
    """
    joint, logz, t, k, lam = _joint_log_density(theta, logp)
    ll = np.logaddexp(joint[0], joint[1])
    r = np.exp(joint - ll)
    w1 = theta[0]
    d_k = (r * (1.0 / k + logz * (1.0 - t))).sum(axis=1)
    d_lam = (r * (t - 1.0)).sum(axis=1) * (k / lam)[:, 0]
    grad = np.array([r[0].sum() / w1 - r[1].sum() / (1.0 - w1), d_k[0], d_lam[0], d_k[1], d_lam[1]])
    value = -float(ll.sum())
    if not (np.isfinite(value) and np.isfinite(grad).all()):
        return np.inf, np.zeros(5)
    return value, -grad


@dataclass(frozen=True)
class WeibullMixture:
    """f(p) = w1 Weib(p; k1, lam1) + (1 - w1) Weib(p; k2, lam2); component 1 has the larger mean."""

    w1: float
    k1: float
    lam1: float
    k2: float
    lam2: float
    converged: bool = True

    @property
    def params(self) -> np.ndarray:
        return np.array([self.w1, self.k1, self.lam1, self.k2, self.lam2])

    def high_share(self, p: np.ndarray) -> np.ndarray:
        """pi_1(p): the posterior share of the high-probability component, per path.

        Where both densities underflow to 0 the share is 0.5 (neither side is favoured, so the path
        is not pruned; the reference implementation gets NaN there, which also never prunes).
        """
        logp = np.log(np.asarray(p, dtype=float))
        with np.errstate(over="ignore", invalid="ignore"):
            (a, b), *_ = _joint_log_density(self.params, logp)
            share = 1.0 / (1.0 + np.exp(b - a))
        share[np.isneginf(a) & np.isneginf(b)] = 0.5
        return share


def _log_weibull_mean(k: float, lam: float) -> float:
    return float(np.log(lam) + gammaln(1.0 + 1.0 / k))


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only speed depends on it
        return None
    return ThreadpoolController()


def _one_blas_thread() -> AbstractContextManager:
    """L-BFGS-B calls BLAS on 5x5 matrices; OpenBLAS threads spinning on a busy machine made each
    fit about 100x slower here (0.2 s instead of 2 ms on 2 shared cores), so fits run single-threaded."""
    controller = _blas_controller()
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def fit_weibull_mixture(p: Sequence[float] | np.ndarray) -> WeibullMixture:
    """Maximum-likelihood two-component Weibull mixture of path probabilities (ALGORITHMS.md 3).

    L-BFGS-B (scipy) from the stated start (0.5, 1, 1, 1.5, 2) within the stated bounds
    (w1 in [0.2, 0.8], shapes and scales >= 0.01), scipy's default tolerances like the reference
    implementation, with the analytic gradient (the reference uses finite differences: same optimum,
    about 3x fewer evaluations). Then relabelled so component 1 has the larger mean lam*Gamma(1+1/k).
    """
    logp = np.log(np.asarray(p, dtype=float))
    with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore"):
        res = minimize(weibull_mixture_nll, WEIBULL_START, args=(logp,), jac=True, method="L-BFGS-B",
                       bounds=WEIBULL_BOUNDS)
    w1, k1, lam1, k2, lam2 = (float(x) for x in res.x)
    if _log_weibull_mean(k1, lam1) < _log_weibull_mean(k2, lam2):
        w1, k1, lam1, k2, lam2 = 1.0 - w1, k2, lam2, k1, lam1
    return WeibullMixture(w1, k1, lam1, k2, lam2, converged=bool(res.success))


def reasoning_pruning(p: Sequence[float] | np.ndarray,
                      min_paths: int = MIN_PATHS_TO_PRUNE) -> tuple[np.ndarray, WeibullMixture | None]:
    """Which paths RPC prunes: pi_1 < pi_2 AND p < mean(p), both required (ALGORITHMS.md 3).

    With fewer than `min_paths` paths nothing is pruned (the fit is ill-posed). When no path lies
    below the mean the AND rule cannot prune anything and the fit is skipped.
    """
    p = np.asarray(p, dtype=float)
    below = p < p.mean() if len(p) else np.zeros(0, dtype=bool)
    if len(p) < min_paths or not below.any():
        return np.zeros(len(p), dtype=bool), None
    mixture = fit_weibull_mixture(p)
    share = mixture.high_share(p)
    return (share < 1.0 - share) & below, mixture


def rpc(groups: Groups, mean_logprobs: Sequence[float | None] | np.ndarray,
        texts: Sequence[Hashable] | None = None, min_paths: int = MIN_PATHS_TO_PRUNE) -> Selection:
    """Perplexity Consistency with Reasoning Pruning (ALGORITHMS.md 3, exactly as specified there).

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
    confidence = winning mass / total mass.
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
        "mass": mass.tolist(),
        "fit": None if mixture is None else {
            "w1": mixture.w1, "k1": mixture.k1, "lam1": mixture.lam1, "k2": mixture.k2, "lam2": mixture.lam2,
            "converged": mixture.converged},
    }
    if not members:
        return Selection(chosen=None, confidence=0.0, info=info)
    total = mass.sum()
    if total <= 0:
        answered = np.flatnonzero(groups.ids >= 0)
        best = answered[np.argmax(np.where(has_p[answered], p[answered], -1.0))]
        winner = int(groups.ids[best])
        info["fallback"] = "no group has mass: the most probable answered path decides"
        return Selection(chosen=int(best), tied=[int(best)], group=winner, confidence=None, info=info)

    winner, tied = _argmax_groups(members, mass)

    def representative(g: int) -> int:
        idx = members[g]
        live = [i for i in idx if has_p[i] and not pruned[i]]
        return max(live, key=lambda i: (p[i], -i)) if live else idx[0]

    return Selection(chosen=representative(winner), tied=sorted(representative(g) for g in tied), group=winner,
                     confidence=float(mass[winner] / total), info=info)
