"""Posterior sampling for AB-MCTS-M's hierarchical model (docs/algorithms/ab-mcts.md).

The model, for groups j = 1..J (children of a node, or actions) with scores y_ji:

    mu ~ Normal(mu0, 0.2)     sigma_alpha ~ HalfNormal(0.2)     sigma_y ~ HalfNormal(0.3)
    alpha_j ~ Normal(mu, sigma_alpha)     y_ji ~ Normal(alpha_j, sigma_y)
    predictive of group j: Normal(alpha_j, sigma_y); of a new group (GEN): Normal(mu + sigma_alpha z, sigma_y)

(the reference writes alpha_j = mu + sigma_alpha z_j, the same distribution). Two samplers:

- `GridSampler` (default, numpy only): given the two scales the model is linear-Gaussian, so mu and
  alpha are integrated out in closed form; the posterior of (log sigma_alpha, log sigma_y) is computed on
  a grid (a coarse pass over the whole prior range, then a fine 64 x 64 pass over where the mass is), a
  cell is drawn and jittered, and mu, alpha are drawn exactly from their Gaussian conditionals. Draws
  are independent (no Markov chain to mix), and cost about a millisecond per fit.
- `PyMCSampler` (extra `pymc`): NUTS with 4 chains and PyMC's default draws/tuning on the reference's
  non-centred model, as treequest does (its numpyro backend aside).

Thompson sampling uses one predictive draw per option, each from its own posterior draw (the reference
picks an independent uniform index into the pooled chains for each option).

One caveat applies to both samplers: when every group's scores are all equal (identical refinements)
and some group has two or more of them, the posterior of sigma_y is improper (its density grows as
sigma_y -> 0). NUTS then drifts towards 0; the grid stops at 1e-4 * 0.3. Either way the predictive of
such a group collapses onto its score, which is what the search needs.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tts.errors import UserError

PYMC_HINT = "pip install 'tts-toolkit[pymc]'"


@dataclass(frozen=True)
class HierarchicalPrior:
    mu_mean: float = 0.5
    mu_sd: float = 0.2
    sigma_alpha_scale: float = 0.2
    sigma_y_scale: float = 0.3


@dataclass
class PosteriorDraws:
    """Joint posterior draws: arrays of length S, and alpha of shape (S, J)."""

    mu: np.ndarray
    sigma_alpha: np.ndarray
    sigma_y: np.ndarray
    alpha: np.ndarray

    def __len__(self) -> int:
        return len(self.mu)


class PosteriorSampler(ABC):
    name: ClassVar[str]
    # True: every draw is independent, so option k may use draw k; False: pick rows at random (MCMC pool)
    independent: ClassVar[bool]
    slow: ClassVar[bool] = False  # seconds per fit

    @abstractmethod
    def draws(self, groups: Sequence[np.ndarray], prior: HierarchicalPrior, rng: np.random.Generator,
              size: int) -> PosteriorDraws:
        """Posterior draws given at least one observation (independent samplers return exactly `size`)."""


def predictive(sampler: PosteriorSampler, groups: Sequence[Sequence[float]], n_new: int,
               prior: HierarchicalPrior, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One posterior-predictive draw per observed group and `n_new` draws for unseen groups (GEN).

    With no observations at all, the draws come from the prior predictive.
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    k = len(arrays) + n_new
    if not arrays:
        mu = rng.normal(prior.mu_mean, prior.mu_sd, n_new)
        sa = np.abs(rng.normal(0.0, prior.sigma_alpha_scale, n_new))
        sy = np.abs(rng.normal(0.0, prior.sigma_y_scale, n_new))
        return np.empty(0), mu + sa * rng.standard_normal(n_new) + sy * rng.standard_normal(n_new)
    post = sampler.draws(arrays, prior, rng, size=k)
    rows = np.arange(k) if sampler.independent else rng.integers(0, len(post), size=k)
    j = np.arange(len(groups))
    noise = rng.standard_normal(k)
    observed = post.alpha[rows[: len(groups)], j] + post.sigma_y[rows[: len(groups)]] * noise[: len(groups)]
    new_rows = rows[len(groups):]
    alpha_new = post.mu[new_rows] + post.sigma_alpha[new_rows] * rng.standard_normal(n_new)
    new = alpha_new + post.sigma_y[new_rows] * noise[len(groups):]
    return observed, new


# ------------------------------------------------------------------------------------------------
# Grid sampler: scales on a grid, everything else exact
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _GroupStats:
    n: np.ndarray
    mean: np.ndarray
    within_ss: float

    @classmethod
    def of(cls, groups: Sequence[np.ndarray]) -> _GroupStats:
        n = np.array([len(g) for g in groups], dtype=float)
        if (n == 0).any():
            raise ValueError("every group needs at least one observation")
        mean = np.array([g.mean() for g in groups])
        ss = float(sum(((g - g.mean()) ** 2).sum() for g in groups))
        return cls(n=n, mean=mean, within_ss=ss)


class GridSampler(PosteriorSampler):
    name = "grid"
    independent = True

    def __init__(self, points: int = 64, lower: float = 1e-4, upper: float = 6.0):
        self.points = points
        self.lower = lower  # grid range of each scale, in units of its prior scale
        self.upper = upper

    def log_posterior(self, log_sa: np.ndarray, log_sy: np.ndarray, stats: _GroupStats,
                      prior: HierarchicalPrior) -> np.ndarray:
        """log p(log sigma_alpha, log sigma_y | y) up to a constant, on the outer grid of the two axes."""
        sa2 = np.exp(2 * log_sa)[:, None, None]
        sy2 = np.exp(2 * log_sy)[None, :, None]
        n, ybar = stats.n, stats.mean
        v = sa2 + sy2 / n  # variance of a group mean given mu
        s02 = prior.mu_sd ** 2
        precision = 1.0 / s02 + (1.0 / v).sum(-1)
        m = (prior.mu_mean / s02 + (ybar / v).sum(-1)) / precision
        quad = ((ybar - m[..., None]) ** 2 / v).sum(-1) + (prior.mu_mean - m) ** 2 / s02
        between = -0.5 * np.log(v).sum(-1) - 0.5 * np.log(precision * s02) - 0.5 * quad
        sy2 = sy2[..., 0]
        within = -0.5 * (n.sum() - len(n)) * np.log(sy2) - stats.within_ss / (2 * sy2)
        sa2 = sa2[..., 0]
        log_prior = (-sa2 / (2 * prior.sigma_alpha_scale ** 2) + 0.5 * np.log(sa2)  # half-normal x Jacobian
                     - sy2 / (2 * prior.sigma_y_scale ** 2) + 0.5 * np.log(sy2))
        return between + within + log_prior

    def _axis(self, lo: float, hi: float) -> tuple[np.ndarray, float]:
        width = (hi - lo) / self.points
        return lo + width * (np.arange(self.points) + 0.5), width

    def grid(self, stats: _GroupStats,
             prior: HierarchicalPrior) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        """Cell centres of both axes, normalised cell probabilities and the two cell widths (fine pass)."""
        bounds = [(math.log(s * self.lower), math.log(s * self.upper))
                  for s in (prior.sigma_alpha_scale, prior.sigma_y_scale)]
        (a, wa), (y, wy) = self._axis(*bounds[0]), self._axis(*bounds[1])
        logp = self.log_posterior(a, y, stats, prior)
        ia, iy = np.nonzero(logp > logp.max() - 25.0)  # everything else holds < 1e-7 of the mass
        box_a = (a[max(ia.min() - 1, 0)] - wa / 2, a[min(ia.max() + 1, self.points - 1)] + wa / 2)
        box_y = (y[max(iy.min() - 1, 0)] - wy / 2, y[min(iy.max() + 1, self.points - 1)] + wy / 2)
        (a, wa), (y, wy) = self._axis(*box_a), self._axis(*box_y)
        logp = self.log_posterior(a, y, stats, prior)
        p = np.exp(logp - logp.max())
        return a, y, p / p.sum(), wa, wy

    def draws(self, groups: Sequence[np.ndarray], prior: HierarchicalPrior, rng: np.random.Generator,
              size: int) -> PosteriorDraws:
        stats = _GroupStats.of(groups)
        a, y, p, wa, wy = self.grid(stats, prior)
        cells = rng.choice(p.size, size=size, p=p.ravel())
        ia, iy = np.unravel_index(cells, p.shape)
        sa = np.exp(a[ia] + wa * (rng.random(size) - 0.5))
        sy = np.exp(y[iy] + wy * (rng.random(size) - 0.5))
        # mu | scales, y  (alpha integrated out), then alpha_j | mu, scales, y
        v = sa[:, None] ** 2 + sy[:, None] ** 2 / stats.n
        s02 = prior.mu_sd ** 2
        precision = 1.0 / s02 + (1.0 / v).sum(-1)
        mean = (prior.mu_mean / s02 + (stats.mean / v).sum(-1)) / precision
        mu = mean + rng.standard_normal(size) / np.sqrt(precision)
        prec_j = 1.0 / sa[:, None] ** 2 + stats.n / sy[:, None] ** 2
        mean_j = (mu[:, None] / sa[:, None] ** 2 + stats.n * stats.mean / sy[:, None] ** 2) / prec_j
        alpha = mean_j + rng.standard_normal((size, len(stats.n))) / np.sqrt(prec_j)
        return PosteriorDraws(mu=mu, sigma_alpha=sa, sigma_y=sy, alpha=alpha)


# ------------------------------------------------------------------------------------------------
# PyMC sampler: the reference's NUTS fit (optional extra)
# ------------------------------------------------------------------------------------------------

def import_pymc():
    try:
        import pymc
    except ImportError:
        raise UserError(f"AB-MCTS-M with sampler 'pymc' needs PyMC: {PYMC_HINT} "
                        "(or use the default sampler 'grid', which needs nothing extra)") from None
    return pymc


class PyMCSampler(PosteriorSampler):
    name = "pymc"
    independent = False
    slow = True

    def __init__(self, draws: int = 1000, tune: int = 1000, chains: int = 4, cores: int = 1):
        import_pymc()
        self.n_draws, self.tune, self.chains, self.cores = draws, tune, chains, cores

    def draws(self, groups: Sequence[np.ndarray], prior: HierarchicalPrior, rng: np.random.Generator,
              size: int) -> PosteriorDraws:
        pm = import_pymc()
        logging.getLogger("pymc").setLevel(logging.ERROR)
        y = np.concatenate(groups)
        index = np.concatenate([np.full(len(g), j) for j, g in enumerate(groups)])
        with pm.Model(coords={"group": list(range(len(groups)))}):
            mu = pm.Normal("mu_alpha", mu=prior.mu_mean, sigma=prior.mu_sd)
            sigma_alpha = pm.HalfNormal("sigma_alpha", sigma=prior.sigma_alpha_scale)
            sigma_y = pm.HalfNormal("sigma_y", sigma=prior.sigma_y_scale)
            z = pm.Normal("z_alpha", mu=0, sigma=1, dims="group")
            alpha = pm.Deterministic("alpha", mu + z * sigma_alpha, dims="group")
            pm.Normal("y", mu=alpha[index], sigma=sigma_y, observed=y)
            trace = pm.sample(draws=self.n_draws, tune=self.tune, chains=self.chains, cores=self.cores,
                              random_seed=int(rng.integers(2**31 - 1)), progressbar=False,
                              compute_convergence_checks=False)
        post = trace.posterior

        def flat(name: str) -> np.ndarray:
            values = post[name].values
            return values.reshape(-1, *values.shape[2:])

        return PosteriorDraws(mu=flat("mu_alpha"), sigma_alpha=flat("sigma_alpha"), sigma_y=flat("sigma_y"),
                              alpha=flat("alpha"))


SAMPLERS: dict[str, type[PosteriorSampler]] = {"grid": GridSampler, "pymc": PyMCSampler}


def make_sampler(name: str) -> PosteriorSampler:
    if name not in SAMPLERS:
        raise UserError(f"unknown AB-MCTS-M sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]()
