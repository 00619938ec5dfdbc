"""Weighted majority vote by the scorers (docs/algorithms/best-of-n.md, "Weighted vote").

Sample n, score every candidate with the context's scorers (the judge on math by default, a reward
model, a confidence measure), group answers by the task's equivalence, and pick the group with the
largest sum of scores: search-and-learn's weighted best-of-N (W(g) = sum of its members' scores; Snell
et al. 2024). It sits between self-consistency (every vote weighs 1) and best-of-n (only the top score
counts): many mediocre votes for one answer can outweigh a single confident outlier. A candidate's score
is the mean of its scorers' verdict scores; an unscored candidate weighs 0, and with no scorer at all
the strategy refuses to run (that would be self-consistency). Ties: the group seen first.
confidence = the winning group's weight / the total weight. `info["scorers"]`: the scorers' names.
"""

from __future__ import annotations

from tts import selection
from tts.errors import UserError
from tts.scorer import Scorer
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Problem, Result


class WeightedVote(Strategy):
    name = "weighted-vote"
    description = "n samples; answers grouped by equivalence; the group with the largest sum of scorer scores wins"
    Config = SamplingStrategyConfig
    config: SamplingStrategyConfig

    def check_scorers(self, scorers: list[Scorer]) -> None:
        if not scorers:
            raise UserError("weighted-vote weighs each answer by its scorers' scores, and no scorer was given "
                            "(choose one with --scorer; without scores use self-consistency)")

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        self.check_scorers(ctx.scorers)
        candidates = await ctx.sample_candidates(problem, self.config.n, perturb=self.config.perturb)
        scores = [selection.verdict_score(c.verdicts) for c in candidates]
        groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        return ctx.finish_choice(problem, self.name, candidates, selection.weighted_vote(groups, scores), groups,
                                 scores=scores, scorers=[s.label for s in ctx.scorers])
