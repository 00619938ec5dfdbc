"""RPC: Perplexity Consistency with Reasoning Pruning (ALGORITHMS.md 3).

Sample n with log-probs, group answers by the task's equivalence, prune low-probability paths with
the two-component Weibull mixture (AND rule), and pick the answer with the largest probability mass
over its distinct unpruned completions (`tts.selectors.rpc`, which documents every detail).
confidence = the winner's share of the total mass. `info` keeps the mass per answer, the pruned
samples and the fitted mixture.
"""

from __future__ import annotations

from pydantic import Field

from tts import selectors
from tts.strategy import Strategy, StrategyConfig, StrategyContext
from tts.types import Problem, Result


class RPCConfig(StrategyConfig):
    min_paths: int = Field(selectors.MIN_PATHS_TO_PRUNE, ge=1,
                           description="fewest paths with a log-prob for which pruning is attempted (fewer: no pruning)")


class RPC(Strategy):
    name = "rpc"
    description = "n samples; answer mass = sum of path probabilities over distinct paths, after Weibull pruning"
    Config = RPCConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n, logprobs=True)
        groups = selectors.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        pick = selectors.rpc(groups, [c.mean_logprob for c in candidates], texts=[c.text for c in candidates],
                             min_paths=self.config.min_paths)
        pruned = set(pick.info["pruned"])
        for i, c in enumerate(candidates):
            c.info["group"] = int(groups.ids[i])
            c.info["pruned"] = i in pruned
        members = groups.members
        return ctx.finish_choice(
            problem, self.name, candidates, pick.chosen, pick.confidence,
            info={
                "mass": [{"answer": candidates[m[0]].answer, "mass": mass, "count": len(m)}
                         for m, mass in zip(members, pick.info["mass"])],
                "tied": [candidates[i].answer for i in pick.tied],
                "pruned": pick.info["pruned"],
                "fit": pick.info["fit"],
                **({"fallback": pick.info["fallback"]} if "fallback" in pick.info else {}),
            },
        )
