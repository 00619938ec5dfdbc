"""Stopping rules of the adaptive-compute strategies, as pure functions (docs/algorithms/adaptive.md).

The strategies that sample in rounds (`adaptive-consistency`, `early-stop`, `deepconf`) and `tts scale`'s
replay of them on a stored pool call the same functions, so a replayed decision is the decision the
strategy would have made on those samples in that order.

* Adaptive-Consistency (Aggarwal et al. 2023, "Let's Sample Step by Step"): stop once the posterior
  probability that the leading answer is the majority reaches a threshold (0.95). `beta`: with the top
  two counts a >= b, P(p > 1/2) for p ~ Beta(a + 1, b + 1) (the reference integrates x^a (1-x)^b over
  [1/2, 1]); `dirichlet`: P(the leader has the largest share) under Dirichlet(counts + 1) over the five
  most common answers, by Monte Carlo with a fixed seed (the reference integrates by unseeded Monte
  Carlo over nested limits; fewer than three distinct answers fall back to `beta`, as there).
* Early stopping on confidence (Self-Calibration, Huang et al. 2025): stop at the first sample whose
  confidence reaches tau.
* DeepConf's consensus (Fu et al. 2025): stop once the confidence-weighted vote share of the leading
  answer reaches tau (0.95).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from scipy import stats

Prior = Literal["beta", "dirichlet"]
DIRICHLET_TOP_K = 5  # the reference's top_k_elements
DIRICHLET_DRAWS = 50_000  # Monte Carlo draws (the reference's N for up to 4 free dimensions)


def beta_majority_probability(top: int, second: int) -> float:
    """P(p > 1/2) for p ~ Beta(top + 1, second + 1): the leader beats the runner-up in a two-way race."""
    return float(stats.beta.sf(0.5, top + 1, second + 1))


@functools.lru_cache(maxsize=4096)
def _dirichlet(counts: tuple[int, ...], draws: int) -> float:
    rng = np.random.default_rng(0)  # fixed: the same counts always give the same answer
    shares = rng.dirichlet(np.asarray(counts, dtype=np.float64) + 1.0, size=draws)
    return float(np.mean(shares.argmax(axis=1) == 0))


def dirichlet_majority_probability(counts: Sequence[int], top_k: int = DIRICHLET_TOP_K,
                                   draws: int = DIRICHLET_DRAWS) -> float:
    """P(the most common answer has the largest share) under Dirichlet(counts + 1) over the top_k answers."""
    ranked = tuple(sorted((int(c) for c in counts if c > 0), reverse=True)[:top_k])
    if len(ranked) < 3:
        return beta_majority_probability(ranked[0] if ranked else 0, ranked[1] if len(ranked) > 1 else 0)
    return _dirichlet(ranked, draws)


def majority_probability(counts: Sequence[int], prior: Prior = "beta") -> float:
    """How sure the votes so far make us that the leading answer is the majority (0 with no vote)."""
    ranked = sorted((int(c) for c in counts if c > 0), reverse=True)
    if not ranked:
        return 0.0
    if prior == "dirichlet":
        return dirichlet_majority_probability(ranked)
    return beta_majority_probability(ranked[0], ranked[1] if len(ranked) > 1 else 0)


def answer_counts(answers: Sequence[Hashable | None]) -> list[int]:
    """Votes per distinct answer, most common first (None: no answer, never a vote)."""
    return [c for _, c in Counter(a for a in answers if a is not None).most_common()]


def weighted_leader(answers: Sequence[Hashable | None], weights: Sequence[float]) -> tuple[Hashable | None, float]:
    """The answer with the most weight and its share of all the weight (None, 0.0 with no weighted vote).

    Ties go to the answer seen first, as a stable vote does.
    """
    totals: dict[Hashable, float] = {}
    for a, w in zip(answers, weights):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + float(w)
    total = sum(totals.values())
    if not totals or total <= 0:
        return None, 0.0
    leader = max(totals, key=lambda a: totals[a])  # max keeps the first of equal keys
    return leader, totals[leader] / total


def first_confident(confidences: Sequence[float], tau: float) -> int | None:
    """Index of the first sample whose confidence reaches tau, or None."""
    for i, c in enumerate(confidences):
        if c >= tau:
            return i
    return None
