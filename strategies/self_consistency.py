"""Self-consistency: majority vote over sampled reasoning paths (ALGORITHMS.md section 2).

Answers are grouped by the task's equivalence (exact strings bucketed first, then pairwise
`equivalent` between representatives), invalid answers (None) cast no vote, and the largest group
wins. Tie-break: the tied group that appeared first in sample order (deterministic); the tied
groups are recorded in `info["tied"]` so an evaluation can credit 1/len(tied) instead.
Confidence = winning group's size / n (all samples, invalid ones included).
"""

from __future__ import annotations

from tts.strategy import Strategy, StrategyContext
from tts.types import Problem, Result
from tts.voting import group_answers, majority_vote


class SelfConsistency(Strategy):
    name = "self-consistency"
    description = "n samples, answers grouped by equivalence, majority vote (confidence = winning share)"

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        candidates = await ctx.sample_candidates(problem, self.config.n)  # verdicts recorded; the vote ignores them
        groups = group_answers([c.answer for c in candidates], ctx.answers.equivalent)
        winner, tied = majority_vote(groups)
        if winner is None:
            return ctx.finish(problem, self.name, answer=None, confidence=0.0, chosen=None,
                              candidates=candidates, info={"votes": [], "tied": []})
        chosen = groups[winner][0]
        for g, members in enumerate(groups):
            for i in members:
                candidates[i].info["group"] = g
        return ctx.finish(
            problem,
            self.name,
            answer=candidates[chosen].answer,
            confidence=len(groups[winner]) / len(candidates),
            chosen=chosen,
            candidates=candidates,
            info={
                "votes": [{"answer": candidates[g[0]].answer, "count": len(g)} for g in groups],
                "tied": [candidates[groups[t][0]].answer for t in tied],
                "invalid": sum(c.answer is None for c in candidates),
            },
        )
