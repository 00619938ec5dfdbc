"""OSCA's objective and search, as pure functions on arrays (docs/allocate.md).

Zhang et al. 2024, "Scaling LLM Inference with Optimized Sample Compute Allocation": given per-problem
success probabilities p[q, c] of sampling configurations c, choose how many samples n[c] each gets so
that the expected coverage mean_q [1 - prod_c (1 - p[q, c]) ** n[c]] is largest under a budget
sum_c cost[c] * n[c] <= B, with n[c] at most cap[c] (the pool a configuration was studied from).

Only maximal allocations are candidates: coverage never drops when a sample is added, so an allocation
that could still afford one more sample of some configuration is never better than one that takes it.
With unit costs these are the compositions of B. The search is exhaustive while there are at most
`limit` of them, else greedy marginal gains followed by hill climbing over single-sample moves (the
neighbourhood OSCA's own hill climbing searches, started from the greedy solution instead of a random one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tts.metrics import pass_at_k

DEFAULT_LIMIT = 200_000       # most allocations evaluated one by one before the search turns greedy
_TOL = 1e-12                  # value differences below this are ties (the first allocation found wins)
_CHUNK = 4096                 # allocations scored per matrix product (bounds memory: problems x chunk floats)
_LOG_ZERO = -1e6              # log(1 - p) for p = 1: exp of any positive multiple is 0, and 0 * it is 0

Method = Literal["exhaustive", "greedy"]
Costs = Sequence[float] | np.ndarray    # per configuration: what one sample costs
Caps = Sequence[int] | np.ndarray       # per configuration: the most samples it may get


@dataclass(frozen=True)
class Allocation:
    counts: tuple[int, ...]   # samples per configuration
    value: float              # expected coverage on the problems it was found on
    method: Method            # how it was found
    evaluated: int            # allocations scored (exhaustive) or objective evaluations (greedy)


def log_failure(p: np.ndarray) -> np.ndarray:
    """log(1 - p), finite everywhere (a sure success is a very large negative number, not -inf)."""
    p = np.asarray(p, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("success probabilities must lie in [0, 1]")
    with np.errstate(divide="ignore"):
        return np.maximum(np.log1p(-p), _LOG_ZERO)


def expected_coverage(p: np.ndarray, counts: Caps) -> float:
    """mean_q [1 - prod_c (1 - p[q, c]) ** counts[c]]: draws with replacement at the estimated rates."""
    return float(coverage_of_many(p, np.asarray([counts]))[0])


def coverage_of_many(p: np.ndarray, allocations: np.ndarray) -> np.ndarray:
    """Expected coverage of each row of `allocations` (shape A x C), in chunks of matrix products."""
    logs = log_failure(p)
    allocations = np.asarray(allocations, dtype=float)
    out = np.empty(len(allocations))
    for start in range(0, len(allocations), _CHUNK):
        chunk = allocations[start:start + _CHUNK]
        out[start:start + len(chunk)] = 1.0 - np.exp(logs @ chunk.T).mean(axis=0)
    return out


def heldout_coverage(correct: np.ndarray, size: np.ndarray, counts: Caps) -> float:
    """mean_q [1 - prod_c C(size - correct, n_c) / C(size, n_c)]: each configuration's n_c samples drawn
    without replacement from its own pool of `size[q, c]` samples, `correct[q, c]` of them right."""
    correct, size = np.asarray(correct), np.asarray(size)
    fail = np.ones(len(correct))
    for c, n in enumerate(counts):
        if n > 0:
            fail *= [1.0 - pass_at_k(int(s), int(k), int(n)) for s, k in zip(size[:, c], correct[:, c])]
    return float(1.0 - fail.mean()) if len(fail) else 0.0


def allocations(costs: Costs, caps: Caps, budget: float) -> Iterator[tuple[int, ...]]:
    """Every maximal allocation: cost within the budget, n[c] <= caps[c], and no sample more affordable.

    Deterministic order: the first configuration's count from high to low, then the next's, and so on.
    """
    costs = [float(c) for c in costs]
    C = len(costs)

    def rest(i: int, left: float, prefix: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if i == C:
            counts = prefix
            if all(counts[c] >= caps[c] or costs[c] > left + 1e-9 for c in range(C)):
                yield counts
            return
        top = min(int(caps[i]), int((left + 1e-9) // costs[i]))
        # the last configuration takes all it can afford: anything less leaves a sample affordable
        for n in (range(top, -1, -1) if i < C - 1 else (top,)):
            yield from rest(i + 1, left - n * costs[i], (*prefix, n))

    yield from rest(0, float(budget), ())


def exhaustive(p: np.ndarray, costs: Costs, caps: Caps, budget: float,
               limit: int = DEFAULT_LIMIT) -> Allocation | None:
    """The best maximal allocation by scoring every one; None when there are more than `limit`."""
    found: list[tuple[int, ...]] = []
    for counts in allocations(costs, caps, budget):
        found.append(counts)
        if len(found) > limit:
            return None
    if not found:
        raise ValueError("no allocation fits the budget")
    values = coverage_of_many(p, np.asarray(found))
    best = int(np.flatnonzero(values >= values.max() - _TOL)[0])
    return Allocation(found[best], float(values[best]), "exhaustive", len(found))


def greedy(p: np.ndarray, costs: Costs, caps: Caps, budget: float) -> Allocation:
    """Greedy marginal gains per unit cost, then hill climbing: take one sample away from a configuration
    and refill greedily, keep the move if coverage rises, until no move does."""
    logs = log_failure(p)
    p = np.asarray(p, dtype=float)
    cost = np.asarray(costs, dtype=float)
    cap = np.asarray(caps, dtype=int)
    evaluations = 0

    def fill(counts: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        counts = counts.copy()
        while True:
            left = budget - float(cost @ counts)
            open_ = (counts < cap) & (cost <= left + 1e-9)
            if not open_.any():
                return counts
            fail = np.exp(logs @ counts)               # per problem: all samples so far fail
            gain = (fail @ p) / len(p) / cost          # adding one sample of c adds mean_q fail_q * p[q, c]
            evaluations += 1
            gain[~open_] = -np.inf
            counts[int(np.argmax(gain))] += 1

    def value(counts: np.ndarray) -> float:
        nonlocal evaluations
        evaluations += 1
        return float(1.0 - np.exp(logs @ counts).mean())

    best = fill(np.zeros(len(cost), dtype=int))
    best_value = value(best)
    improved = True
    while improved:
        improved = False
        for c in np.flatnonzero(best > 0):
            less = best.copy()
            less[c] -= 1
            moved = fill(less)
            moved_value = value(moved)
            if moved_value > best_value + _TOL:
                best, best_value, improved = moved, moved_value, True
                break
    if not best.any():
        raise ValueError("no allocation fits the budget")
    return Allocation(tuple(int(n) for n in best), best_value, "greedy", evaluations)


def best_allocation(p: np.ndarray, costs: Costs, caps: Caps, budget: float,
                    limit: int = DEFAULT_LIMIT) -> Allocation:
    """Exhaustive search while at most `limit` allocations fit, else greedy with hill climbing."""
    return exhaustive(p, costs, caps, budget, limit) or greedy(p, costs, caps, budget)


def best_single(p: np.ndarray, costs: Costs, caps: Caps, budget: float) -> tuple[int, int]:
    """(configuration, samples) of the best single configuration at the budget, on `p` (ties: the first)."""
    counts = [min(int(caps[c]), int((budget + 1e-9) // costs[c])) for c in range(len(costs))]
    values = [expected_coverage(p, [n if j == c else 0 for j in range(len(costs))]) for c, n in enumerate(counts)]
    best = int(np.flatnonzero(np.asarray(values) >= max(values) - _TOL)[0])
    return best, counts[best]
