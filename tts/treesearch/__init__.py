"""Tree-search algorithms as pure ask/tell transitions on a caller-owned tree (docs/algorithms/tree-search.md).

No model is called here: `ask` names the nodes to expand and the actions to use, the caller generates
and scores the answers, `tell` records them. The strategies in `strategies/` (mcts, ab-mcts-a,
ab-mcts-m) are the LLM side.
"""

from tts.treesearch.ab_mcts_a import ABMCTSA
from tts.treesearch.ab_mcts_m import ABMCTSM, is_prunable
from tts.treesearch.mcts import StandardMCTS
from tts.treesearch.posterior import GridSampler, HierarchicalPrior, PyMCSampler, predictive
from tts.treesearch.tree import (
    Expansion,
    ExpansionResult,
    Node,
    SearchState,
    TreeSearchAlgorithm,
    format_tree,
    tree_rows,
)

__all__ = [
    "ABMCTSA",
    "ABMCTSM",
    "Expansion",
    "ExpansionResult",
    "GridSampler",
    "HierarchicalPrior",
    "Node",
    "PyMCSampler",
    "SearchState",
    "StandardMCTS",
    "TreeSearchAlgorithm",
    "format_tree",
    "is_prunable",
    "predictive",
    "tree_rows",
]
