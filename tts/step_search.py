"""The layer PRM beam search, DVTS and particle filtering share (docs/algorithms/step-search.md).

A *track* (a beam, a subtree's head, a particle) is a partial answer plus the score of each of its
steps. Every phase of a search is ONE engine call for all tracks of the problem: next steps for every
open track (`next_steps`), greedy lookahead (`look_ahead`), then one scoring call per scorer for every
new partial answer (`score_steps`, which asks each scorer for the score of the last step only,
`Scorer.score_last_steps`). Problems run concurrently, so the calls of every problem in flight meet in
the engine's batches, and continuations reuse the prefix cache (the cached tokens are counted).

A step is the text up to a blank line ("\\n\\n", search-and-learn's and the PRMs' separator). A track
ends when a step holds the final answer (`\\boxed{`, "####", "the answer is" and a number), at the end-of-sequence
token, after `max_steps` steps (the last step runs to the end of the answer), or when its answer
reaches `answer_max_tokens` tokens, by default the run's `--max-tokens`, so one track costs at most what
one sample costs in the sampling strategies and budgets compare.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from tts import selection
from tts.errors import UserError
from tts.scorer import Aggregation, Scorer, ScoringContext, aggregate
from tts.stepwise import (
    Step,
    StepFormat,
    StepState,
    flops_report,
    step_from_sample,
    usage_of,
    with_request_seeds,
)
from tts.strategy import Strategy, StrategyConfig, StrategyContext
from tts.types import Candidate, GenerationRequest, Problem, Result, Sample, Usage, Verdict

STEP_SEPARATOR = "\n\n"
# A step ends the answer when it holds a boxed answer, "####", or "the answer is" followed by a number: not
# on "the answer is determined by...", which small models write mid-solution (the PF and DVTS references
# stop on "\boxed" only; beam search's on the end of the sequence only).
STEP_ANSWER_PATTERN = r"\\boxed\s*\{|^\s*####|(?i:\b(?:the|final) answer is)[\s:$\\(]*-?\d"
FinalChoice = Literal["score", "weighted-vote", "sample"]


class StepSearchConfig(StrategyConfig):
    """Options every step-level search takes (defaults: search-and-learn's recipes and the PF paper's)."""

    n: int = Field(8, ge=1, description="N: the budget, in beams or particles (each at most one answer long)")
    max_steps: int = Field(40, ge=1, description="step iterations at most; the last step runs to the end")
    temperature: float | None = Field(0.8, ge=0.0, description="step sampling temperature (None: the run's)")
    step_max_tokens: int = Field(1024, ge=1, description="cap on one step")
    answer_max_tokens: int | None = Field(None, ge=1, description="cap on a whole answer (None: the run's "
                                          "--max-tokens); a track that reaches it ends")
    aggregation: Aggregation = Field("last", description="how a track's step scores become its score "
                                     "(last, as search-and-learn; min, prod or mean)")
    lookahead: int = Field(0, ge=0, le=8, description="greedy steps rolled out past each new step before it is "
                           "scored (only the new step is kept)")
    delimiter: str = Field(STEP_SEPARATOR, min_length=1, description="a step ends at this string")
    answer_pattern: str | None = Field(STEP_ANSWER_PATTERN, description="regex (multiline); a step matching it ends "
                                       "the answer")
    final: FinalChoice = Field("score", description="the answer: the track with the best score, the answer group "
                               "with the largest sum of scores (weighted-vote), or a track drawn by softmax of "
                               "logit(score) (sample)")

    @model_validator(mode="after")
    def _format_valid(self) -> StepSearchConfig:
        StepFormat(delimiter=self.delimiter, answer_pattern=self.answer_pattern)
        return self

    @property
    def step_format(self) -> StepFormat:
        return StepFormat(delimiter=self.delimiter, answer_pattern=self.answer_pattern)


@dataclass(frozen=True)
class Track:
    """A partial answer and, per step, each scorer's score of that step (given the steps before it)."""

    state: StepState = field(default_factory=StepState)
    step_scores: tuple[tuple[float, ...], ...] = ()
    # Where the track came from, for the record: its subtree (DVTS) or the first-step particle it descends from.
    origin: int = 0

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def text(self) -> str:
        return self.state.text

    def scores_of(self, scorer: int) -> list[float]:
        return [s[scorer] for s in self.step_scores]

    def mean_step_scores(self) -> list[float]:
        """Per step, the mean over scorers: what the search ranks by."""
        return [sum(s) / len(s) for s in self.step_scores]

    def score(self, how: Aggregation) -> float:
        return aggregate(self.mean_step_scores(), how)

    def truncated(self, depth: int) -> Track:
        """The track as it stood after `depth` steps."""
        return Track(self.state.model_copy(update={"steps": self.state.steps[:depth]}),
                     self.step_scores[:depth], self.origin)


@dataclass
class Phases:
    """Generation usage of each phase (steps, lookahead), for the record (scoring is in `Usage.scorer_*`)."""

    usage: dict[str, Usage] = field(default_factory=dict)

    def add(self, phase: str, usage: Usage) -> None:
        self.usage[phase] = self.usage.get(phase, Usage()) + usage

    def dump(self) -> dict[str, Any]:
        return {k: v.model_dump() for k, v in self.usage.items()}


def require_text_scorers(strategy: str, scorers: Sequence[Scorer]) -> None:
    """Step-level search needs scorers that judge text: a partial answer assembled from steps has no sampled
    tokens of its own for a confidence scorer to read."""
    if not scorers:
        raise UserError(f"{strategy} ranks partial answers by a scorer (a process reward model or the judge), "
                        "and no scorer was given: choose one with --scorer")
    readers = [s.name for s in scorers if s.reads_sampled_tokens]
    if readers:
        raise UserError(f"{strategy} scores partial answers, and scorer(s) {', '.join(readers)} read the token "
                        "log-probabilities of whole samples: use a judge or a reward model")


class StepSearchStrategy(Strategy):
    """A step-level search: its scorers are checked before any engine starts."""

    config: StepSearchConfig

    def check_scorers(self, scorers: list[Scorer]) -> None:
        require_text_scorers(self.name, scorers)


class StepSearch:
    """One problem's step-level search machinery: step generation, lookahead, scoring and the result."""

    def __init__(self, problem: Problem, ctx: StrategyContext, cfg: StepSearchConfig, strategy: str):
        require_text_scorers(strategy, ctx.scorers)
        self.problem, self.ctx, self.cfg, self.strategy = problem, ctx, cfg, strategy
        self.fmt = cfg.step_format
        self.answer_cap = cfg.answer_max_tokens or ctx.sampling.max_tokens
        self.phases = Phases()
        self.engine_calls: dict[str, int] = {}

    # ---- generation -----------------------------------------------------------------------------
    async def _generate(self, phase: str, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if not requests:
            return []
        out = await self.ctx.generate(with_request_seeds(requests, self.ctx.rng))
        self.phases.add(phase, usage_of(out, self.ctx.backend.parameter_count))
        self.engine_calls[phase] = self.engine_calls.get(phase, 0) + 1
        return out

    def _request(self, state: StepState, n: int, *, final: bool, greedy: bool = False) -> GenerationRequest:
        cfg = self.cfg
        left = max(self.answer_cap - state.token_count, 1)
        update: dict[str, Any] = {"n": n, "logprobs": True, "top_logprobs": 0,
                                  "max_tokens": left if final else min(cfg.step_max_tokens, left)}
        if greedy:
            update["temperature"] = 0.0
        elif cfg.temperature is not None:
            update["temperature"] = cfg.temperature
        # A step never ends on its first token (a blank line joins the next step); the last one has no stop.
        update["stop"] = () if final else (self.fmt.delimiter,)
        update["min_tokens"] = 0 if final else max(self.ctx.sampling.min_tokens, 1)
        return GenerationRequest(prompt=self.problem.prompt, sampling=self.ctx.sampling.model_copy(update=update),
                                 continuation=state.text)

    def _step(self, state: StepState, sample: Sample, final: bool) -> Step:
        step = step_from_sample(sample, self.fmt)
        if final or state.token_count + step.token_count >= self.answer_cap:
            step = step.model_copy(update={"finished": True})
        return step

    async def next_steps(self, tracks: Sequence[Track], counts: Sequence[int], final: bool) -> list[list[Step]]:
        """`counts[i]` candidate next steps for each open track, in one engine call (`final`: to the end).

        Tracks with the same text (resampled copies of one particle) go as ONE request with n = their
        copies: the engine prefills the shared text once and forks the samples, where separate
        requests submitted together would each prefill it (the prefix cache only serves what an
        earlier step already computed).
        """
        if any(t.finished for t, k in zip(tracks, counts) if k > 0):
            raise ValueError("a finished track cannot be extended")
        groups: dict[str, list[int]] = {}
        for i, (t, k) in enumerate(zip(tracks, counts)):
            if k > 0:
                groups.setdefault(t.text, []).append(i)
        members = list(groups.values())
        out = await self._generate("steps", [self._request(tracks[m[0]].state, sum(counts[i] for i in m),
                                                           final=final) for m in members])
        steps: list[list[Step]] = [[] for _ in tracks]
        for m, samples in zip(members, out):
            it = iter(samples)
            for i in m:
                steps[i] = [self._step(tracks[i].state, next(it), final) for _ in range(counts[i])]
        return steps

    async def look_ahead(self, states: Sequence[StepState]) -> list[str]:
        """`lookahead` greedy steps past each state (one call per lookahead step for all): the text the
        scorers see beyond each state, empty for finished states or lookahead 0."""
        extra = ["" for _ in states]
        heads = list(states)
        for _ in range(self.cfg.lookahead):
            open_ = [i for i, s in enumerate(heads) if not s.finished]
            if not open_:
                break
            out = await self._generate("lookahead", [self._request(heads[i], 1, final=False, greedy=True)
                                                     for i in open_])
            for i, samples in zip(open_, out):
                step = self._step(heads[i], samples[0], final=False)
                heads[i] = heads[i].extend(step)
                extra[i] += step.written
        return extra

    # ---- scoring --------------------------------------------------------------------------------
    async def score_steps(self, states: Sequence[StepState]) -> list[tuple[float, ...]]:
        """Each scorer's score of each state's last step (with lookahead text appended when asked):
        one scoring call per scorer for all states, the scorers concurrently."""
        if not states:
            return []
        texts = [s.text + extra for s, extra in zip(states, await self.look_ahead(states))]
        partials = [Candidate(text=t) for t in texts]
        sctx = ScoringContext(policy=self.ctx.backend, usage=self.ctx.usage)
        per_scorer = await asyncio.gather(*(s.score_last_steps(self.problem, partials, sctx)
                                            for s in self.ctx.scorers))
        self.engine_calls["scoring"] = self.engine_calls.get("scoring", 0) + 1
        for scorer, scores in zip(self.ctx.scorers, per_scorer):
            if len(scores) != len(states):
                raise RuntimeError(f"scorer {scorer.name!r} returned {len(scores)} step scores for {len(states)} "
                                   "partial answers")
        return [tuple(min(max(float(scores[i]), 0.0), 1.0) for scores in per_scorer) for i in range(len(states))]

    async def extend(self, tracks: Sequence[Track], steps: Sequence[Step]) -> list[Track]:
        """Each track extended by its step, the step scored (one scoring call for all)."""
        states = [t.state.extend(s) for t, s in zip(tracks, steps)]
        scores = await self.score_steps(states)
        return [Track(state, t.step_scores + (sc,), t.origin) for t, state, sc in zip(tracks, states, scores)]

    # ---- the answer -----------------------------------------------------------------------------
    def candidate(self, track: Track) -> Candidate:
        """A finished (or abandoned) track as a candidate, one verdict per scorer from its step scores."""
        state, how = track.state, self.cfg.aggregation
        verdicts = []
        for j, scorer in enumerate(self.ctx.scorers):
            steps = track.scores_of(j)
            score = aggregate(steps, how)
            shown = ", ".join(f"{s:.2f}" for s in steps)
            verdicts.append(Verdict(verifier=scorer.label, score=min(max(score, 0.0), 1.0), step_scores=steps,
                                    feedback=f"{self.strategy}: step scores [{shown}]; {how}: {score:.2f}"))
        last = state.steps[-1] if state.steps else None
        return Candidate(text=state.text, answer=self.ctx.answers.extract_answer(state.text, self.problem),
                         completion_tokens=state.token_count,
                         mean_logprob=state.logprob_sum / state.token_count if state.token_count else None,
                         finish_reason=last.finish_reason if last else None, verdicts=verdicts,
                         info={"steps": state.depth, "finished": track.finished, "origin": track.origin})

    def finish(self, tracks: Sequence[Track], temperature: float = 1.0, **info: Any) -> Result:
        """Pick the answer among the final tracks (`final` option; `sample` draws by softmax(logit(score) /
        temperature)) and build the Result."""
        candidates = [self.candidate(t) for t in tracks]
        scores = [t.score(self.cfg.aggregation) for t in tracks]
        groups = None
        if self.cfg.final == "weighted-vote":
            groups = selection.Groups.of_answers([c.answer for c in candidates], self.ctx.answers.equivalent)
            pick = selection.weighted_vote(groups, scores)
        elif self.cfg.final == "sample":
            probs = softmax_of_logits(scores, temperature)
            chosen = int(self.ctx.rng.choices(range(len(tracks)), weights=probs.tolist())[0]) if tracks else None
            pick = selection.Selection(chosen=chosen, tied=[] if chosen is None else [chosen],
                                       confidence=None if chosen is None else scores[chosen])
        else:
            pick = selection.best_of_n(scores, [c.mean_logprob for c in candidates])
        compute = flops_report(self.ctx.usage, self.ctx.backend.parameter_count)
        return self.ctx.finish_choice(
            self.problem, self.strategy, candidates, pick, groups, scores=scores,
            scorers=[s.label for s in self.ctx.scorers], final=self.cfg.final,
            phase_usage=self.phases.dump(), engine_calls=dict(self.engine_calls), compute=compute, **info)


# ---- weights --------------------------------------------------------------------------------------

# Rewards are clipped away from 0 and 1 before the logit (its_hub clips at 1e-7, the PF authors' code at machine
# epsilon; 1e-6 keeps a reward of exactly 0 or 1 from dominating every draw by a factor above 1e12).
LOGIT_EPS = 1e-6


def logit(score: float, eps: float = LOGIT_EPS) -> float:
    r = min(max(score, eps), 1.0 - eps)
    return math.log(r) - math.log1p(-r)


def softmax_of_logits(scores: Sequence[float], temperature: float) -> np.ndarray:
    """softmax(logit(r) / temperature): the particle weights of Puri et al. 2025 (uniform when all equal)."""
    if not scores:
        return np.zeros(0)
    w = np.array([logit(s) for s in scores]) / temperature
    w = np.exp(w - w.max())
    return w / w.sum()


def replicate(count: int, total: int) -> list[int]:
    """How many copies each of `count` survivors gets so that `total` tracks result, cyclically (the
    first `total % count` get one more): search-and-learn's `(active * repeats)[:n]`."""
    if count <= 0:
        return []
    return [total // count + (1 if i < total % count else 0) for i in range(count)]
