"""Early stopping on confidence: sample in rounds until one sample is confident enough
(docs/algorithms/early-stop.md).

Huang et al. 2025, "Efficient Test-Time Scaling via Self-Calibration". Every candidate is scored through
`StrategyContext.sample_candidates`; the confidence is the verdict score of one scorer (`scorer`, or the
run's only scorer): the judge's P(Yes), or a confidence scorer's score (mean-logprob, group-confidence,
tail-confidence), all in [0, 1].

* `final="most-confident"` (Early-Stopping Best-of-N): stop at the first sample whose confidence reaches
  `tau` (`tts.adaptive.first_confident`) and answer with it. A round's samples after that one were already
  generated: they count in the usage and are kept as candidates, but the pick is the first confident one.
  With the budget spent, the most confident sample wins (ties: the first).
* `final="weighted-vote"` (confidence-weighted self-consistency): answers grouped by the task's
  equivalence; stop once the leading group's share of the summed confidence reaches `tau`
  (`tts.adaptive.weighted_leader`), checked after each round from the second sample on (one sample always
  has the whole share); the answer is the weighted vote over every sample drawn.

A sample with no extracted answer never stops the search and is never picked (the reference drops such
responses before any rule runs). `Result.info` adds to the shared pick-one keys: `samples_used`,
`rounds`, `stopped` ("confident", "settled" or "budget"), `stop_index` (the confident sample, or the last
sample of the round that settled the vote; None at the budget), `confidences` (every sample's, in order)
and `scorer` (the label read).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tts import selection
from tts.adaptive import first_confident, weighted_leader
from tts.errors import UserError
from tts.scorer import Scorer
from tts.strategy import SamplingStrategyConfig, Strategy, StrategyContext
from tts.types import Candidate, Problem, Result

Final = Literal["most-confident", "weighted-vote"]


class EarlyStopConfig(SamplingStrategyConfig):
    n: int = Field(16, ge=1, description="the most samples drawn (the budget; the paper's is 16)")
    scorer: str | None = Field(None, min_length=1, description="the label or name of the scorer whose verdict "
                                                             "score is the confidence (default: the only scorer)")
    tau: float = Field(0.9, ge=0.0, le=1.0, description="the confidence (most-confident) or weighted share "
                                                        "(weighted-vote) that stops sampling; the paper tunes it "
                                                        "per dataset")
    final: Final = Field("most-confident", description="most-confident: stop at the first confident sample, else "
                                                       "the most confident; weighted-vote: confidence-weighted vote")
    round: int = Field(1, ge=1, description="samples per round, the rule checked after each (1: one at a time)")


def confidence_scorer(strategy: str, wanted: str | None, scorers: list[Scorer]) -> int:
    """The position of the scorer whose score is the confidence, or a UserError naming the way out."""
    if not scorers:
        raise UserError(f"{strategy} reads each sample's confidence from a scorer, and none was given: choose one "
                        "with --scorer (judge, mean-logprob, group-confidence or tail-confidence)")
    names = ", ".join(s.label for s in scorers)
    if wanted is None:
        if len(scorers) > 1:
            raise UserError(f"{strategy} reads one scorer's score as the confidence and the run has several "
                            f"({names}): name one with -o scorer=LABEL")
        return 0
    for key in ("label", "name"):
        matches = [i for i, s in enumerate(scorers) if getattr(s, key) == wanted]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UserError(f"{strategy}: several scorers are called {wanted!r} ({names}): give each a label "
                            "(--scorer-option label=...) and name one")
    raise UserError(f"{strategy}: scorer {wanted!r} is not among the run's scorers ({names})")


class EarlyStop(Strategy):
    name = "early-stop"
    description = ("sample in rounds until a sample's scorer confidence reaches tau (else the most confident), "
                   "or a confidence-weighted vote until the leader's share reaches tau")
    Config = EarlyStopConfig
    config: EarlyStopConfig

    def check_scorers(self, scorers: list[Scorer]) -> None:
        confidence_scorer(self.name, self.config.scorer, scorers)

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        reads = confidence_scorer(self.name, cfg.scorer, ctx.scorers)
        candidates: list[Candidate] = []
        confidences: list[float] = []
        rounds, stopped, stop_index = 0, "budget", None
        while len(candidates) < cfg.n:
            size = min(cfg.round, cfg.n - len(candidates))
            new = await ctx.sample_candidates(problem, size, perturb=cfg.perturb)
            candidates += new
            confidences += [c.verdicts[reads].score for c in new]  # verdicts come in scorer order
            rounds += 1
            if cfg.final == "most-confident":
                stop_index = first_confident(_answered(candidates, confidences), cfg.tau)
                if stop_index is not None:
                    stopped = "confident"
                    break
            elif len(candidates) >= 2:
                groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
                leader, share = weighted_leader([g if g >= 0 else None for g in groups.ids.tolist()], confidences)
                if leader is not None and share >= cfg.tau:
                    stopped, stop_index = "settled", len(candidates) - 1
                    break
        extra: dict[str, Any] = {"samples_used": len(candidates), "rounds": rounds, "stopped": stopped,
                                 "stop_index": stop_index, "confidences": confidences,
                                 "scorer": ctx.scorers[reads].label}
        if cfg.final == "weighted-vote":
            groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
            return ctx.finish_choice(problem, self.name, candidates, selection.weighted_vote(groups, confidences),
                                     groups, **extra)
        pick = _confident_pick(stop_index, _answered(candidates, confidences))
        return ctx.finish_choice(problem, self.name, candidates, pick, **extra)


def _answered(candidates: list[Candidate], confidences: list[float]) -> list[float]:
    """The confidences, with -inf for samples that have no answer (they neither stop nor win)."""
    return [conf if c.answer is not None else float("-inf") for c, conf in zip(candidates, confidences)]


def _confident_pick(stop_index: int | None, confidences: list[float]) -> selection.Selection:
    """The first confident sample, else the most confident answered one (ties: the first; tied ones recorded)."""
    if stop_index is not None:
        return selection.Selection(chosen=stop_index, tied=[stop_index], confidence=confidences[stop_index])
    best = max(confidences, default=float("-inf"))
    if best == float("-inf"):
        return selection.Selection(chosen=None, info={"reason": "no sample has an answer"})
    tied = [i for i, conf in enumerate(confidences) if conf == best]
    return selection.Selection(chosen=tied[0], tied=tied, confidence=best)
