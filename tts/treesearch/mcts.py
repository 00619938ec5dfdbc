"""Standard MCTS as treequest defines it: the fixed-branching baseline (docs/algorithms/mcts.md).

Selection walks from the root to a leaf, always to the child with the largest
UCT(c) = V(c)/N(c) + w * prior(c) * sqrt(ln N(parent) / N(c)), where N defaults to 1 when missing and
prior(c) is the softmax of the scores of c and its siblings (1 for an only child). The leaf then gets
`samples_per_action` children per action, and no node ever gets more children after that.

A new node with score r and each of its ancestors get N += 1, V += r (treequest 0.3.3's
back-propagation; there is no separate initialisation, so a node's N is the size of its subtree and V
the sum of the scores in it). The leaf's queue lists its expansions action by action (all samples of
the first action, then the next), the order in which the reference hands them out. Where the reference
hands out more trials than the leaf's queue holds and discards the extra results, `ask` here hands out
at most the queued expansions, so no generation is wasted: a batch is one leaf's
`samples_per_action * len(actions)` children (or fewer). tests/test_treesearch.py replays a trace
recorded from treequest 0.3.3 and checks that both build the same trees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tts.treesearch.tree import ROOT, Node, SearchState, TreeSearchAlgorithm


@dataclass
class MCTSStats:
    visits: dict[int, int] = field(default_factory=dict)
    values: dict[int, float] = field(default_factory=dict)
    priors: dict[int, float] = field(default_factory=dict)
    queue: list[tuple[int, str]] = field(default_factory=list)  # expansions of the selected leaf not yet handed out


class StandardMCTS(TreeSearchAlgorithm):
    name = "mcts"

    def __init__(self, samples_per_action: int = 2, exploration_weight: float = math.sqrt(2)):
        if samples_per_action < 1:
            raise ValueError(f"samples_per_action must be at least 1, got {samples_per_action}")
        self.samples_per_action = samples_per_action
        self.exploration_weight = exploration_weight

    def _init_stats(self, actions: list[str]) -> MCTSStats:
        return MCTSStats()

    def _select(self, state: SearchState, k: int) -> list[tuple[int, str]]:
        stats: MCTSStats = state.stats
        if not stats.queue:
            leaf = self.select_leaf(state)
            stats.queue = [(leaf, a) for a in state.actions for _ in range(self.samples_per_action)]
        handed, stats.queue = stats.queue[:k], stats.queue[k:]
        return handed

    def select_leaf(self, state: SearchState) -> int:
        node = state.root
        while node.children:
            children = state.children(node.id)
            ucts = [self.uct(state, c, node) for c in children]
            node = children[int(np.argmax(ucts))]  # first maximum, like max() in the reference
        return node.id

    def uct(self, state: SearchState, node: Node, parent: Node) -> float:
        stats: MCTSStats = state.stats
        parent_visits = stats.visits.get(parent.id, 1)
        visits = stats.visits.get(node.id, 1)
        mean = stats.values.get(node.id, 0.0) / visits
        prior = stats.priors.get(node.id, 1.0)
        return mean + self.exploration_weight * prior * math.sqrt(math.log(parent_visits) / visits)

    def _observe(self, state: SearchState, node: Node) -> None:
        stats: MCTSStats = state.stats
        for n in [node, *state.ancestors(node.id)]:
            stats.visits[n.id] = stats.visits.get(n.id, 0) + 1
            stats.values[n.id] = stats.values.get(n.id, 0.0) + node.score
        siblings = state.children(node.parent if node.parent is not None else ROOT)
        if len(siblings) > 1:  # softmax with the same float arithmetic as the reference
            top = max(s.score for s in siblings)
            weights = [math.exp(s.score - top) for s in siblings]
            total = sum(weights)
            for s, w in zip(siblings, weights):
                stats.priors[s.id] = w / total
