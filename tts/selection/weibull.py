"""RPC's reasoning pruning: a two-component Weibull mixture fitted to path probabilities (docs/algorithms/rpc.md).

`reasoning_pruning` says which paths RPC drops (pi_1 < pi_2 AND p < mean(p)); `tts.selection.rpc`
sums the probability mass of what is left. The fit is maximum likelihood by L-BFGS-B with an
analytic gradient, run single-threaded (see `_one_blas_thread`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The published start values and bounds of the two-component Weibull mixture fit.
WEIBULL_START = np.array([0.5, 1.0, 1.0, 1.5, 2.0])
WEIBULL_BOUNDS = [(0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None)]
# Below this many paths with a probability the fit is ill-posed: no pruning (rpc.md, "Few paths").
MIN_PATHS_TO_PRUNE = 5
_MAX_LOG_T = 700.0  # exp() of more overflows; only reached far from any sensible optimum


def _joint_log_density(theta: np.ndarray, logp: np.ndarray):
    """log(w_c Weib(p; k_c, lam_c)) for both components c, as a (2, m) array, from log p (stable).

    Also returns log(p/lam), (p/lam)^k and the (2, 1) shape and scale columns for the gradient.
    """
    w1 = theta[0]
    k = theta[[1, 3], None]
    lam = theta[[2, 4], None]
    log_lam = np.log(lam)
    logz = logp - log_lam
    t = np.exp(np.minimum(k * logz, _MAX_LOG_T))
    log_w = np.array([[np.log(w1)], [np.log1p(-w1)]])
    return log_w + np.log(k) - log_lam + (k - 1.0) * logz - t, logz, t, k, lam


def weibull_mixture_nll(theta: np.ndarray, logp: np.ndarray) -> tuple[float, np.ndarray]:
    """-sum log f(p_i) of the mixture and its analytic gradient (one evaluation per L-BFGS-B step).

    d log Weib / dk = 1/k + log z (1 - t), d log Weib / dlam = (k/lam)(t - 1), with z = p/lam, t = z^k;
    each weighted by the component's responsibility r_c.
    """
    joint, logz, t, k, lam = _joint_log_density(theta, logp)
    ll = np.logaddexp(joint[0], joint[1])
    r = np.exp(joint - ll)
    w1 = theta[0]
    d_k = (r * (1.0 / k + logz * (1.0 - t))).sum(axis=1)
    d_lam = (r * (t - 1.0)).sum(axis=1) * (k / lam)[:, 0]
    grad = np.array([r[0].sum() / w1 - r[1].sum() / (1.0 - w1), d_k[0], d_lam[0], d_k[1], d_lam[1]])
    value = -float(ll.sum())
    if not (np.isfinite(value) and np.isfinite(grad).all()):
        return np.inf, np.zeros(5)
    return value, -grad


@dataclass(frozen=True)
class WeibullMixture:
    """f(p) = w1 Weib(p; k1, lam1) + (1 - w1) Weib(p; k2, lam2); component 1 has the larger mean."""

    w1: float
    k1: float
    lam1: float
    k2: float
    lam2: float
    converged: bool = True

    @property
    def params(self) -> np.ndarray:
        return np.array([self.w1, self.k1, self.lam1, self.k2, self.lam2])

    def high_share(self, p: np.ndarray) -> np.ndarray:
        """pi_1(p): the posterior share of the high-probability component, per path.

        Where both densities underflow to 0 the share is 0.5 (neither side is favoured, so the path
        is not pruned; the reference implementation gets NaN there, which also never prunes).
        """
        logp = np.log(np.asarray(p, dtype=float))
        with np.errstate(over="ignore", invalid="ignore"):
            (a, b), *_ = _joint_log_density(self.params, logp)
            share = 1.0 / (1.0 + np.exp(b - a))
        share[np.isneginf(a) & np.isneginf(b)] = 0.5
        return share


def _log_weibull_mean(k: float, lam: float) -> float:
    from scipy.special import gammaln

    return float(np.log(lam) + gammaln(1.0 + 1.0 / k))


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only speed depends on it
        return None
    return ThreadpoolController()


def _one_blas_thread() -> AbstractContextManager:
    """L-BFGS-B calls BLAS on 5x5 matrices; OpenBLAS threads spinning on a busy machine made each
    fit about 100x slower here (0.2 s instead of 2 ms on 2 shared cores), so fits run single-threaded."""
    controller = _blas_controller()
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def fit_weibull_mixture(p: Sequence[float] | np.ndarray) -> WeibullMixture:
    """Maximum-likelihood two-component Weibull mixture of path probabilities (docs/algorithms/rpc.md).

    L-BFGS-B (scipy) from the stated start (0.5, 1, 1, 1.5, 2) within the stated bounds
    (w1 in [0.2, 0.8], shapes and scales >= 0.01), scipy's default tolerances like the reference
    implementation, with the analytic gradient (the reference uses finite differences: same optimum,
    about 3x fewer evaluations). Then relabelled so component 1 has the larger mean lam*Gamma(1+1/k).
    """
    from scipy.optimize import minimize  # here: importing tts.selection stays cheap (scipy only when fitting)

    logp = np.log(np.asarray(p, dtype=float))
    with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore"):
        res = minimize(weibull_mixture_nll, WEIBULL_START, args=(logp,), jac=True, method="L-BFGS-B",
                       bounds=WEIBULL_BOUNDS)
    w1, k1, lam1, k2, lam2 = (float(x) for x in res.x)
    if _log_weibull_mean(k1, lam1) < _log_weibull_mean(k2, lam2):
        w1, k1, lam1, k2, lam2 = 1.0 - w1, k2, lam2, k1, lam1
    return WeibullMixture(w1, k1, lam1, k2, lam2, converged=bool(res.success))


def reasoning_pruning(p: Sequence[float] | np.ndarray,
                      min_paths: int = MIN_PATHS_TO_PRUNE) -> tuple[np.ndarray, WeibullMixture | None]:
    """Which paths RPC prunes: pi_1 < pi_2 AND p < mean(p), both required (rpc.md).

    With fewer than `min_paths` paths nothing is pruned (the fit is ill-posed). When no path lies
    below the mean the AND rule cannot prune anything and the fit is skipped.
    """
    p = np.asarray(p, dtype=float)
    below = p < p.mean() if len(p) else np.zeros(0, dtype=bool)
    if len(p) < min_paths or not below.any():
        return np.zeros(len(p), dtype=bool), None
    mixture = fit_weibull_mixture(p)
    share = mixture.high_share(p)
    return (share < 1.0 - share) & below, mixture

