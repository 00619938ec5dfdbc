"""Typed data that crosses module boundaries (docs/architecture.md).

Everything a strategy, verifier, task or backend hands to another module is one of these
pydantic models, so a run folder can always be read back into the same types.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


# A prompt is raw text (sent as is) or chat messages (the backend applies the model's chat
# template when it has one, else renders them as plain "Role: text" turns).
Prompt = str | list[ChatMessage]


class SamplingConfig(BaseModel):
    """How to sample; the same fields for every backend."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(1, ge=1, description="samples per prompt")
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    stop: tuple[str, ...] = ()
    min_tokens: int = Field(0, ge=0, description="tokens to generate before a stop string or EOS may end the sample")
    seed: int | None = Field(None, description="per-request seed; honoured where the engine supports it")
    logprobs: bool = Field(True, description="return the sampled tokens' log-probabilities")


class GenerationRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: Prompt
    sampling: SamplingConfig = SamplingConfig()
    continuation: str = Field(
        "", description="text of the answer so far, which the model continues (step-wise search); "
        "for chat prompts it opens the assistant turn"
    )


class Sample(BaseModel):
    """One generated continuation, as the backend returned it."""

    text: str
    token_count: int = Field(ge=0)
    logprob_sum: float | None = None
    token_logprobs: list[float] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = Field(
        None, description="the stop string (or token id) that ended the sample; None at EOS or the token cap"
    )
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def mean_logprob(self) -> float | None:
        """Length-normalised log-probability (`mlogp` in docs/algorithms/)."""
        if self.logprob_sum is None or self.token_count == 0:
            return None
        return self.logprob_sum / self.token_count


class Problem(BaseModel):
    """What a strategy sees of a benchmark record. It never holds the reference answer or hidden tests."""

    id: str
    task: str
    kind: Literal["math", "code", "text"] = "math"
    question: str
    prompt: Prompt
    entry_point: str | None = Field(None, description="code tasks: the function under test")
    public_tests: list[str] = Field(
        default_factory=list,
        description=("code tasks: assert statements taken from the prompt's own examples "
                     "(what a deployed system could see)"),
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class Reference(BaseModel):
    """The hidden part of a record: seen only by the task's oracle, after the strategy has answered."""

    answer: str | None = None
    tests: str | None = None
    solution: str | None = None


class TaskItem(BaseModel):
    problem: Problem
    reference: Reference


class Verdict(BaseModel):
    verifier: str
    score: float = Field(ge=0.0, le=1.0)
    passed: bool | None = None
    feedback: str = ""
    isolation: str | None = Field(None, description="code verifiers: the sandbox isolation the program ran under")


class Candidate(BaseModel):
    """A sample as a strategy judged it: its text, extracted answer and the selection verifiers' verdicts."""

    text: str
    answer: str | None = None
    completion_tokens: int = 0
    mean_logprob: float | None = None
    finish_reason: str | None = None
    verdicts: list[Verdict] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_sample(cls, sample: Sample, answer: str | None, **kw: Any) -> Candidate:
        return cls(
            text=sample.text,
            answer=answer,
            completion_tokens=sample.token_count,
            mean_logprob=sample.mean_logprob,
            finish_reason=sample.finish_reason,
            **kw,
        )

    @property
    def selection_passed(self) -> bool | None:
        """True if every selection verdict passed, False if one failed, None if there were none."""
        flags = [v.passed for v in self.verdicts if v.passed is not None]
        if not flags:
            return None
        return all(flags)


class Usage(BaseModel):
    """Compute a strategy spent, counted honestly (docs/architecture.md, "Count compute honestly")."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    backend_calls: int = 0
    verifier_calls: int = 0
    wall_time: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})

    def add_request(self, samples: list[Sample]) -> None:
        """Count one request's samples: its prompt once (n samples share one prefill), every completion token."""
        if samples:
            self.prompt_tokens += samples[0].prompt_tokens
            self.cached_tokens += samples[0].cached_tokens
        self.completion_tokens += sum(s.token_count for s in samples)


class Result(BaseModel):
    """What a strategy returns for one problem: the choice, every candidate behind it, and the cost."""

    problem_id: str
    strategy: str
    answer: str | None
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    chosen: int | None = Field(None, description="index into candidates of the chosen one")
    candidates: list[Candidate] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    info: dict[str, Any] = Field(default_factory=dict)

    @property
    def text(self) -> str | None:
        if self.chosen is None:
            return None
        return self.candidates[self.chosen].text


def finite_or_none(x: float | None) -> float | None:
    """JSON has no NaN/inf: store those as null."""
    if x is None or not math.isfinite(x):
        return None
    return x
