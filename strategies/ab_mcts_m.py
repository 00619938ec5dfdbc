"""AB-MCTS-M: adaptive-branching tree search with a hierarchical Bayesian model (docs/algorithms/ab-mcts.md).

Posterior-predictive Thompson sampling over the children and a GEN option, with subtree pruning.
`sampler="grid"` (default) needs only numpy; `sampler="pymc"` fits by NUTS as the reference does and
needs the `pymc` extra. Generation and scoring: strategies.tree_search.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tts.strategies.tree_search import TreeSearchConfig, TreeSearchStrategy
from tts.treesearch.ab_mcts_m import ABMCTSM as ABMCTSMAlgorithm


class ABMCTSMConfig(TreeSearchConfig):
    sampler: Literal["grid", "pymc"] = Field("grid", description="posterior sampler: grid (numpy) or pymc (NUTS)")
    enable_pruning: bool = True
    min_subtree_size_for_pruning: int = Field(4, ge=1)
    same_score_proportion_threshold: float = Field(0.75, gt=0.0, le=1.0)
    reward_average_prior: float = Field(0.5, description="prior mean of mu_alpha in the GEN-vs-child model")
    action_selection: Literal["thompson", "ucb"] = Field("thompson", description="how GEN picks among actions")


class ABMCTSM(TreeSearchStrategy):
    name = "ab-mcts-m"
    description = "AB-MCTS-M: hierarchical Bayesian Thompson sampling over children and GEN, with pruning"
    Config = ABMCTSMConfig

    def build_algorithm(self) -> ABMCTSMAlgorithm:
        c = self.config
        return ABMCTSMAlgorithm(sampler=c.sampler, enable_pruning=c.enable_pruning,
                                min_subtree_size_for_pruning=c.min_subtree_size_for_pruning,
                                same_score_proportion_threshold=c.same_score_proportion_threshold,
                                reward_average_prior=c.reward_average_prior, action_selection=c.action_selection)
