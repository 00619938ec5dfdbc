"""Selection: grouping answers, voting, and every pick-one selector, shared by strategies and studies.

- `grouping`: `group_answers`, `majority_vote`, `Groups` (answer groups computed once per pool).
- `selectors`: pure functions over one problem's pool returning a `Selection` (majority, weighted
  vote, perplexity, best-of-n, first-passing, RPC) and the verdict helpers.
- `weibull`: RPC's two-component Weibull mixture fit and the pruning rule.
- `info`: `ChoiceInfo`, the typed `Result.info` every pick-one strategy returns through
  `StrategyContext.finish_choice` (one meaning per key).
"""

from tts.selection.grouping import Groups, group_answers, majority_vote
from tts.selection.info import ChoiceInfo, GroupInfo
from tts.selection.selectors import (
    TIE_RTOL,
    Selection,
    best_of_n,
    first_passing,
    majority,
    perplexity,
    rpc,
    verdict_passed,
    verdict_score,
    weighted_vote,
)
from tts.selection.weibull import (
    MIN_PATHS_TO_PRUNE,
    WEIBULL_BOUNDS,
    WEIBULL_START,
    WeibullMixture,
    fit_weibull_mixture,
    reasoning_pruning,
    weibull_mixture_nll,
)

__all__ = [
    "MIN_PATHS_TO_PRUNE", "TIE_RTOL", "WEIBULL_BOUNDS", "WEIBULL_START", "ChoiceInfo", "GroupInfo", "Groups",
    "Selection", "WeibullMixture", "best_of_n", "first_passing", "fit_weibull_mixture", "group_answers",
    "majority", "majority_vote", "perplexity", "reasoning_pruning", "rpc", "verdict_passed", "verdict_score",
    "weibull_mixture_nll", "weighted_vote",
]
