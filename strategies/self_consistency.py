"""Self-consistency: majority vote over sampled reasoning paths (docs/algorithms/self-consistency.md).

Answers are grouped by the task's equivalence (exact strings bucketed first, then pairwise
`equivalent` between representatives), invalid answers (None) cast no vote, and the largest group
wins (`tts.selection.majority`). Tie-break: the tied group that appeared first in sample order
(deterministic); the tied options are recorded in `info["tied_answers"]` / `info["tied_indices"]`
so an evaluation can credit 1/len(tied) instead. `info["groups"]` holds each answer's vote count.
Confidence = winning group's size / n (all samples, invalid ones included).
"""

from __future__ import annotations

from tts import selection
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Problem, Result


class SelfConsistency(Strategy):
    name = "self-consistency"
    description = "n samples, answers grouped by equivalence, majority vote (confidence = winning share)"
    Config = SamplingStrategyConfig
    config: SamplingStrategyConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        # verdicts recorded; the vote ignores them
        candidates = await ctx.sample_candidates(problem, self.config.n, perturb=self.config.perturb)
        groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        return ctx.finish_choice(problem, self.name, candidates, selection.majority(groups), groups)
