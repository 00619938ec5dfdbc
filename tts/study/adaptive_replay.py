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
        """Sample i's token confidences (none for an empty completion, which stores no trace)."""
        trace = None if self.traces is None else self.traces[i]
        if trace is None:
            if self.pool.tokens[i] == 0:
                return np.zeros(0)
            raise ValueError(f"{self.pool.problem_id}: sample {i} has no token trace")
        return trace[1]

    def lowest(self, window: int) -> np.ndarray:
        """Each sample's lowest group confidence (DeepConf's raw C), computed once per window."""
        if window not in self._lowest:
            self._lowest[window] = np.array([lowest_group_confidence(self.confidences(i), window)
                                             for i in range(self.pool.n)])
        return self._lowest[window]


# ------------------------------------------------------------------------------------------------ credit


def vote_credit(pool: ProblemPool, voters: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Expected accuracy of a (weighted) vote among `voters`, as the study credits majority vote and as
    `tts.selection.weighted_vote` decides (weights: of the voters, in the same order).

    The answer groups with the most votes (or weight, within TIE_RTOL) tie; credit is the mean of their
    oracle-accepted shares (all weights 0: every group voted for ties). No vote (abstaining): 0.
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
        scores = np.bincount(ids[valid], weights=np.nan_to_num(np.asarray(weights, dtype=float)[valid]), minlength=G)
    present = counts > 0
    best = scores[present].max()
    tied = present & (scores >= best - TIE_RTOL * abs(best))
    return float(pool.group_correct[tied].mean())


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

    def missing(self, pools: Sequence[ProblemPool], traces: dict[str, list[Trace | None]] | None,
                budget: int) -> str | None:
        """Why this method cannot be replayed on these pools with this budget, or None."""
        return None

    @abstractmethod
    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        """The method on the samples `order` (pool indices, in the order drawn; its length is the budget)."""


class AdaptiveConsistency(Replay):
    """`adaptive-consistency` (Aggarwal et al. 2023): `round` samples at a time until the leader is the
    majority with posterior probability `threshold` (and `min_samples` are drawn); the answer is the
    majority vote of every sample drawn."""

    method: ClassVar[str] = "adaptive-consistency"
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    prior: Prior = "beta"
    round: int = Field(1, ge=1)
    min_samples: int = Field(1, ge=1)

    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        pool = rp.pool
        counts = [0] * max(pool.groups.count, 1)
        used = len(order)
        for j, g in enumerate(pool.groups.ids[order].tolist(), start=1):
            if g >= 0:
                counts[g] += 1
            if j % self.round and j < len(order):
                continue  # mid-round: the strategy looks only when a round is back
            # majority_probability reads at most the DIRICHLET_TOP_K largest counts
            probability = _majority_probability(tuple(heapq.nlargest(DIRICHLET_TOP_K, counts)), self.prior)
            if probability >= self.threshold and j >= self.min_samples:
                used = j
                break
        drawn = order[:used]
        return Outcome(used, float(pool.tokens[drawn].sum()), vote_credit(pool, drawn))


class EarlyStop(Replay):
    """`early-stop` (Self-Calibration, Huang et al. 2025) on one scorer's score in [0, 1], `round` samples at
    a time; a sample without an answer never stops it and is never picked.

    most-confident: stop after the round holding the first sample whose score reaches `tau` and answer with
    that sample (the rest of its round is spent all the same); none does: the most confident sample.
    weighted-vote: from the second sample on, stop after a round once the leading answer's share of the
    summed scores reaches `tau`; the answer is the score-weighted vote of every sample drawn.
    """

    method: ClassVar[str] = "early-stop"
    scorer: str
    tau: float = Field(0.9, ge=0.0, le=1.0)
    final: Literal["most-confident", "weighted-vote"] = "most-confident"
    round: int = Field(1, ge=1)

    @property
    def name(self) -> str:
        return f"{self.method}{'' if self.final == 'most-confident' else '-vote'}[{self.scorer}]"

    def missing(self, pools: Sequence[ProblemPool], traces: dict[str, list[Trace | None]] | None,
                budget: int) -> str | None:
        scored = sum(int(np.isfinite(p.scores[self.scorer]).sum()) for p in pools if self.scorer in p.scores)
        total = sum(p.n for p in pools)
        if scored < total:
            return (f"{self.name}: scorer {self.scorer} scored {scored} of {total} samples; the replay needs a "
                    "score on every sample (add it with `tts rescore`)")
        return None

    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        pool, budget = rp.pool, len(order)
        score = pool.scores[self.scorer][order]
        answered = pool.groups.ids[order] >= 0
        if self.final == "most-confident":
            confidence = np.where(answered, score, -np.inf)
            hit = first_confident(confidence.tolist(), self.tau)
            if hit is not None:
                used = min(budget, -(-(hit + 1) // self.round) * self.round)  # the end of the hit's round
                return Outcome(used, float(pool.tokens[order[:used]].sum()), float(pool.correct[order[hit]]))
            tokens = float(pool.tokens[order].sum())
            if not answered.any():
                return Outcome(budget, tokens, 0.0)  # nothing to pick: the strategy abstains
            best = confidence.max()
            return Outcome(budget, tokens, float(pool.correct[order[confidence == best]].mean()))
        used = budget
        answers = _answers(pool, order)
        for j in range(self.round, budget + self.round, self.round):
            j = min(j, budget)
            if j >= 2:
                leader, share = weighted_leader(answers[:j], score[:j].tolist())
                if leader is not None and share >= self.tau:
                    used = j
                    break
        drawn = order[:used]
        return Outcome(used, float(pool.tokens[drawn].sum()), vote_credit(pool, drawn, score[:used]))


class DeepConf(Replay):
    """`deepconf` (Fu et al. 2025) on stored token confidences: C = a trace's lowest group confidence.

    offline: every sample of the budget; keep the answered ones with C at least the (100 - keep_percent)th
    percentile of the answered traces' C; vote weighted by C. online: `warmup` whole traces set the
    threshold s (the same percentile of theirs); before each round of `round` traces, stop once the
    C-weighted share of the leader among the answered traces that ran to their end (warm-up included)
    reaches `consensus`; each trace of a round is stopped at the end of its first window with mean below s
    (those tokens are spent; it never votes; a stop on its last token leaves it whole, as the backends do).
    The vote: the finished traces with C >= s, weighted by C.
    """

    method: ClassVar[str] = "deepconf"
    mode: Literal["offline", "online"] = "online"
    keep_percent: float = Field(10.0, ge=1.0, le=100.0)
    window: int = Field(64, ge=1)
    top_k: int = Field(20, ge=1, le=20)
    warmup: int = Field(4, ge=1)
    consensus: float = Field(0.95, gt=0.0, le=1.0)
    round: int = Field(4, ge=1)

    @property
    def name(self) -> str:
        return f"{self.method}-{self.mode}"

    @property
    def needs_traces(self) -> bool:
        return True

    def options(self) -> dict[str, Any]:
        drop = {"warmup", "round", "consensus"} if self.mode == "offline" else set()
        return self.model_dump(exclude=drop)

    def missing(self, pools: Sequence[ProblemPool], traces: dict[str, list[Trace | None]] | None,
                budget: int) -> str | None:
        if self.mode == "online" and self.warmup > budget:
            return f"{self.name}: the warm-up ({self.warmup} traces) exceeds the budget ({budget} samples)"
        if traces is None:
            return f"{self.name}: no token traces to read (a study of pools without their run folder)"
        total = sum(p.n for p in pools)
        have = 0
        for p in pools:
            found = traces.get(p.problem_id) or []
            if len(found) == p.n:
                have += sum(1 for t, tokens in zip(found, p.tokens.tolist())
                            if (t is not None and t[0] == self.top_k) or (t is None and tokens == 0))
        if have < total:
            return (f"{self.name}: {have} of {total} samples have a token trace with top-{self.top_k} confidences; "
                    f"the replay needs every one (sample with --top-logprobs {self.top_k})")
        return None

    def run(self, rp: ReplayPool, order: np.ndarray) -> Outcome:
        pool, conf = rp.pool, rp.lowest(self.window)
        answered = pool.groups.ids >= 0
        if self.mode == "offline":
            tokens = float(pool.tokens[order].sum())
            scored = order[answered[order]]
            if not len(scored):
                return Outcome(len(order), tokens, 0.0)  # no answered trace: the strategy abstains
            kept = scored[conf[scored] >= threshold_from_warmup(conf[scored], self.keep_percent)]
            return Outcome(len(order), tokens, vote_credit(pool, kept, conf[kept]))
        warm = order[:self.warmup]
        threshold = threshold_from_warmup(conf[warm], self.keep_percent)
        finished = list(warm)
        tokens = float(pool.tokens[warm].sum())
        used = len(warm)
        while True:
            rows = np.asarray(finished, dtype=np.int64)
            if weighted_leader(_answers(pool, rows), conf[rows].tolist())[1] >= self.consensus or used >= len(order):
                break
            for i in order[used:used + self.round]:
                trace = rp.confidences(int(i))
                # C >= s: no window falls below s (tts.confidence), so the call is skipped, not its answer
                stop = None if conf[i] >= threshold else first_window_below(trace, self.window, threshold)
                if stop is None or stop >= len(trace):  # stopped on its last token: whole, as every backend
                    finished.append(i)                  # returns it (not aborted)
                    tokens += float(pool.tokens[i])
                else:
                    tokens += stop
            used = min(used + self.round, len(order))
        voters = np.asarray([i for i in finished if answered[i] and conf[i] >= threshold], dtype=np.int64)
        return Outcome(used, tokens, vote_credit(pool, voters, conf[voters]))
