"""Vectorised selector credits over many subsets at once (rows of an index array), ties credited 1/#tied.

The built-in study selectors use these instead of running the scalar selector of `tts.selection`
once per subset; tests/test_scaling.py checks that both agree on every subset. RPC needs a Weibull
fit per subset, so `rpc_settle` first credits every subset whose winner cannot depend on the fit.
"""

from __future__ import annotations

import numpy as np

from tts import selection
from tts.study.pool import ProblemPool


def _group_sums(ids: np.ndarray, weights: np.ndarray | None, mask: np.ndarray, n_groups: int) -> np.ndarray:
    """(rows, groups) sums of `weights` (or counts) over the masked entries of each row."""
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    keys = (rows * n_groups + ids)[mask]
    w = None if weights is None else weights[mask]
    return np.bincount(keys, weights=w, minlength=ids.shape[0] * n_groups).reshape(ids.shape[0], n_groups)


def _tie_credit(scores: np.ndarray, present: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row: mean `value` over the present options whose score ties the best (0 if none present)."""
    s = np.where(present, scores, -np.inf)
    best = s.max(axis=1, keepdims=True)
    tied = present & (s >= best - selection.TIE_RTOL * np.abs(best))
    n_tied = tied.sum(axis=1)
    credit = (tied * value).sum(axis=1) / np.maximum(n_tied, 1)
    return np.where(n_tied > 0, credit, 0.0)


def _group_vote_credit(pool: ProblemPool, idx: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    G = pool.groups.count
    if G == 0:
        return np.zeros(len(idx))
    ids = pool.groups.ids[idx]
    valid = ids >= 0
    counts = _group_sums(ids, None, valid, G)
    scores = counts if weights is None else _group_sums(ids, weights[idx], valid, G)
    return _tie_credit(scores, counts > 0, pool.group_correct[None, :])


def _argmax_credit(key: np.ndarray, correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Credit of picking the sample with the largest key (NaN never picked; all NaN: abstain)."""
    keys = np.nan_to_num(key[idx], nan=-np.inf)
    valid = np.isfinite(keys) if np.issubdtype(keys.dtype, np.floating) else np.ones(keys.shape, dtype=bool)
    return _tie_credit(keys, valid, correct[idx])


def _distinct_texts(text_id: np.ndarray) -> np.ndarray:
    """Per row, True at the first occurrence of each completion text (RPC counts a text once)."""
    order = np.argsort(text_id, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(text_id, order, axis=1)
    first = np.ones_like(sorted_ids, dtype=bool)
    first[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    out = np.empty_like(first)
    np.put_along_axis(out, order, first, axis=1)
    return out


def rpc_row_credit(pool: ProblemPool, row: np.ndarray, min_paths: int) -> tuple[float, bool]:
    """RPC on one subset through the selector itself: (credit, whether a Weibull fit ran)."""
    pick = selection.rpc(pool.groups.subset(row), pool.mean_logprob[row], texts=pool.text_id[row].tolist(),
                         min_paths=min_paths)
    if pick.chosen is None:
        return 0.0, pick.info.get("fit") is not None
    gids = pool.groups.ids[row[np.asarray(pick.tied)]]
    return float(pool.group_correct[gids].mean()), pick.info.get("fit") is not None


def rpc_settle(pool: ProblemPool, idx: np.ndarray, min_paths: int) -> tuple[np.ndarray, np.ndarray]:
    """RPC credit of every subset (rows of idx) that can be settled without a Weibull fit.

    A group's mass after pruning lies between the mass of its paths that can never be pruned (not
    below the mean, or too few paths to prune at all) and the mass of all its paths. Every group
    whose upper bound reaches the largest lower bound could win; when all of those are equally
    correct, the credit is known whatever the fit decides. Bounds are widened by a relative 1e-9, so
    float summation order can only leave more rows unsettled, never settle one wrongly.
    Returns (credits, settled); credits of unsettled rows are 0 and must come from `rpc_row_credit`.
    """
    G = pool.groups.count
    if G == 0:
        return np.zeros(len(idx)), np.ones(len(idx), dtype=bool)
    ids, p, has_p = pool.groups.ids[idx], pool.p[idx], pool.has_p[idx]
    n_fit = has_p.sum(axis=1)
    mean_p = (p * has_p).sum(axis=1) / np.maximum(n_fit, 1)
    maybe_pruned = has_p & (p <= mean_p[:, None] * (1 + 1e-9)) & (n_fit >= min_paths)[:, None]
    live = _distinct_texts(pool.text_id[idx]) & has_p & (ids >= 0)
    most = _group_sums(ids, p, live, G) * (1 + 1e-9)
    least = _group_sums(ids, p, live & ~maybe_pruned, G)
    present = _group_sums(ids, None, ids >= 0, G) > 0
    contenders = present & (most >= least.max(axis=1, keepdims=True))
    gc = np.broadcast_to(pool.group_correct, contenders.shape)
    hi = np.where(contenders, gc, -np.inf).max(axis=1)
    lo = np.where(contenders, gc, np.inf).min(axis=1)
    answered = present.any(axis=1)
    settled = (hi == lo) | ~answered
    return np.where(settled & answered, hi, 0.0), settled


def rpc_credits(pool: ProblemPool, idx: np.ndarray, min_paths: int = selection.MIN_PATHS_TO_PRUNE) -> np.ndarray:
    """Exact RPC credit of every subset: settled ones without a fit, the rest through `tts.selection.rpc`."""
    credits, settled = rpc_settle(pool, idx, min_paths)
    for r in np.flatnonzero(~settled):
        credits[r] = rpc_row_credit(pool, idx[r], min_paths)[0]
    return credits

