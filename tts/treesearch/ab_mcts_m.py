"""AB-MCTS-M: adaptive branching with a hierarchical (mixed-effects) Bayesian model (docs/algorithms/ab-mcts.md).

At a node with children, every score in child j's subtree is an observation of group j; the model of
`tts.treesearch.posterior` (mu ~ N(mu0, 0.2), sigma_alpha ~ HN(0.2), sigma_y ~ HN(0.3)) gives one
posterior-predictive draw per child and one for GEN (a new group). The largest draw wins (ties: the
earlier child, GEN last). At a node without children, GEN is the only option.

Pruning (default on): a child whose subtree holds at least 4 scores, 75% or more of them equal after
rounding to 0.01, is skipped. As in the reference, when the winning draw is a pruned child the walk
takes the best-drawn child that is not pruned (GEN is not reconsidered); only when every child is pruned
does it generate.

When GEN wins, the action comes from a second model over every score in the tree grouped by action
(same priors, mu0 = 0.5): an observed action draws from its group's predictive, an unseen one from a new
group's; with no score in the tree yet, the action is uniform at random (`action_selection="ucb"`
uses UCB1 instead). A single action is chosen without fitting.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from tts.treesearch.ab_mcts_a import ucb_action
from tts.treesearch.posterior import HierarchicalPrior, PosteriorSampler, make_sampler, predictive
from tts.treesearch.tree import Node, SearchState, TreeSearchAlgorithm, thompson_argmax

GEN = -1


def is_prunable(scores: list[float], min_size: int = 4, same_share: float = 0.75) -> bool:
    """Whether a subtree with these scores is skipped: >= min_size scores, >= same_share of them equal at 0.01."""
    if len(scores) < min_size:
        return False
    _, count = Counter(round(s * 100) for s in scores).most_common(1)[0]
    return count / len(scores) >= same_share


class ABMCTSM(TreeSearchAlgorithm):
    name = "ab-mcts-m"

    def __init__(self, sampler: str | PosteriorSampler = "grid", enable_pruning: bool = True,
                 min_subtree_size_for_pruning: int = 4, same_score_proportion_threshold: float = 0.75,
                 reward_average_prior: float = 0.5, action_selection: Literal["thompson", "ucb"] = "thompson"):
        if action_selection not in ("thompson", "ucb"):
            raise ValueError(f"action_selection must be 'thompson' or 'ucb', got {action_selection!r}")
        self.sampler = make_sampler(sampler) if isinstance(sampler, str) else sampler
        self.enable_pruning = enable_pruning
        self.min_subtree_size_for_pruning = min_subtree_size_for_pruning
        self.same_score_proportion_threshold = same_score_proportion_threshold
        self.node_prior = HierarchicalPrior(mu_mean=reward_average_prior)
        self.action_prior = HierarchicalPrior(mu_mean=0.5)
        self.action_selection = action_selection
        self.slow_ask = self.sampler.slow

    def _select(self, state: SearchState, k: int) -> list[tuple[int, str]]:
        return [self.walk(state) for _ in range(k)]

    def _observe(self, state: SearchState, node: Node) -> None:
        pass  # every statistic is recomputed from the tree's scores

    def walk(self, state: SearchState) -> tuple[int, str]:
        node = state.root
        while node.children:
            choice = self.choose_child(state, node)
            if choice == GEN:
                break
            node = state.nodes[node.children[choice]]
        return node.id, self.choose_action(state)

    def subtree_scores(self, state: SearchState, node_id: int) -> list[float]:
        return [n.score for n in state.subtree(node_id)]

    def choose_child(self, state: SearchState, node: Node) -> int:
        """Position of the child to descend into, or GEN."""
        groups = [self.subtree_scores(state, c) for c in node.children]
        child_draws, (gen_draw,) = predictive(self.sampler, groups, 1, self.node_prior, state.rng)
        draws = [*child_draws, gen_draw]
        best = thompson_argmax(draws)
        if best == len(groups):
            return GEN
        if not self.pruned(groups[best]):
            return best
        by_draw = sorted(range(len(groups)), key=lambda j: -draws[j])  # stable: ties keep child order
        return next((j for j in by_draw if not self.pruned(groups[j])), GEN)

    def pruned(self, scores: list[float]) -> bool:
        return self.enable_pruning and is_prunable(scores, self.min_subtree_size_for_pruning,
                                                   self.same_score_proportion_threshold)

    def choose_action(self, state: SearchState) -> str:
        actions = state.actions
        if len(actions) == 1:
            return actions[0]
        by_action: dict[str, list[float]] = {a: [] for a in actions}
        for n in state.answers:
            assert n.action is not None  # only the root has no action, and answers exclude it
            by_action[n.action].append(n.score)
        if self.action_selection == "ucb":
            return ucb_action(actions, by_action)
        if not state.answers:
            return actions[int(state.rng.integers(len(actions)))]
        seen = [a for a in actions if by_action[a]]
        unseen = [a for a in actions if not by_action[a]]
        seen_draws, new_draws = predictive(self.sampler, [by_action[a] for a in seen], len(unseen),
                                           self.action_prior, state.rng)
        draw = dict(zip(seen, seen_draws)) | dict(zip(unseen, new_draws))
        return actions[thompson_argmax([draw[a] for a in actions])]
