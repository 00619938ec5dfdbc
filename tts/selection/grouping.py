"""Grouping answers by equivalence, once per pool, and voting over the groups (docs/algorithms/self-consistency.md).

Exact strings are bucketed first so the expensive `equivalent` check runs only between the
representatives of distinct strings. `Groups` keeps the result as one array of group ids, so a study
can regroup thousands of subsets of the same pool without another equivalence call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def group_answers(answers: Sequence[str | None], equivalent: Callable[[str, str], bool]) -> list[list[int]]:
    """Indices of equivalent answers, groups in order of first occurrence; None answers are left out."""
    groups: list[list[int]] = []
    representatives: list[str] = []
    by_text: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = answer.strip()
        if key in by_text:
            groups[by_text[key]].append(i)
            continue
        for g, rep in enumerate(representatives):  # noqa: B007 - g is the match (for/else)
            if equivalent(key, rep):
                break
        else:
            g = len(groups)
            groups.append([])
            representatives.append(key)
        by_text[key] = g
        groups[g].append(i)
    return groups


def majority_vote(groups: list[list[int]], weights: Sequence[float] | None = None) -> tuple[int | None, list[int]]:
    """Index of the winning group and the indices of every group tied with it.

    Score = group size (or the sum of `weights` over its members). Tie-break: the tied group whose
    first member came earliest in sample order wins (search-and-learn's rule: deterministic and
    reproducible); callers that report expected accuracy can credit 1/len(tied) instead.
    """
    if not groups:
        return None, []

    def score(g: list[int]) -> float:
        return float(len(g)) if weights is None else float(sum(weights[i] for i in g))

    scores = [score(g) for g in groups]
    best = max(scores)
    tied = [g for g, s in enumerate(scores) if s == best]
    winner = min(tied, key=lambda g: groups[g][0])
    return winner, tied


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
