"""Standard MCTS, the treequest baseline (docs/algorithms/mcts.md).

UCT selection with score-softmax priors; each selected leaf gets `samples_per_action` children per
action and never more (fixed branching). Generation and scoring: strategies.tree_search.
"""

from __future__ import annotations

import math

from pydantic import Field

from tts.strategies.tree_search import TreeSearchConfig, TreeSearchStrategy
from tts.treesearch.mcts import StandardMCTS


class MCTSConfig(TreeSearchConfig):
    samples_per_action: int = Field(2, ge=1, description="children per action of each selected leaf")
    exploration_weight: float = Field(math.sqrt(2), ge=0.0, description="w in the UCT exploration term")


class MCTS(TreeSearchStrategy):
    name = "mcts"
    description = ("standard MCTS (treequest): UCT with score-softmax priors, fixed branching; "
                   "refines with verifier feedback")
    Config = MCTSConfig

    def build_algorithm(self) -> StandardMCTS:
        return StandardMCTS(samples_per_action=self.config.samples_per_action,
                            exploration_weight=self.config.exploration_weight)
