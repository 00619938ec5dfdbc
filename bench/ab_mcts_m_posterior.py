"""AB-MCTS-M's posterior: the numpy grid sampler against PyMC's NUTS and an importance-sampling reference.

    python bench/ab_mcts_m_posterior.py [--is-draws 2000000]

For a few fixed score tables (groups = children of a node, each a list of scores) it prints the
posterior mean and sd of mu, sigma_alpha, sigma_y, each alpha_j, and the posterior predictives of
each group and of a new group (GEN), from three methods: the grid sampler (tts.treesearch.posterior,
the default), NUTS through PyMC as the reference implementation fits it (4 chains x 1000 draws, 1000
tuning; skipped if PyMC is not installed) and importance sampling from the prior (exact in the limit,
shares no code with either). It also times one fit of each.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tts.errors import UserError
from tts.treesearch.posterior import GridSampler, HierarchicalPrior, PosteriorDraws, PyMCSampler

PRIOR = HierarchicalPrior()
TABLES = {
    "two answers": [[0.2, 0.4], [0.7]],
    "three answers": [[0.1, 0.3, 0.2], [0.8, 0.6], [0.5]],
    "one refined answer": [[0.3, 0.5, 0.45, 0.6]],
    "single scores": [[0.0], [1.0], [0.5]],
}


def summary(d: PosteriorDraws, w: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    w = np.full(len(d), 1.0 / len(d)) if w is None else w

    def moments(v: np.ndarray) -> tuple[float, float]:
        m = float(np.sum(w * v))
        return m, float(np.sum(w * (v - m) ** 2))

    out = {k: moments(v) for k, v in (("mu", d.mu), ("sigma_alpha", d.sigma_alpha), ("sigma_y", d.sigma_y))}
    ey, ea = np.sum(w * d.sigma_y ** 2), np.sum(w * d.sigma_alpha ** 2)
    out["predictive GEN"] = (out["mu"][0], out["mu"][1] + ea + ey)
    for j in range(d.alpha.shape[1]):
        out[f"alpha[{j}]"] = moments(d.alpha[:, j])
        out[f"predictive {j}"] = (out[f"alpha[{j}]"][0], out[f"alpha[{j}]"][1] + ey)
    return {k: (m, float(np.sqrt(v))) for k, (m, v) in out.items()}


def importance(groups: list[np.ndarray], n: int, seed: int = 0) -> tuple[PosteriorDraws, np.ndarray]:
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
    return PosteriorDraws(mu=mu, sigma_alpha=sa, sigma_y=sy, alpha=alpha), w / w.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--is-draws", type=int, default=2_000_000)
    args = parser.parse_args()
    try:
        nuts: PyMCSampler | None = PyMCSampler()
    except UserError as exc:  # the extra is optional
        print(f"(NUTS skipped: {exc})")
        nuts = None
    grid = GridSampler()
    worst = 0.0
    for name, table in TABLES.items():
        groups = [np.array(g) for g in table]
        t = time.perf_counter()
        g = summary(grid.draws(groups, PRIOR, np.random.default_rng(1), 200_000))
        t_grid = time.perf_counter() - t
        t = time.perf_counter()
        grid.draws(groups, PRIOR, np.random.default_rng(1), len(groups) + 1)
        t_one = time.perf_counter() - t
        ref_draws, w = importance(groups, args.is_draws)
        ref = summary(ref_draws, w)
        n = None
        if nuts is not None:
            t = time.perf_counter()
            n = summary(nuts.draws(groups, PRIOR, np.random.default_rng(1), 0))
            t_nuts = time.perf_counter() - t
        print(f"\n{name}: {table}   (IS effective draws {1 / np.sum(w ** 2):.0f}; one grid fit for Thompson "
              f"{t_one * 1e3:.1f} ms, 200k grid draws {t_grid * 1e3:.0f} ms"
              + (f", NUTS fit {t_nuts:.1f} s)" if n else ")"))
        print(f"  {'quantity':16s} {'grid mean':>9s} {'sd':>6s}   {'NUTS mean':>9s} {'sd':>6s}   {'IS mean':>8s} {'sd':>6s}")
        for k in g:
            row = f"  {k:16s} {g[k][0]:9.4f} {g[k][1]:6.4f}   "
            row += f"{n[k][0]:9.4f} {n[k][1]:6.4f}   " if n else f"{'-':>9s} {'-':>6s}   "
            row += f"{ref[k][0]:8.4f} {ref[k][1]:6.4f}"
            print(row)
            if n:
                worst = max(worst, abs(g[k][0] - n[k][0]), abs(g[k][1] - n[k][1]))
    if nuts is not None:
        print(f"\nlargest |grid - NUTS| over all means and sds: {worst:.4f}")


if __name__ == "__main__":
    main()
