"""AB-MCTS-M's posterior: the numpy grid sampler against an independent reference and against PyMC's NUTS."""

import sys

import numpy as np
import pytest

from tts.errors import UserError
from tts.treesearch.posterior import GridSampler, HierarchicalPrior, PosteriorDraws, PyMCSampler, predictive

PRIOR = HierarchicalPrior()
TABLES = {
    "two answers": [[0.2, 0.4], [0.7]],
    "three answers": [[0.1, 0.3, 0.2], [0.8, 0.6], [0.5]],
    "one refined answer": [[0.3, 0.5, 0.45, 0.6]],
    "single scores": [[0.0], [1.0], [0.5]],
}


def summary(d: PosteriorDraws, w=None) -> dict[str, tuple[float, float]]:
    """(mean, sd) of every parameter and of the predictives of each group and of a new group (GEN)."""
    w = np.full(len(d), 1.0 / len(d)) if w is None else w

    def moments(v):
        m = float(np.sum(w * v))
        return m, float(np.sum(w * (v - m) ** 2))

    out = {k: moments(v) for k, v in (("mu", d.mu), ("sigma_alpha", d.sigma_alpha), ("sigma_y", d.sigma_y))}
    noise_y, noise_alpha = np.sum(w * d.sigma_y ** 2), np.sum(w * d.sigma_alpha ** 2)
    out["new group"] = (out["mu"][0], out["mu"][1] + noise_alpha + noise_y)  # mu + sigma_alpha z + sigma_y e
    for j in range(d.alpha.shape[1]):
        out[f"alpha[{j}]"] = moments(d.alpha[:, j])
        out[f"group {j}"] = (out[f"alpha[{j}]"][0], out[f"alpha[{j}]"][1] + noise_y)
    return {k: (m, float(np.sqrt(var))) for k, (m, var) in out.items()}


def importance_reference(groups, n=1_000_000, seed=0):
    """Exact in the limit and shares no code with the samplers: prior draws weighted by the likelihood."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(PRIOR.mu_mean, PRIOR.mu_sd, n)
    sa = np.abs(rng.normal(0, PRIOR.sigma_alpha_scale, n))
    sy = np.abs(rng.normal(0, PRIOR.sigma_y_scale, n))
    alpha = mu[:, None] + sa[:, None] * rng.standard_normal((n, len(groups)))
    logw = np.zeros(n)
    for j, g in enumerate(groups):
        for y in g:
            logw += -0.5 * ((y - alpha[:, j]) / sy) ** 2 - np.log(sy)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    return PosteriorDraws(mu=mu, sigma_alpha=sa, sigma_y=sy, alpha=alpha), w


@pytest.mark.parametrize("table", ["two answers", "three answers", "one refined answer"])
def test_grid_sampler_matches_an_importance_sampling_reference(table):
    groups = [np.array(g) for g in TABLES[table]]
    ref_draws, w = importance_reference(groups)
    assert 1.0 / np.sum(w ** 2) > 3000  # enough effective draws for the tolerance below
    ref = summary(ref_draws, w)
    got = summary(GridSampler().draws(groups, PRIOR, np.random.default_rng(1), 200_000))
    for k, (m, sd) in ref.items():
        assert got[k][0] == pytest.approx(m, abs=0.01), k
        assert got[k][1] == pytest.approx(sd, abs=0.01), k


def test_predictive_gives_one_independent_draw_per_option_and_uses_the_prior_without_data():
    rng = np.random.default_rng(0)
    groups, new = predictive(GridSampler(), [[0.9, 0.95], [0.1]], 2, PRIOR, rng)
    assert groups.shape == (2,) and new.shape == (2,)
    draws = np.array([predictive(GridSampler(), [[0.9, 0.95], [0.1]], 1, PRIOR, rng)[0] for _ in range(300)])
    assert draws[:, 0].mean() > 0.75
    assert draws[:, 1].mean() < 0.4  # one score of 0.1, shrunk towards mu
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.2  # separate posterior draws
    observed, prior_draws = predictive(GridSampler(), [], 4000, PRIOR, rng)
    assert observed.size == 0
    # prior predictive: mean mu0, variance 0.2^2 + E[sigma_alpha^2] + E[sigma_y^2] = 0.04 + 0.04 + 0.09
    assert prior_draws.mean() == pytest.approx(0.5, abs=0.03)
    assert prior_draws.var() == pytest.approx(0.17, rel=0.1)


def test_identical_refinements_collapse_the_predictive_onto_their_score():
    # every group constant and one with two equal scores: sigma_y's posterior is improper near 0
    rng = np.random.default_rng(2)
    draws = np.array([predictive(GridSampler(), [[0.5, 0.5], [0.2]], 0, PRIOR, rng)[0][0] for _ in range(200)])
    assert np.mean(np.abs(draws - 0.5) < 0.05) > 0.6


def test_pymc_sampler_missing_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymc", None)  # makes `import pymc` fail
    with pytest.raises(UserError, match=r"pip install 'tts-toolkit\[pymc\]'"):
        PyMCSampler()
    from tts.treesearch import ABMCTSM

    with pytest.raises(UserError, match="tts-toolkit"):
        ABMCTSM(sampler="pymc")
    with pytest.raises(UserError, match="unknown"):
        ABMCTSM(sampler="nuts")


@pytest.mark.parametrize("table", ["three answers", "one refined answer"])
def test_grid_sampler_gives_the_same_posterior_as_pymc_nuts(table):
    pytest.importorskip("pymc")
    groups = [np.array(g) for g in TABLES[table]]
    nuts = summary(PyMCSampler().draws(groups, PRIOR, np.random.default_rng(3), 0))
    grid = summary(GridSampler().draws(groups, PRIOR, np.random.default_rng(3), 200_000))
    for k, (m, sd) in grid.items():
        assert nuts[k][0] == pytest.approx(m, abs=0.02), k
        assert nuts[k][1] == pytest.approx(sd, abs=0.02), k


def test_predictive_from_pymc_draws_picks_random_rows():
    pytest.importorskip("pymc")
    rng = np.random.default_rng(4)
    sampler = PyMCSampler(draws=300, tune=300, chains=2)
    groups, new = predictive(sampler, [[0.9, 0.8], [0.1]], 2, PRIOR, rng)
    assert groups.shape == (2,) and new.shape == (2,) and np.all(np.isfinite(np.r_[groups, new]))
