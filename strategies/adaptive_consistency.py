"""Adaptive-Consistency: self-consistency that stops sampling once the vote is settled
(docs/algorithms/adaptive-consistency.md).

Aggarwal et al. 2023, "Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding
with LLMs". Samples arrive in rounds of `round` (the paper: one at a time); after each round the answers so
far are grouped by the task's equivalence (as self-consistency groups them: "540" and "540.0" are one
vote; a sample with no answer casts none) and `tts.adaptive.majority_probability` gives the posterior
probability that the leading answer is the majority. Sampling stops once it reaches `threshold` (with at
least `min_samples` drawn) or when `n` samples are spent, so no sample is ever drawn after the decision.
The answer is the majority vote over every sample drawn, with self-consistency's tie rule (the group seen
first); confidence = the winning share of the samples drawn, as there.

`Result.info` adds to the shared pick-one keys: `samples_used`, `rounds`, `stopped` ("settled" or
"budget"), `history` (the probability after each round) and `prior`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tts import selection
from tts.adaptive import Prior, answer_counts, majority_probability
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Candidate, Problem, Result


class AdaptiveConsistencyConfig(SamplingStrategyConfig):
    n: int = Field(16, ge=1, description="the most samples drawn (the budget; the paper allows 40)")
    threshold: float = Field(0.95, gt=0.0, le=1.0,
                             description="stop once P(the leading answer is the majority) reaches this")
    prior: Prior = Field("beta", description="beta: the top two answers' race (the paper's default); dirichlet: "
                                             "the five most common answers at once")
    round: int = Field(1, ge=1, description="samples per round, the rule checked after each (1: the paper's one "
                                            "at a time; more fills engine batches at the cost of a few extra samples)")
    min_samples: int = Field(1, ge=1, description="never stop with fewer samples drawn than this")

    @model_validator(mode="after")
    def _min_within_budget(self) -> AdaptiveConsistencyConfig:
        if self.min_samples > self.n:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds the budget n ({self.n})")
        return self


class AdaptiveConsistency(Strategy):
    name = "adaptive-consistency"
    description = ("self-consistency in rounds, stopped once the posterior probability that the leading answer "
                   "is the majority reaches a threshold (Beta or Dirichlet)")
    Config = AdaptiveConsistencyConfig
    config: AdaptiveConsistencyConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        candidates: list[Candidate] = []
        history: list[float] = []
        stopped = "budget"
        groups = selection.Groups.from_ids([])
        while len(candidates) < cfg.n:
            size = min(cfg.round, cfg.n - len(candidates))
            candidates += await ctx.sample_candidates(problem, size, perturb=cfg.perturb)
            groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
            votes = answer_counts([g if g >= 0 else None for g in groups.ids.tolist()])
            history.append(majority_probability(votes, cfg.prior))
            if history[-1] >= cfg.threshold and len(candidates) >= cfg.min_samples:
                stopped = "settled"
                break
        return ctx.finish_choice(problem, self.name, candidates, selection.majority(groups), groups,
                                 samples_used=len(candidates), rounds=len(history), stopped=stopped,
                                 history=history, prior=cfg.prior)
