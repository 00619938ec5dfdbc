"""The k-subsets of one problem's pool that a study evaluates every selector on."""

from __future__ import annotations

import itertools
import math

import numpy as np


class Subsets:
    """The k-subsets a problem is evaluated on: all of them when few enough, else seeded random draws.

    Random draws are prefixes of one set of random permutations, so subsets are nested across k and
    shared by every selector.
    """

    def __init__(self, n: int, draws: int, rng: np.random.Generator):
        self.n = n
        self.draws = draws
        self.perms = rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1)

    def take(self, k: int) -> np.ndarray:
        """(rows, k) sample indices: all C(n, k) subsets when that is at most `draws` (exact), else `draws` draws."""
        if k >= self.n:
            return np.arange(self.n)[None, :]
        if math.comb(self.n, k) <= self.draws:
            return np.array(list(itertools.combinations(range(self.n), k)), dtype=np.int64)
        return self.perms[:, :k]

    def is_exact(self, k: int) -> bool:
        return k >= self.n or math.comb(self.n, k) <= self.draws

