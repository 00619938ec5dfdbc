"""Best-of-N by the scorers' score (docs/algorithms/best-of-n.md).

Sample n, score every candidate with the context's scorers (never the oracle; by default the judge on
math, the docstring examples on HumanEval), keep the highest score, the mean over the scorers when there
are several; ties are broken by mean token log-prob, then by sample order (`tts.selection.best_of_n`).
With no scorer (`--scorer none`) every score is missing, so the choice degrades to `perplexity` (the
most probable path). confidence = the chosen candidate's score (None without a scorer).
`info["scores"]`: each candidate's score; `info["scorers"]`: the scorers' names.
"""

from __future__ import annotations

from tts import selection
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Problem, Result


class BestOfN(Strategy):
    name = "best-of-n"
    description = ("n samples; answer = highest scorer score, ties by mean log-prob "
                   "(no verifier: perplexity)")
    Config = SamplingStrategyConfig
    config: SamplingStrategyConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n, perturb=self.config.perturb, logprobs=True)
        scores = [selection.verdict_score(c.verdicts) for c in candidates]
        pick = selection.best_of_n(scores, [c.mean_logprob for c in candidates])
        return ctx.finish_choice(problem, self.name, candidates, pick, scores=scores,
                                 scorers=[s.label for s in ctx.scorers])
