"""Statistics of a study: bootstrap intervals, the power-law fit of coverage, the fLaws verifier ceiling."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from tts.study.pool import ProblemPool
from tts.study.schema import Point, PowerLawFit, VerifierStudy


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


def verifier_study(pools: list[ProblemPool], verifiers: list[str], ks: list[int],
                   tokens: float) -> VerifierStudy | None:
    flagged = [pool for pool in pools if pool.passed is not None]
    if not flagged:
        return None
    passed = np.concatenate([pool.passed for pool in flagged])
    correct = np.concatenate([pool.correct for pool in flagged])
    p = float(correct.mean())
    f = float(passed[~correct].mean()) if (~correct).any() else None
    tpr = float(passed[correct].mean()) if correct.any() else None
    ceiling = p / (p + (1 - p) * f) if f is not None and p + (1 - p) * f > 0 else None
    predicted = [] if f is None else [
        Point(k=k, tokens=k * tokens, value=float(flaws_accuracy(p, f, k))) for k in ks]
    return VerifierStudy(verifiers=verifiers, samples=len(passed), sample_accuracy=p, false_positive_rate=f,
                         true_positive_rate=tpr, ceiling=ceiling, predicted=predicted)

