"""Statistics of a study: bootstrap intervals, the power-law fit of coverage, the fLaws verifier ceiling,
and each scorer's quality (AUROC, false-positive rate, fLaws ceiling)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from tts.study.pool import AGGREGATIONS, ProblemPool, scorer_names
from tts.study.schema import Point, PowerLawFit, ScorerQuality, VerifierStudy


def bootstrap_interval(values: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile intervals of the mean over problems; values is (problems, ks), picks (resamples, problems)."""
    if len(picks) == 0 or len(values) < 2:
        return np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    means = values[picks].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    return lo, hi


def fit_power_law(ks: Sequence[int], coverage: Sequence[float]) -> PowerLawFit | None:
    """Exponentiated power law log C(k) = a k^b; None with fewer than two usable points.

    docs/algorithms/repeated-sampling.md.
    """
    k = np.asarray(ks, dtype=float)
    c = np.asarray(coverage, dtype=float)
    use = (c > 0) & (c < 1)
    if use.sum() < 2:
        return None
    k, y = k[use], np.log(c[use])
    slope, intercept = np.polyfit(np.log(k), np.log(-y), 1)  # log(-log C) = log(-a) + b log k
    a, b, method = -float(np.exp(intercept)), float(slope), "log-log least squares"
    start = (float(y[0]) if k[0] == 1 else a, -0.5)
    try:
        with warnings.catch_warnings():  # two points: no covariance estimate, which is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            (a_fit, b_fit), _ = curve_fit(lambda x, a_, b_: a_ * np.power(x, b_), k, y, p0=start,
                                          bounds=([-np.inf, -np.inf], [0.0, 0.0]), maxfev=10000)
        a, b, method = float(a_fit), float(b_fit), "non-linear least squares on log C"
    except (RuntimeError, ValueError):
        pass
    residual = y - a * np.power(k, b)
    total = ((y - y.mean()) ** 2).sum()
    r2 = float(1 - (residual ** 2).sum() / total) if total > 0 else None
    return PowerLawFit(a=a, b=b, r2=r2, ks=[int(x) for x in k], method=method)


def flaws_accuracy(p: float, f: float, k: np.ndarray | int) -> np.ndarray:
    """fLaws Acc(k) = p/(p+q) [1 - (1-p-q)^k], q = (1-p) f (docs/algorithms/repeated-sampling.md)."""
    q = (1 - p) * f
    if p + q <= 0:
        return np.zeros_like(np.asarray(k, dtype=float))
    return p / (p + q) * (1 - np.power(1 - p - q, np.asarray(k, dtype=float)))


def flaws_ceiling(p: float | None, f: float | None) -> float | None:
    """The fLaws ceiling p / (p + (1 - p) f) of resampling until accepted; None when undefined."""
    if p is None or f is None or p + (1 - p) * f <= 0:
        return None
    return p / (p + (1 - p) * f)


def auroc(correct: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of `score` for correct (positive) vs incorrect samples; None unless both are present."""
    if correct.all() or not correct.any():
        return None
    from sklearn.metrics import roc_auc_score  # imported when needed: it takes a while to load

    return float(roc_auc_score(correct, score))


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _quality(name: str, aggregation: str | None, level: str, recorded: bool, correct: np.ndarray,
             score: np.ndarray, flags: np.ndarray) -> ScorerQuality:
    scored = np.isfinite(score)
    c, s = correct[scored], score[scored]
    row = ScorerQuality(scorer=name, aggregation=aggregation, level=level, recorded=recorded,
                        samples=int(scored.sum()), correct=int(c.sum()), mean_score_correct=_mean(s[c]),
                        mean_score_incorrect=_mean(s[~c]), auroc=auroc(c, s))
    flagged = scored & np.isfinite(flags) if recorded else np.zeros(len(score), dtype=bool)
    if flagged.any():
        passed, fc = flags[flagged] == 1.0, correct[flagged]
        p = float(fc.mean())
        row.flagged = int(flagged.sum())
        row.false_positive_rate = _mean(passed[~fc])
        row.true_positive_rate = _mean(passed[fc])
        row.ceiling = flaws_ceiling(p, row.false_positive_rate)
    return row


def _column(pools: Sequence[ProblemPool], arrays: list[np.ndarray | None]) -> np.ndarray:
    """Per-pool arrays end to end, NaN for a pool without one."""
    return np.concatenate([np.full(pool.n, np.nan) if a is None else a for pool, a in zip(pools, arrays)])


def scorer_quality(pools: Sequence[ProblemPool]) -> list[ScorerQuality]:
    """One row per scorer recorded in the pools (its recorded score and pass flags) and, for a process
    scorer, one per aggregation of its step scores (`AGGREGATIONS`). An aggregation row is `recorded`
    (the scorer's pass flags apply to it) when it equals the recorded score on every sample."""
    correct = np.concatenate([pool.correct for pool in pools])
    rows = []
    for name in scorer_names(pools):
        score = _column(pools, [pool.scores.get(name) for pool in pools])
        flags = _column(pools, [pool.flags.get(name) for pool in pools])
        process = any(name in pool.steps for pool in pools)
        level = "process" if process else "outcome"
        rows.append(_quality(name, None, level, True, correct, score, flags))
        if not process:
            continue
        for agg in AGGREGATIONS:
            agg_score = _column(pools, [pool.steps[name][agg] if name in pool.steps else None for pool in pools])
            both = np.isfinite(agg_score) & np.isfinite(score)
            same = bool(both.any()) and bool(np.allclose(agg_score[both], score[both], rtol=0, atol=1e-9))
            rows.append(_quality(name, agg, level, same, correct, agg_score, flags))
    return rows


def verifier_study(pools: list[ProblemPool], verifiers: list[str], ks: list[int],
                   tokens: float) -> VerifierStudy | None:
    """The selection verdicts against the oracle: all flags together (fLaws, first-passing), then per scorer.

    None when no sample has a selection verdict.
    """
    quality = scorer_quality(pools)
    flagged = [pool for pool in pools if pool.passed is not None]
    if not flagged and not quality:
        return None
    if not flagged:
        return VerifierStudy(verifiers=verifiers, samples=0, sample_accuracy=None, false_positive_rate=None,
                             true_positive_rate=None, ceiling=None, predicted=[], scorers=quality)
    passed = np.concatenate([pool.passed for pool in flagged if pool.passed is not None])
    correct = np.concatenate([pool.correct for pool in flagged])
    p = float(correct.mean())
    f = _mean(passed[~correct])
    tpr = _mean(passed[correct])
    predicted = [] if f is None else [
        Point(k=k, tokens=k * tokens, value=float(flaws_accuracy(p, f, k))) for k in ks]
    return VerifierStudy(verifiers=verifiers, samples=len(passed), sample_accuracy=p, false_positive_rate=f,
                         true_positive_rate=tpr, ceiling=flaws_ceiling(p, f), predicted=predicted, scorers=quality)
