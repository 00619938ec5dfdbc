"""AB-MCTS-A: adaptive-branching tree search with node aggregation (docs/algorithms/ab-mcts.md).

Thompson sampling between a GEN arm (a new child) and a CONT arm (descend into the best child), with
Gaussian (default) or Beta conjugate posteriors. Generation and scoring: strategies.tree_search.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tts.strategies.tree_search import TreeSearchConfig, TreeSearchStrategy
from tts.treesearch.ab_mcts_a import ABMCTSA as ABMCTSAAlgorithm


class ABMCTSAConfig(TreeSearchConfig):
    dist: Literal["gaussian", "beta"] = Field("gaussian", description="conjugate observation model")
    reward_average_prior: float | dict[str, float] | None = Field(
        None, description="prior mean score of the per-action posteriors (one value, or one per action name)")
    action_selection: Literal["thompson", "ucb"] = Field("thompson", description="how GEN picks among actions")


class ABMCTSA(TreeSearchStrategy):
    name = "ab-mcts-a"
    description = ("AB-MCTS-A: Thompson sampling GEN vs CONT with conjugate posteriors; "
                   "wider or deeper with verifier feedback")
    Config = ABMCTSAConfig

    def build_algorithm(self) -> ABMCTSAAlgorithm:
        return ABMCTSAAlgorithm(dist=self.config.dist, reward_average_prior=self.config.reward_average_prior,
                                action_selection=self.config.action_selection)
