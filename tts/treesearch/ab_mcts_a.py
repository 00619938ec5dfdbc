"""AB-MCTS-A: adaptive branching with node aggregation and conjugate posteriors (docs/algorithms/ab-mcts.md).

Every visited node N keeps a posterior for its GEN arm (scores of N's children), one for its CONT arm
(scores of N's grandchildren and everything deeper), and one per child j (j's own score and every
score below j). The walk: at N draw GEN vs CONT; GEN (or no child yet) means
"generate a child of N"; CONT means draw every child's posterior and descend into the best. When GEN
wins, the action is chosen by Thompson sampling over per-action posteriors built from every score that
action produced anywhere in the tree (the reference's default `multiarm_bandit_thompson`; one action
is trivially chosen), or by UCB1 with `action_selection="ucb"`.

The reference also keeps, per node, a posterior for each action; only its non-default "stack" mode reads
them, so they are not kept here.

Observation models: Gaussian (Normal-Inverse-chi^2, prior m=0, kappa=1, nu=1, tau^2=0.1; the draw is the
mean mu) or Beta (Jeffreys a=b=0.5, fractional updates a += r, b += 1-r). Ties go to the first option
(GEN before CONT; children in creation order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tts.treesearch.tree import Node, SearchState, TreeSearchAlgorithm, thompson_argmax


@dataclass(frozen=True)
class GaussianPrior:
    m: float = 0.0
    kappa: float = 1.0
    nu: float = 1.0
    tau2: float = 0.1


@dataclass(frozen=True)
class BetaPrior:
    a: float = 0.5
    b: float = 0.5


Prior = GaussianPrior | BetaPrior


@dataclass
class Posterior:
    """A conjugate posterior over an arm's mean score, kept as its prior plus the raw observations."""

    prior: Prior
    observations: list[float] = field(default_factory=list)

    def observe(self, score: float) -> None:
        self.observations.append(float(score))

    def params(self) -> dict[str, float]:
        """Posterior parameters (Gaussian: Murphy, PML2 section 3.4.3.3; Beta: pseudo-counts)."""
        y = np.asarray(self.observations, dtype=float)
        n = len(y)
        p = self.prior
        if isinstance(p, BetaPrior):
            return {"a": p.a + float(y.sum()), "b": p.b + float(n - y.sum())}
        if n == 0:
            return {"m": p.m, "kappa": p.kappa, "nu": p.nu, "tau2": p.tau2}
        mean = float(y.mean())
        ss = float(((y - mean) ** 2).sum())
        kappa, nu = p.kappa + n, p.nu + n
        return {
            "m": (p.kappa * p.m + n * mean) / kappa,
            "kappa": kappa,
            "nu": nu,
            "tau2": (p.nu * p.tau2 + ss + n * p.kappa * (p.m - mean) ** 2 / kappa) / nu,
        }

    def draw(self, rng: np.random.Generator) -> float:
        q = self.params()
        if isinstance(self.prior, BetaPrior):
            return float(rng.beta(q["a"], q["b"]))
        # sigma^2 ~ Inv-Gamma(nu/2, scale nu*tau^2/2), then mu ~ N(m, sigma^2/kappa); the draw is mu
        sigma2 = (q["nu"] * q["tau2"] / 2.0) / rng.gamma(q["nu"] / 2.0)
        return float(rng.normal(q["m"], math.sqrt(sigma2 / q["kappa"])))


@dataclass
class NodeArms:
    gen: Posterior
    cont: Posterior
    children: dict[int, Posterior] = field(default_factory=dict)  # keyed by child index (position)


@dataclass
class ABMCTSAStats:
    arms: dict[int, NodeArms] = field(default_factory=dict)  # by node id, created when the walk visits
    rewards_by_action: dict[str, list[float]] = field(default_factory=dict)


class ABMCTSA(TreeSearchAlgorithm):
    name = "ab-mcts-a"

    def __init__(self, dist: Literal["gaussian", "beta"] = "gaussian",
                 reward_average_prior: float | dict[str, float] | None = None,
                 action_selection: Literal["thompson", "ucb"] = "thompson"):
        if dist not in ("gaussian", "beta"):
            raise ValueError(f"dist must be 'gaussian' or 'beta', got {dist!r}")
        if action_selection not in ("thompson", "ucb"):
            raise ValueError(f"action_selection must be 'thompson' or 'ucb', got {action_selection!r}")
        self.dist = dist
        self.reward_average_prior = reward_average_prior
        self.action_selection = action_selection

    # ---- priors ---------------------------------------------------------------------------------
    def prior(self) -> Prior:
        return GaussianPrior() if self.dist == "gaussian" else BetaPrior()

    def action_prior(self, action: str) -> Prior:
        """The reference's per-action override: Gaussian m = p, or Beta (a, b) = (p, 1 - p)."""
        p = self.reward_average_prior
        if isinstance(p, dict):
            p = p.get(action)
        if p is None:
            return self.prior()
        return GaussianPrior(m=float(p)) if self.dist == "gaussian" else BetaPrior(a=float(p), b=1.0 - float(p))

    # ---- walk -----------------------------------------------------------------------------------
    def _init_stats(self, actions: list[str]) -> ABMCTSAStats:
        return ABMCTSAStats(rewards_by_action={a: [] for a in actions})

    def arms(self, state: SearchState, node_id: int) -> NodeArms:
        stats: ABMCTSAStats = state.stats
        if node_id not in stats.arms:
            stats.arms[node_id] = NodeArms(gen=Posterior(self.prior()), cont=Posterior(self.prior()))
        return stats.arms[node_id]

    def _select(self, state: SearchState, k: int) -> list[tuple[int, str]]:
        return [self.walk(state) for _ in range(k)]

    def walk(self, state: SearchState) -> tuple[int, str]:
        node = state.root
        while True:
            arms = self.arms(state, node.id)
            gen_or_cont = thompson_argmax([arms.gen.draw(state.rng), arms.cont.draw(state.rng)])
            if gen_or_cont == 0 or not arms.children:
                return node.id, self.choose_action(state)
            positions = list(arms.children)
            draws = [arms.children[j].draw(state.rng) for j in positions]
            node = state.nodes[node.children[positions[thompson_argmax(draws)]]]

    def choose_action(self, state: SearchState) -> str:
        rewards: dict[str, list[float]] = state.stats.rewards_by_action
        if len(state.actions) == 1:
            return state.actions[0]
        if self.action_selection == "ucb":
            return ucb_action(state.actions, rewards)
        draws = []
        for action in state.actions:
            posterior = Posterior(self.action_prior(action), list(rewards[action]))
            draws.append(posterior.draw(state.rng))
        return state.actions[thompson_argmax(draws)]

    # ---- updates --------------------------------------------------------------------------------
    def _observe(self, state: SearchState, node: Node) -> None:
        stats: ABMCTSAStats = state.stats
        r = node.score
        assert node.action is not None and node.parent is not None  # only the root lacks them; `tell` adds children
        stats.rewards_by_action[node.action].append(r)
        parent = state.nodes[node.parent]
        arms = self.arms(state, parent.id)
        arms.gen.observe(r)
        arms.children[parent.children.index(node.id)] = Posterior(self.prior(), [r])
        u = parent
        while u.parent is not None:
            p = state.nodes[u.parent]
            p_arms = self.arms(state, p.id)
            p_arms.cont.observe(r)
            p_arms.children[p.children.index(u.id)].observe(r)
            u = p


def ucb_action(actions: list[str], rewards: dict[str, list[float]]) -> str:
    """UCB1 over actions: mean + sqrt(2) * sqrt(ln N_total / n_action); an unseen action scores +inf."""
    total = sum(len(rewards[a]) for a in actions)
    scores = []
    for a in actions:
        rs = rewards[a]
        scores.append(math.inf if not rs else sum(rs) / len(rs) + math.sqrt(2) * math.sqrt(math.log(total) / len(rs)))
    return actions[thompson_argmax(scores)]
