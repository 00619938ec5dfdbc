"""φ-Decoding's selection math, pure functions of numbers and a seeded RNG: successive sampling without
replacement, in-width pruning, the step selection (advantage + cluster alignment) and the final pick
(docs/algorithms/phi-decoding.md). The search itself is `tts.strategies.phi_decoding`."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax

from tts.clustering import cluster_shares


def sample_without_replacement(log_weights: Sequence[float], k: int, rng: random.Random) -> list[int]:
    """k distinct indices drawn one after another, each with probability proportional to its weight among
    those left (Gumbel-top-k). Weights that underflow to zero (log -inf) come last, so k distinct indices
    come back whenever k <= len(log_weights)."""
    if k > len(log_weights):
        raise ValueError(f"cannot draw {k} distinct items from {len(log_weights)}")
    keys = []
    for lw in log_weights:
        u = rng.random()
        while u == 0.0:
            u = rng.random()
        keys.append(lw - math.log(-math.log(u)))
    return sorted(range(len(keys)), key=lambda i: keys[i], reverse=True)[:k]


@dataclass
class WidthPruning:
    kept: list[int]
    added_back: list[int]
    mu: float
    sigma: float
    threshold: float


def width_prune(mlogps: Sequence[float], sigma_rate: float, tau: float, width: int, rng: random.Random) -> WidthPruning:
    """Keep candidates with step mlogp > mu - sigma_rate*sigma; top up to `width` from the dropped ones,
    drawn without replacement with softmax(mlogp/tau)."""
    x = np.asarray(mlogps, dtype=float)
    mu, sigma = float(x.mean()), float(x.std())
    threshold = mu - sigma_rate * sigma
    kept = [i for i in range(len(x)) if x[i] > threshold]
    dropped = [i for i in range(len(x)) if x[i] <= threshold]
    added: list[int] = []
    if len(kept) < width:
        picks = sample_without_replacement(log_softmax(x[dropped] / tau), width - len(kept), rng)
        added = sorted(dropped[p] for p in picks)
    return WidthPruning(sorted(kept + added), added, mu, sigma, threshold)


@dataclass
class Selection:
    chosen: list[int]  # indices into the candidates the selection saw
    mode: str  # "joint" (clustered pool), "advantage: small pool", "advantage: clustering failed"
    probabilities: list[float]  # first-draw probability of each candidate (0 outside the pool)
    alignment: list[float | None]  # cluster share of each pool member's path, None outside the pool
    cluster_shares: list[float] = field(default_factory=list)
    early_stop: bool = False


def choose_next(
    advantages: Sequence[float],
    pool: Sequence[int],
    labels: Sequence[int] | None,
    width: int,
    tau: float,
    threshold: float,
    rng: random.Random,
) -> Selection:
    """Step 4 of the procedure: `width` candidates from the joint distribution over the clustered pool,
    or from softmax(A/tau) over all candidates when the pool is smaller than the width or clustering failed."""
    a = np.asarray(advantages, dtype=float)
    if len(pool) < width or labels is None:
        log_p = log_softmax(a / tau)
        mode = "advantage: small pool" if len(pool) < width else "advantage: clustering failed"
        chosen = sample_without_replacement(log_p, width, rng)
        return Selection(chosen, mode, np.exp(log_p).tolist(), [None] * len(a))
    shares = cluster_shares(labels)
    ratio = shares[np.asarray(labels, dtype=int)]
    p = (np.exp(log_softmax(ratio)) + np.exp(log_softmax(a[list(pool)] / tau))) / 2
    picks = sample_without_replacement(np.log(p), width, rng)
    probabilities = [0.0] * len(a)
    alignment: list[float | None] = [None] * len(a)
    for j, i in enumerate(pool):
        probabilities[i] = float(p[j])
        alignment[i] = float(ratio[j])
    return Selection(
        chosen=[pool[j] for j in picks],
        mode="joint",
        probabilities=probabilities,
        alignment=alignment,
        cluster_shares=shares.tolist(),
        early_stop=bool(shares.max() > threshold),
    )


@dataclass
class FinalSelection:
    chosen: int
    mode: str  # "larger cluster", "negative advantage: empty pool", "advantage: clustering failed"
    probabilities: list[float]  # probability of each beam
    members: list[int]  # beams the choice was drawn from


def choose_final(
    advantages: Sequence[float], pool: Sequence[int], labels: Sequence[int] | None, tau: float, rng: random.Random
) -> FinalSelection:
    """The final pick: softmax(A/tau) within the larger k-means cluster of the pool (both when tied); an
    empty pool draws from softmax(-A/tau) over all beams, a failed clustering from softmax(A/tau) over all."""
    a = np.asarray(advantages, dtype=float)
    if not pool:
        members, log_p, mode = list(range(len(a))), log_softmax(-a / tau), "negative advantage: empty pool"
    elif labels is None:
        members, log_p, mode = list(range(len(a))), log_softmax(a / tau), "advantage: clustering failed"
    else:
        sizes = np.bincount(np.asarray(labels, dtype=int))
        largest = set(np.flatnonzero(sizes == sizes.max()).tolist())
        members = [b for b, label in zip(pool, labels) if int(label) in largest]
        log_p, mode = log_softmax(a[members] / tau), "larger cluster"
    (pick,) = sample_without_replacement(log_p, 1, rng)
    probabilities = [0.0] * len(a)
    for b, lp in zip(members, log_p):
        probabilities[b] = float(np.exp(lp))
    return FinalSelection(members[pick], mode, probabilities, members)
