"""Perplexity: the single most probable sampled path (the RPC paper's baseline, docs/algorithms/rpc.md).

Sample n, keep the path with the highest mean token log-probability (`tts.selection.perplexity`).
It converges fast but ignores that many paths may share an answer; `rpc` combines the two.
confidence = exp(mean log-prob) of the chosen path; equally probable paths are in
`info["tied_indices"]` (`tts.selection.ChoiceInfo`).
"""

from __future__ import annotations

from tts import selection
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Problem, Result


class Perplexity(Strategy):
    name = "perplexity"
    description = "n samples; answer = the path with the highest mean token log-prob (lowest perplexity)"
    Config = SamplingStrategyConfig
    config: SamplingStrategyConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n, perturb=self.config.perturb, logprobs=True)
        pick = selection.perplexity([c.mean_logprob for c in candidates])
        return ctx.finish_choice(problem, self.name, candidates, pick)
