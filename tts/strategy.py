"""The strategy contract: one uniform `run(problem, ctx) -> Result` (docs/architecture.md).

`StrategyContext` is everything a strategy may touch: generation (with usage counted for it),
the task's answer space, the scorers (verifiers, judges, reward models: they never see the reference)
and a seeded RNG.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field

from tts import perturb as perturb_mod
from tts.backends.base import ABORTED, Backend, Watcher
from tts.scorer import Scorer, ScoringContext, as_scorer
from tts.selection import ChoiceInfo, GroupInfo, Groups, Selection
from tts.stepwise import with_request_seeds
from tts.task import AnswerSpace
from tts.types import Candidate, GenerationRequest, Problem, Result, Sample, SamplingConfig, Usage
from tts.verifier import Verifier


@dataclass
class StrategyContext:
    backend: Backend
    answers: AnswerSpace
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # A plain Verifier given here is wrapped in a VerifierScorer (its checks run in threads).
    scorers: list[Scorer] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.scorers = [as_scorer(cast(Scorer | Verifier, s)) for s in self.scorers]

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """Generate through the backend and count the tokens against this problem."""
        out = await self.backend.generate(requests)
        self._count(out)
        return out

    def _count(self, out: Sequence[Sequence[Sample]]) -> None:
        """One backend call's samples (one list per request) against this problem's usage."""
        self.usage.backend_calls += 1
        for samples in out:
            self.usage.add_request(list(samples), self.backend.parameter_count)

    def _scorer_logprobs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The overrides, asking for the top-k logprobs the scorers read unless the caller chose k."""
        if "top_logprobs" not in overrides and self.wants_top_logprobs > self.sampling.top_logprobs:
            return {**overrides, "top_logprobs": self.wants_top_logprobs}
        return overrides

    async def sample(self, problem: Problem, n: int, **overrides: Any) -> list[Sample]:
        """n samples of the problem's own prompt with the context's sampling settings."""
        cfg = self.sampling.model_copy(update={"n": n, **overrides})
        (samples,) = await self.generate([GenerationRequest(prompt=problem.prompt, sampling=cfg)])
        return samples

    async def sample_candidates(self, problem: Problem, n: int, *, perturb: str | None = None,
                                **overrides: Any) -> list[Candidate]:
        """n samples as candidates with their answers, each scored by the context's scorers.

        The common start of every "sample n, then select" strategy; verdicts are recorded even where the
        selector ignores them, so studies can compare selectors on the same pool later. With `perturb` (a
        spec of `tts.perturb`), each sample comes from its own perturbed prompt drawn from `self.rng`: n
        requests with n = 1 in one engine call, each candidate's perturbation in info["perturbation"].
        """
        overrides = self._scorer_logprobs(overrides)
        if perturb is None:
            candidates = [self.candidate(problem, s) for s in await self.sample(problem, n, **overrides)]
        else:
            drawn = await perturb_mod.perturbed_prompts(problem, n, perturb, rng=self.rng, generate=self.generate,
                                                        sampling=self.sampling)
            out = await self.generate(perturb_mod.requests_for(drawn, self.sampling.model_copy(update=overrides)))
            candidates = [self.candidate(problem, s) for samples in out for s in samples]
            for c, d in zip(candidates, drawn, strict=True):
                c.info["perturbation"] = d.record
        await self.score(problem, candidates)
        return candidates

    async def sample_watched(self, problem: Problem, watchers: Sequence[Watcher], **overrides: Any) -> list[Candidate]:
        """One sample per watcher, each stopped as soon as its watcher says so (`Backend.generate_watched`).

        One request with n = 1 per watcher, all in one engine call (a seeded request gets its own seed from
        `self.rng`); tokens counted like `generate`, aborted ones included. Candidates are scored like
        `sample_candidates`; a stopped one is still returned, with info["aborted"] = True.
        """
        overrides = self._scorer_logprobs(overrides)
        cfg = self.sampling.model_copy(update={**overrides, "n": 1})
        requests = with_request_seeds([GenerationRequest(prompt=problem.prompt, sampling=cfg) for _ in watchers],
                                      self.rng)
        samples = await self.backend.generate_watched(requests, list(watchers))
        self._count([[sample] for sample in samples])
        candidates = [self.candidate(problem, s) for s in samples]
        for c, s in zip(candidates, samples, strict=True):
            if s.finish_reason == ABORTED:
                c.info["aborted"] = True
        await self.score(problem, candidates)
        return candidates

    @property
    def wants_top_logprobs(self) -> int:
        """The top-k log-probabilities per generated token that the scorers read (confidence scorers), or 0."""
        return max((getattr(s, "top_logprobs_needed", 0) for s in self.scorers), default=0)

    def candidate(self, problem: Problem, sample: Sample) -> Candidate:
        return Candidate.from_sample(sample, self.answers.extract_answer(sample.text, problem))

    async def score(self, problem: Problem, candidates: list[Candidate]) -> None:
        """Attach every scorer's verdict to each candidate; the scorers run concurrently, each on the
        whole batch (one engine call per scorer), their cost counted apart from generation."""
        if not self.scorers or not candidates:
            return
        sctx = ScoringContext(policy=self.backend, usage=self.usage)
        per_scorer = await asyncio.gather(*(s.score(problem, candidates, sctx) for s in self.scorers))
        for scorer, verdicts in zip(self.scorers, per_scorer):
            if len(verdicts) != len(candidates):
                raise RuntimeError(f"scorer {scorer.name!r} returned {len(verdicts)} verdicts for "
                                   f"{len(candidates)} candidates")
        for scorer, verdicts in zip(self.scorers, per_scorer):
            if scorer.label != scorer.name:  # a relabelled scorer: its verdicts carry the label
                verdicts[:] = [v.model_copy(update={"verifier": scorer.label}) for v in verdicts]
        for i, c in enumerate(candidates):
            c.verdicts.extend(verdicts[i] for verdicts in per_scorer)

    def finish(self, problem: Problem, strategy: str, **fields: Any) -> Result:
        self.usage.wall_time = time.perf_counter() - self.started
        return Result(problem_id=problem.id, strategy=strategy, usage=self.usage, **fields)

    def finish_choice(self, problem: Problem, strategy: str, candidates: list[Candidate], pick: Selection,
                      groups: Groups | None = None, **extra: Any) -> Result:
        """The Result of a strategy that picked one of its candidates with a selector (or none: answer None).

        Every pick-one strategy returns through here, so `Result.info` means one thing everywhere: a
        `tts.selection.ChoiceInfo` (tied_indices, tied_answers, invalid, and `groups` when the answer
        `groups` are given; then each candidate's info["group"] is set too), the selector's own
        `pick.info` and the strategy's `extra` keys.
        """
        group_info = None
        if groups is not None:
            for i, c in enumerate(candidates):
                c.info["group"] = int(groups.ids[i])
            members = groups.members
            scores = pick.group_scores if pick.group_scores is not None else [float(len(m)) for m in members]
            group_info = [GroupInfo(answer=candidates[m[0]].answer, count=len(m), score=s)
                          for m, s in zip(members, scores)]
        info = ChoiceInfo(tied_indices=pick.tied, tied_answers=[candidates[i].answer for i in pick.tied],
                          invalid=sum(c.answer is None for c in candidates), groups=group_info,
                          **pick.info, **extra)
        chosen = pick.chosen
        return self.finish(problem, strategy, answer=None if chosen is None else candidates[chosen].answer,
                           confidence=pick.confidence, chosen=chosen, candidates=candidates,
                           info=info.model_dump(exclude={"groups"} if groups is None else None))


class StrategyConfig(BaseModel):
    """Options every strategy takes; a strategy subclasses this to add its own."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=1, description="number of samples (the generation budget)")


class SamplingStrategyConfig(StrategyConfig):
    """Options of the "sample n, then select" strategies: `perturb` draws each sample from its own
    perturbed prompt (DivSampling, docs/perturb.md)."""

    perturb: perturb_mod.PerturbSpec = Field(None, description="prompt perturbation per sample (docs/perturb.md): "
                                f"{', '.join(perturb_mod.PERTURBERS)}, several joined by '+', or "
                                f"{perturb_mod.MIX}; none by default")


class Strategy(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, **options: Any):
        self.config = self.Config(**options)

    def check_scorers(self, scorers: list[Scorer]) -> None:  # noqa: B027 - any scorers suit most strategies
        """Refuse, with a UserError before any engine starts, scorers this strategy cannot work with."""

    @abstractmethod
    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        """Spend compute on one problem and return the chosen answer with every candidate."""
