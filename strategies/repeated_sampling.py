"""Repeated sampling (ALGORITHMS.md section 1, "Large Language Monkeys").

Draw n independent samples and keep all of them; coverage (pass@k) is computed from them by the
runner. The answer is the first sample that passes the selection verifiers when any does (for code,
the docstring examples), else the first sample: with a perfect verifier, coverage is accuracy.
"""

from __future__ import annotations

from tts.strategy import Strategy, StrategyContext
from tts.types import Problem, Result


class RepeatedSampling(Strategy):
    name = "repeated-sampling"
    description = "n independent samples; answer = first one passing the selection verifier, else the first"

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n)
        passing = [i for i, c in enumerate(candidates) if c.selection_passed]
        chosen = passing[0] if passing else 0
        has_verdicts = any(c.selection_passed is not None for c in candidates)
        return ctx.finish(
            problem,
            self.name,
            answer=candidates[chosen].answer,
            confidence=len(passing) / len(candidates) if has_verdicts else None,
            chosen=chosen,
            candidates=candidates,
            info={"selection_passed": len(passing)},
        )
