"""RPC: Perplexity Consistency with Reasoning Pruning (docs/algorithms/rpc.md).

Sample n with log-probs, group answers by the task's equivalence, prune low-probability paths with
the two-component Weibull mixture (AND rule), and pick the answer with the largest probability mass
over its distinct unpruned completions (`tts.selection.rpc`, which documents every detail).
confidence = the winner's share of the total mass. `info["groups"]` keeps each answer's count and
mass (`score`); `info["pruned"]` the pruned samples (each candidate's info["pruned"] too);
`info["fit"]` the fitted mixture (None when no fit ran).
"""

from __future__ import annotations

from pydantic import Field

from tts import selection
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Problem, Result


class RPCConfig(SamplingStrategyConfig):
    min_paths: int = Field(selection.MIN_PATHS_TO_PRUNE, ge=1,
                           description="fewest paths with a log-prob for which pruning is attempted "
                                       "(fewer: no pruning)")


class RPC(Strategy):
    name = "rpc"
    description = "n samples; answer mass = sum of path probabilities over distinct paths, after Weibull pruning"
    Config = RPCConfig
    config: RPCConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n, perturb=self.config.perturb, logprobs=True)
        groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        pick = selection.rpc(groups, [c.mean_logprob for c in candidates], texts=[c.text for c in candidates],
                             min_paths=self.config.min_paths)
        pruned = set(pick.info["pruned"])
        for i, c in enumerate(candidates):
            c.info["pruned"] = i in pruned
        return ctx.finish_choice(problem, self.name, candidates, pick, groups)
