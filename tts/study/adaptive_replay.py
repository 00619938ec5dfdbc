"""The adaptive-compute strategies replayed on a stored pool (docs/adaptive-replay.md).

`adaptive-consistency`, `early-stop` and `deepconf` decide after each round whether to sample more. On a
pool of independent samples, taking the samples in a random order is what the strategy would have seen,
so each replay walks one order with the same pure rules the strategies call (`tts.adaptive`,
`tts.confidence`) and reports what it spent and whether its answer is right. The core never imports a
strategy, so the loops are written again here, on pool arrays; the rules are not.

Credit: a vote is credited like the study's majority vote (the winning group's share of oracle-accepted
members, ties within `TIE_RTOL` credited 1/#tied); a single chosen sample by its own oracle verdict
(ties among equally confident samples 1/#tied).
"""

from __future__ import annotations

import functools
import heapq
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tts.adaptive import DIRICHLET_TOP_K, Prior, first_confident, majority_probability, weighted_leader
from tts.confidence import first_window_below, lowest_group_confidence, threshold_from_warmup
from tts.selection import TIE_RTOL
from tts.study.pool import ProblemPool

# A sample's token confidences with the top-k they were averaged over (None: no trace stored).
Trace = tuple[int, np.ndarray]


@dataclass
class Outcome:
    """One replay on one order: samples drawn, completion tokens generated, expected accuracy."""

    samples: int
    tokens: float
    credit: float


@dataclass
class ReplayPool:
    """One problem's pool and, for DeepConf, its samples' token confidences (aligned with the pool)."""

    pool: ProblemPool
    traces: Sequence[Trace | None] | None = None
    _lowest: dict[int, np.ndarray] = field(default_factory=dict)

    def confidences(self, i: int) -> np.ndarray:
        if self.traces is None or self.traces[i] is None:
            raise ValueError(f"{self.pool.problem_id}: sample {i} has no token trace")
        trace = self.traces[i]
        assert trace is not None
        return trace[1]

    def lowest(self, window: int) -> np.ndarray:
        """Each sample's lowest group confidence (DeepConf's raw C), computed once per window."""
        if window not in self._lowest:
            self._lowest[window] = np.array([lowest_group_confidence(self.confidences(i), window)
                                             for i in range(self.pool.n)])
        return self._lowest[window]


# ------------------------------------------------------------------------------------------------ credit


def vote_credit(pool: ProblemPool, voters: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Expected accuracy of a (weighted) vote among `voters`, as the study credits majority vote.

    The answer groups with the most votes (or weight, within TIE_RTOL) tie; credit is the mean of their
    oracle-accepted shares. No vote, or no positive weight (no leader for `weighted_leader`): 0.
    """
    G = pool.groups.count
    ids = pool.groups.ids[np.asarray(voters, dtype=np.int64)]
    valid = ids >= 0
    if G == 0 or not valid.any():
        return 0.0
    counts = np.bincount(ids[valid], minlength=G)
    if weights is None:
        scores = counts.astype(float)
    else:
        scores = np.bincount(ids[valid], weights=np.asarray(weights, dtype=float)[valid], minlength=G)
        if scores.sum() <= 0:
            return 0.0
    present = counts > 0
    best = scores[present].max()
    tied = present & (scores >= best - TIE_RTOL * abs(best))
    return float(pool.group_correct[tied].mean())


def pick_credit(pool: ProblemPool, candidates: np.ndarray, keys: np.ndarray) -> float:
    """Expected accuracy of picking the candidate with the largest key (ties 1/#tied)."""
    best = keys.max()
    tied = candidates[keys >= best - TIE_RTOL * abs(best)]
    return float(pool.correct[tied].mean())


def _answers(pool: ProblemPool, rows: np.ndarray) -> list[int | None]:
    """Group ids as `tts.adaptive` answers (None: no answer, never a vote)."""
    return [None if g < 0 else int(g) for g in pool.groups.ids[rows]]


@functools.lru_cache(maxsize=65536)
def _majority_probability(counts: tuple[int, ...], prior: Prior) -> float:
    """`majority_probability`, remembered per count vector (replays ask the same ones very often)."""
    return majority_probability(counts, prior)


# ------------------------------------------------------------------------------------------------ replays


class Replay(BaseModel, ABC):
    """One adaptive method with its options; `run` replays it on one order of one problem's pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: ClassVar[str]

    @property
    def name(self) -> str:
        return self.method

    @property
    def needs_traces(self) -> bool:
        return False

    def options(self) -> dict[str, Any]:
        return self.model_dump()

    def missing(self, pools: Sequence[ProblemPool], traces: dict[str, list[Trace | None]] | None) -> str | None:
        """Why this method cannot be replayed on these pools, or None."""
        return None

    @abstractmethod
    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        """The method on the samples `order` (pool indices, in the order drawn; its length is the budget)."""


class AdaptiveConsistency(Replay):
    """Aggarwal et al. 2023: draw `batch` samples at a time until the leader is the majority with
    posterior probability `threshold`; the answer is the majority vote of the samples drawn."""

    method: ClassVar[str] = "adaptive-consistency"
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    prior: Prior = "beta"
    batch: int = Field(1, ge=1)

    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        pool = rp.pool
        counts = [0] * max(pool.groups.count, 1)
        used = len(order)
        for j, g in enumerate(pool.groups.ids[order].tolist(), start=1):
            if g >= 0:
                counts[g] += 1
            if j % self.batch and j < len(order):
                continue  # mid-round: the strategy looks only when a round is back
            # majority_probability reads at most the DIRICHLET_TOP_K largest counts
            if _majority_probability(tuple(heapq.nlargest(DIRICHLET_TOP_K, counts)), self.prior) >= self.threshold:
                used = j
                break
        drawn = order[:used]
        return Outcome(used, float(pool.tokens[drawn].sum()), vote_credit(pool, drawn))


class EarlyStop(Replay):
    """Self-Calibration's early stopping (Huang et al. 2025) on one scorer's score in [0, 1].

    `first`: stop at the first sample whose score reaches `tau` and answer with it; none does: the most
    confident sample drawn. `weighted-vote`: after each sample, stop once the score-weighted vote share of
    the leading answer reaches `tau`; answer with that weighted vote.
    """

    method: ClassVar[str] = "early-stop"
    scorer: str
    tau: float = Field(0.9, ge=0.0, le=1.0)
    variant: Literal["first", "weighted-vote"] = "first"

    @property
    def name(self) -> str:
        return f"{self.method}{'' if self.variant == 'first' else '-vote'}[{self.scorer}]"

    def missing(self, pools, traces):
        scored = sum(int(np.isfinite(p.scores[self.scorer]).sum()) for p in pools if self.scorer in p.scores)
        total = sum(p.n for p in pools)
        if scored < total:
            return (f"{self.name}: scorer {self.scorer} scored {scored} of {total} samples; the replay needs a "
                    "score on every sample (add it with `tts rescore`)")
        return None

    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        pool = rp.pool
        score = pool.scores[self.scorer]
        if self.variant == "first":
            hit = first_confident(score[order].tolist(), self.tau)
            if hit is not None:
                drawn = order[:hit + 1]
                return Outcome(hit + 1, float(pool.tokens[drawn].sum()), float(pool.correct[order[hit]]))
            return Outcome(len(order), float(pool.tokens[order].sum()), pick_credit(pool, order, score[order]))
        used = len(order)
        for j in range(1, len(order) + 1):
            _, share = weighted_leader(_answers(pool, order[:j]), score[order[:j]].tolist())
            if share >= self.tau:
                used = j
                break
        drawn = order[:used]
        return Outcome(used, float(pool.tokens[drawn].sum()), vote_credit(pool, drawn, score[drawn]))


class DeepConf(Replay):
    """DeepConf (Fu et al. 2025) on stored token confidences: C = lowest group confidence over `window`.

    offline: every sample of the budget; keep those with C at least the (100 - keep)th percentile of
    theirs and vote weighted by C. online: `warmup` whole traces set the threshold s (the same percentile
    of theirs); then traces come `batch` at a time, each stopped at the end of its first window with mean
    below s (those tokens are spent, the trace never votes); after each such round, stop once the
    C-weighted vote share of the leader among the traces that finished (warm-up included) reaches
    `consensus`. The answer is that weighted vote.
    """

    method: ClassVar[str] = "deepconf"
    mode: Literal["offline", "online"] = "online"
    keep: float = Field(10.0, gt=0.0, le=100.0, description="percent of traces kept (DeepConf-low: 10)")
    window: int = Field(64, ge=1)
    top_k: int = Field(20, ge=1)
    warmup: int = Field(4, ge=1)
    batch: int = Field(4, ge=1)
    consensus: float = Field(0.95, gt=0.0, le=1.0)

    @property
    def name(self) -> str:
        return f"{self.method}-{self.mode}"

    @property
    def needs_traces(self) -> bool:
        return True

    def options(self) -> dict[str, Any]:
        drop = {"warmup", "batch", "consensus"} if self.mode == "offline" else set()
        return self.model_dump(exclude=drop)

    def missing(self, pools, traces):
        if traces is None:
            return f"{self.name}: no token traces to read (a study of pools without their run folder)"
        total = sum(p.n for p in pools)
        have = sum(1 for p in pools for t in traces.get(p.problem_id, []) if t is not None and t[0] == self.top_k)
        if have < total:
            return (f"{self.name}: {have} of {total} samples have a token trace with top-{self.top_k} confidences; "
                    f"the replay needs every one (sample with --top-logprobs {self.top_k})")
        return None

    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        pool, conf = rp.pool, rp.lowest(self.window)
        if self.mode == "offline":
            threshold = threshold_from_warmup(conf[order], self.keep)
            kept = order[conf[order] >= threshold]
            return Outcome(len(order), float(pool.tokens[order].sum()), vote_credit(pool, kept, conf[kept]))
        warm = order[:self.warmup]
        threshold = threshold_from_warmup(conf[warm], self.keep)
        voters = list(warm)
        tokens = float(pool.tokens[warm].sum())
        used = len(warm)
        while used < len(order):
            for i in order[used:used + self.batch]:
                stop = first_window_below(rp.confidences(int(i)), self.window, threshold)
                if stop is None:
                    voters.append(i)
                    tokens += float(pool.tokens[i])
                else:
                    tokens += stop
            used = min(used + self.batch, len(order))
            rows = np.asarray(voters, dtype=np.int64)
            if weighted_leader(_answers(pool, rows), conf[rows].tolist())[1] >= self.consensus:
                break
        rows = np.asarray(voters, dtype=np.int64)
        return Outcome(used, tokens, vote_credit(pool, rows, conf[rows]))
