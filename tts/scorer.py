"""The scorer contract: score many candidates of one problem at once, asynchronously (docs/scorers.md).

A scorer (verifier, LLM judge, reward model, confidence measure) takes one problem and many candidates,
whole solutions or partial ones cut at step boundaries, and returns one `Verdict` each: a score in
[0, 1], per-step scores for process scorers, and feedback text where it has some. Scorers that run a
model send every request of a batch in one engine call (`ScoringContext.generate`), so the requests of
all problems in flight reach the engine together, as generation requests do; their tokens and FLOPs
are counted apart from generation (`Usage.scorer_*`). Blocking scorers (the code verifiers) keep their
work in threads (`VerifierScorer`).

Scorers are plugins (entry-point group `tts.scorers`), chosen with `tts eval --scorer NAME` and
`--scorer-option KEY=VALUE`; their name and options are part of a run's identity.
"""

from __future__ import annotations

import asyncio
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.types import Candidate, GenerationRequest, Problem, Sample, Usage, Verdict

if TYPE_CHECKING:
    from tts.backends.base import Backend
    from tts.verifier import Verifier

Aggregation = Literal["last", "min", "prod", "mean"]
DEFAULT_STEP_SEPARATOR = "\n\n"


class ScorerOptions(BaseModel):
    """A scorer's declared options; a scorer subclasses this (as its `Options`) to declare its own.

    Options are validated here (an unknown key or a bad value is one line, exit 2), listed by `tts list`
    with their defaults, and recorded in config.json (`scorers`) as part of the run's identity, except
    those in `outside_identity` (settings that change how scores are fetched, not what they are).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    outside_identity: ClassVar[frozenset[str]] = frozenset()

    label: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\[\]=-]+$",
                              description="the name its verdicts carry (default: the scorer's name); a distinct "
                                          "label lets one scorer be recorded twice with other options")


@dataclass
class ScoringContext:
    """What a scorer may touch while scoring one problem's candidates.

    `policy`: the backend that generated the candidates (a judge's default model). `usage`: the
    problem's usage, where scoring requests are counted apart from generation.
    """

    policy: Backend
    usage: Usage

    async def generate(self, backend: Backend, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """One engine call for a batch of scoring requests, counted as scorer cost."""
        if not requests:
            return []
        out = await backend.generate(requests)
        self.usage.scorer_calls += 1
        for samples in out:
            self.usage.add_scoring(samples, backend.parameter_count)
        return out


class Scorer(ABC):
    """Scores candidates of one problem; `level` says whether it judges whole solutions or steps."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    # "outcome": one score per solution; "process": per-step scores aggregated into the score (an instance
    # may set it from its options, e.g. the judge's `level`).
    level: Literal["outcome", "process"] = "outcome"
    # Top-k log-probabilities per generated token the scorer reads from the candidates' samples (confidence
    # scorers); strategies that sample for it ask the backend for them. 0: none.
    top_logprobs_needed: int = 0
    # Whether it reads the candidates' sampled tokens (their log-probabilities), not only their text: such a
    # scorer cannot judge a partial answer that step-level search assembled from steps.
    reads_sampled_tokens: ClassVar[bool] = False
    # Whether it may call a model (the policy or its own): `tts rescore` starts no engine when none does.
    calls_model: ClassVar[bool] = True

    def __init__(self, **options: Any):
        self.options = self.Options(**options)

    @abstractmethod
    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        """One verdict per candidate, in order. Model calls go through `ctx.generate` (one per batch)."""

    async def score_last_steps(self, problem: Problem, partials: list[Candidate], ctx: ScoringContext) -> list[float]:
        """Step-level search: each partial solution's score for its LAST step, given every step before it.

        This is the PRM's "model aggregation" of particle filtering (Puri et al. 2025) and what PRM beam
        search reads after each step; a search keeps the earlier steps' scores itself, so a scorer need not
        judge them again. Default: `score` each partial solution and take its last step score (process
        scorers) or its whole score (outcome scorers). A scorer whose `score` would re-judge every earlier
        step with a request of its own (the judge) overrides this to judge only the last one.
        """
        return [last_step_score(v) for v in await self.score(problem, partials, ctx)]

    @property
    def label(self) -> str:
        """The name its verdicts carry: the `label` option, else the scorer's name."""
        return self.options.label or self.name

    def identity(self) -> dict[str, Any]:
        """What config.json records of this scorer: its name and the options that change its scores."""
        outside = type(self.options).outside_identity
        options = {k: v for k, v in self.options.model_dump(mode="json").items() if k not in outside}
        return {"name": self.name, "options": options}

    async def aclose(self) -> None:  # noqa: B027 - nothing to release by default
        """Release an engine or connection the scorer opened itself."""


class VerifierScorer(Scorer):
    """A blocking `Verifier` (code tests, docstring examples) as a scorer: each check runs in a worker thread."""

    name = "verifier"
    description = "a blocking verifier run in worker threads"
    calls_model = False

    def __init__(self, verifier: Verifier | None = None, **options: Any):
        super().__init__(**options)
        if verifier is None:
            verifier = self.build_verifier()
        self.verifier = verifier
        self.name = verifier.name  # type: ignore[misc]  # an instance takes its verifier's name

    def build_verifier(self) -> Verifier:
        raise TypeError(f"{type(self).__name__} needs a verifier")

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        verdicts = await asyncio.gather(*(asyncio.to_thread(self.verifier.verify, problem, c) for c in candidates))
        ctx.usage.verifier_calls += len(candidates)
        return list(verdicts)


def as_scorer(item: Scorer | Verifier) -> Scorer:
    """A scorer as is; a verifier wrapped in `VerifierScorer`."""
    return item if isinstance(item, Scorer) else VerifierScorer(item)


# ---- steps and aggregation ------------------------------------------------------------------------

def split_steps(text: str, separator: str = DEFAULT_STEP_SEPARATOR) -> list[str]:
    """A solution cut into steps at `separator` (search-and-learn: a blank line), empty steps dropped.

    Steps keep no separator; `"".join` of `step_prefixes` rebuilds each prefix exactly as written.
    """
    return [s for s in (part.strip() for part in text.split(separator)) if s]


def step_prefixes(text: str, separator: str = DEFAULT_STEP_SEPARATOR) -> list[str]:
    """The solution up to the end of each step, as written (so all prefixes share one cached prefix)."""
    out, pos = [], 0
    pieces = re.split(f"({re.escape(separator)})", text) if separator else [text]
    for piece in pieces:
        pos += len(piece)
        if piece != separator and piece.strip():
            out.append(text[:pos])
    return out


def last_step_score(verdict: Verdict) -> float:
    """The score of a verdict's last step (process scorers), else its whole score; 0 with no step."""
    if verdict.step_scores is not None:
        return float(verdict.step_scores[-1]) if verdict.step_scores else 0.0
    return float(verdict.score)


def aggregate(scores: Sequence[float], how: Aggregation) -> float:
    """One score from per-step scores: the last step's, the minimum, the product or the mean.

    An empty list (a solution with no step) scores 0: nothing in it was judged correct.
    """
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ValueError(f"unknown aggregation {how!r}")
