"""Typed data that crosses module boundaries (docs/architecture.md).

Everything a strategy, verifier, task or backend hands to another module is one of these
pydantic models, so a run folder can always be read back into the same types.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tts.confidence import token_confidence


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
    top_logprobs: int = Field(0, ge=0, le=20, description="also return the k most likely tokens at each generated "
                              "position with their log-probabilities (judges, confidence scorers); 0: none")


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
    top_logprobs: list[dict[str, float]] | None = Field(
        None, description="when asked (SamplingConfig.top_logprobs = k): for each generated token, the k most "
        "likely tokens (their text) and log-probabilities, most likely first")
    tokens: list[str] | None = Field(
        None, description="the sampled tokens' texts, where the backend reports them (an OpenAI-compatible server "
        "with logprobs); lets a watched sample generated whole be cut at a token (Backend.generate_watched)")

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
    step_scores: list[float] | None = Field(None, description="process scorers: one score in [0, 1] per step")
    isolation: str | None = Field(None, description="code verifiers: the sandbox isolation the program ran under")


def _pack(values: Sequence[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float64)


class TokenTrace(BaseModel):
    """A sample's per-token numbers, stored compactly (base64 of little-endian float32: 4 bytes a token).

    `logprobs`: the sampled token's log-probability at each position. `confidence`: DeepConf's token
    confidence, the mean negative log-probability of the k most likely tokens at each position
    (Fu et al. 2025, "Deep Think with Confidence"), with `k` recorded. Built once when the sample comes
    back; the token texts behind it are not kept.
    """

    model_config = ConfigDict(frozen=True)

    k: int = Field(ge=1)
    logprobs: str = ""
    confidence: str = ""

    @classmethod
    def from_sample(cls, sample: Sample) -> TokenTrace | None:
        if not sample.top_logprobs:
            return None
        k = max(len(top) for top in sample.top_logprobs)
        conf = [token_confidence(top) for top in sample.top_logprobs]
        lps = sample.token_logprobs if sample.token_logprobs is not None else []
        return cls(k=max(k, 1), logprobs=_pack(lps), confidence=_pack(conf))

    def token_logprobs(self) -> np.ndarray:
        return _unpack(self.logprobs)

    def token_confidence(self) -> np.ndarray:
        return _unpack(self.confidence)


class Candidate(BaseModel):
    """A sample as a strategy judged it: its text, extracted answer and every scorer's verdict."""

    text: str
    answer: str | None = None
    completion_tokens: int = 0
    mean_logprob: float | None = None
    finish_reason: str | None = None
    verdicts: list[Verdict] = Field(default_factory=list)
    trace: TokenTrace | None = Field(None, description="per-token log-probabilities and top-k confidence, kept "
                                     "when the sample was drawn with top_logprobs (confidence scorers read it)")
    info: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_sample(cls, sample: Sample, answer: str | None, **kw: Any) -> Candidate:
        return cls(
            text=sample.text,
            answer=answer,
            completion_tokens=sample.token_count,
            mean_logprob=sample.mean_logprob,
            finish_reason=sample.finish_reason,
            trace=TokenTrace.from_sample(sample),
            **kw,
        )

    @property
    def selection_passed(self) -> bool | None:
        """True if every verdict with a pass flag passed, False if one failed, None if none has a flag."""
        flags = [v.passed for v in self.verdicts if v.passed is not None]
        if not flags:
            return None
        return all(flags)


class Usage(BaseModel):
    """Compute a strategy spent, counted honestly (docs/architecture.md, "Count compute honestly").

    Generation and scoring are counted apart: `prompt_tokens`, `cached_tokens`, `completion_tokens` and
    `backend_calls` are the generator's; the `scorer_*` fields are what judges and reward models spent.
    FLOPs follow the usual estimate 2 x parameters x tokens processed: `*_flops` discounts the prompt
    tokens the prefix cache served, `*_flops_no_cache` does not. A FLOPs field is None (unknown) once
    any of its requests went to a model of unknown size (an HTTP server that does not say).
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    backend_calls: int = 0
    verifier_calls: int = 0
    scorer_prompt_tokens: int = 0
    scorer_cached_tokens: int = 0
    scorer_completion_tokens: int = 0
    scorer_calls: int = 0
    generator_flops: float | None = 0.0
    generator_flops_no_cache: float | None = 0.0
    scorer_flops: float | None = 0.0
    scorer_flops_no_cache: float | None = 0.0
    wall_time: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: _plus(getattr(self, k), getattr(other, k)) for k in Usage.model_fields})

    def add_request(self, samples: list[Sample], parameters: int | None = None) -> None:
        """Count one generation request's samples: its prompt once (n samples share one prefill), every
        completion token; FLOPs with the generator's parameter count (None: unknown)."""
        prompt, cached, completion = _tokens(samples)
        self.prompt_tokens += prompt
        self.cached_tokens += cached
        self.completion_tokens += completion
        self.generator_flops = _plus(self.generator_flops, _flops(parameters, prompt - cached + completion))
        self.generator_flops_no_cache = _plus(self.generator_flops_no_cache, _flops(parameters, prompt + completion))

    def add_scoring(self, samples: list[Sample], parameters: int | None = None) -> None:
        """Count one scoring request (a judge's or reward model's) apart from generation."""
        prompt, cached, completion = _tokens(samples)
        self.scorer_prompt_tokens += prompt
        self.scorer_cached_tokens += cached
        self.scorer_completion_tokens += completion
        self.scorer_flops = _plus(self.scorer_flops, _flops(parameters, prompt - cached + completion))
        self.scorer_flops_no_cache = _plus(self.scorer_flops_no_cache, _flops(parameters, prompt + completion))


def _tokens(samples: list[Sample]) -> tuple[int, int, int]:
    if not samples:
        return 0, 0, 0
    return samples[0].prompt_tokens, samples[0].cached_tokens, sum(s.token_count for s in samples)


def _flops(parameters: int | None, tokens: int) -> float | None:
    return None if parameters is None else 2.0 * parameters * tokens


def _plus(a: Any, b: Any) -> Any:
    """a + b where None (an unknown FLOPs count) absorbs: a total with an unknown part is unknown."""
    return None if a is None or b is None else a + b


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
