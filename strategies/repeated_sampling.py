"""Repeated sampling ("Large Language Monkeys", docs/algorithms/repeated-sampling.md).

Draw n independent samples and keep all of them; coverage (pass@k) is computed from them by the
runner. The answer is the first sample that passes the context's scorers when any does (every verdict
with a pass flag passed; `tts.selection.first_passing`; for code, the docstring examples), else the
first sample: with a perfect scorer, coverage is accuracy. confidence = the share of samples that pass
(None when no verdict has a pass flag); `info["selection_passed"]` = how many pass.
"""

from __future__ import annotations

from tts import selection
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Problem, Result


class RepeatedSampling(Strategy):
    name = "repeated-sampling"
    description = "n independent samples; answer = first one the scorers pass, else the first"
    Config = SamplingStrategyConfig
    config: SamplingStrategyConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n, perturb=self.config.perturb)
        flags = [c.selection_passed for c in candidates]
        passing = sum(1 for f in flags if f)
        pick = selection.first_passing(flags)
        if pick.chosen is None:  # none passes: the first sample, as if there were no verifier
            pick = selection.Selection(chosen=0, tied=[0])
        has_verdicts = any(f is not None for f in flags)
        pick.confidence = passing / len(candidates) if has_verdicts else None
        return ctx.finish_choice(problem, self.name, candidates, pick, selection_passed=passing)
