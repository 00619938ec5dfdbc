"""Grouping answers by equivalence and voting over the groups (ALGORITHMS.md section 2).

Shared by strategies and, later, studies: exact strings are bucketed first so the expensive
`equivalent` check runs only between the representatives of distinct strings.
"""

from __future__ import annotations

from typing import Callable, Sequence


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
        for g, rep in enumerate(representatives):
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
