"""Step-wise generation, shared by step-level strategies (φ-Decoding, docs/algorithms/phi-decoding.md; later
PRM beam search and particle filtering).

A *step* is one line of the answer: the model continues a partial answer (`GenerationRequest.continuation`)
until the delimiter (default "\n", as φ-Decoding; search-and-learn uses "\n\n"). vLLM leaves a matched stop
string out of the text (its default) but counts the token that held it (and drops whatever that token held
after it), so a step that stopped at the delimiter is written back as its text plus the delimiter: the
steps of a state concatenate into exactly the text the model wrote, up to each stop. A line cut by the
token cap (finish reason "length") gets no delimiter, so the next step continues the same line.

An answer is finished when a step holds the end marker, matches the answer pattern (default: "the answer
is", "\\boxed{", "####"), or the engine reports that it stopped on the end-of-sequence token.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tts.types import GenerationRequest, Prompt, Sample, SamplingConfig, Usage

DEFAULT_DELIMITER = "\n"
DEFAULT_ANSWER_PATTERN = r"(?i)\b(?:the|final) answer is\b|\\boxed\s*\{|^\s*####"


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE)


class StepFormat(BaseModel):
    """What a step is and how to tell that an answer has ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delimiter: str = Field(DEFAULT_DELIMITER, min_length=1, description="a step ends at this string")
    answer_pattern: str | None = Field(
        DEFAULT_ANSWER_PATTERN, description="regex (multiline); a step that matches it ends the answer"
    )
    end_marker: str | None = Field(
        None, description="text a prompt asks the model to end with (the φ-Decoding prompt: <end_of_reasoning>); "
        "rollouts stop there and a step holding it ends the answer"
    )

    @field_validator("answer_pattern")
    @classmethod
    def _valid_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                _compiled(pattern)
            except re.error as exc:
                raise ValueError(f"answer_pattern is not a valid regular expression: {exc}") from None
        return pattern

    @field_validator("end_marker")
    @classmethod
    def _non_empty_marker(cls, marker: str | None) -> str | None:
        return marker or None

    def holds_answer(self, text: str) -> bool:
        return self.answer_pattern is not None and _compiled(self.answer_pattern).search(text) is not None

    def cut_at_end_marker(self, text: str) -> tuple[str, bool]:
        """The text before the end marker, and whether the marker was there."""
        if self.end_marker and self.end_marker in text:
            return text[: text.index(self.end_marker)], True
        return text, False

    @property
    def rollout_stop(self) -> tuple[str, ...]:
        """Stop strings for a generation that runs to the end of the answer."""
        return (self.end_marker,) if self.end_marker else ()


class Step(BaseModel):
    """One generated step and its log-probability."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(description="as generated, without the delimiter")
    delimiter: str = Field("", description="written after the text: the delimiter where the generation stopped on it")
    token_count: int = Field(0, ge=0)
    logprob_sum: float = 0.0
    finished: bool = Field(False, description="the answer ends with this step")
    finish_reason: str | None = None

    @property
    def written(self) -> str:
        """The step as it stands in the answer text."""
        return self.text + self.delimiter

    @property
    def mean_logprob(self) -> float:
        """mlogp of the step (mean token log-prob); 0 for an empty generation, like the reference's 1e-8 guard."""
        return self.logprob_sum / self.token_count if self.token_count else 0.0


class StepState(BaseModel):
    """A partial answer (a beam, a particle): the text the model continues, and the steps that built it."""

    model_config = ConfigDict(frozen=True)

    prefix: str = Field("", description="text placed before the first step (not generated)")
    steps: tuple[Step, ...] = ()

    @property
    def text(self) -> str:
        return self.prefix + "".join(s.written for s in self.steps)

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def finished(self) -> bool:
        return bool(self.steps) and self.steps[-1].finished

    @property
    def token_count(self) -> int:
        return sum(s.token_count for s in self.steps)

    @property
    def logprob_sum(self) -> float:
        return sum(s.logprob_sum for s in self.steps)

    @property
    def cumulative_logprobs(self) -> list[float]:
        """Log-probability of the answer after each step."""
        total, out = 0.0, []
        for s in self.steps:
            total += s.logprob_sum
            out.append(total)
        return out

    def extend(self, step: Step) -> StepState:
        if self.finished:
            raise ValueError("cannot extend a finished answer")
        return self.model_copy(update={"steps": self.steps + (step,)})


def stopped_at_eos(sample: Sample) -> bool:
    """Whether the sample ended on its end-of-sequence token (finish "stop" with no stop string matched)."""
    return sample.finish_reason == "stop" and sample.stop_reason is None


def step_from_sample(sample: Sample, fmt: StepFormat) -> Step:
    """A generated step, with the delimiter written back where the generation stopped on it.

    Engines leave the matched stop string out of the text; `Sample.stop_reason` says which one matched
    (None at EOS or the token cap), so the step's exact text, delimiter included, can be rebuilt.
    """
    text, marked = fmt.cut_at_end_marker(sample.text)
    finished = marked or stopped_at_eos(sample) or fmt.holds_answer(text)
    on_delimiter = sample.stop_reason == fmt.delimiter and not marked
    return Step(
        text=text,
        delimiter=fmt.delimiter if on_delimiter else "",
        token_count=sample.token_count,
        logprob_sum=sample.logprob_sum or 0.0,
        finished=finished,
        finish_reason=sample.finish_reason,
    )


def ended_without_text(sample: Sample) -> bool:
    """A run-to-the-end continuation that stopped (not cut by the cap) before writing anything: the answer
    had already ended (EOS or end marker right away)."""
    return sample.finish_reason != "length" and not sample.text.strip()


def next_step_requests(
    prompt: Prompt, states: Sequence[StepState], sampling: SamplingConfig, fmt: StepFormat
) -> list[GenerationRequest]:
    """One request per state, each for `sampling.n` candidate next steps (generation stops at the delimiter)."""
    # min_tokens=1: a step never ends on its first token, so a blank line (a "\n" right after the
    # delimiter) joins the next step instead of being an empty step of its own.
    cfg = sampling.model_copy(update={"stop": (fmt.delimiter,), "min_tokens": max(sampling.min_tokens, 1)})
    return [GenerationRequest(prompt=prompt, sampling=cfg, continuation=s.text) for s in states]


def rollout_requests(
    prompt: Prompt, continuations: Sequence[str], sampling: SamplingConfig, fmt: StepFormat
) -> list[GenerationRequest]:
    """One request per partial answer, run to the end of the answer (foresight rollouts, final completions)."""
    cfg = sampling.model_copy(update={"stop": fmt.rollout_stop})
    return [GenerationRequest(prompt=prompt, sampling=cfg, continuation=c) for c in continuations]


def with_request_seeds(requests: list[GenerationRequest], rng: random.Random) -> list[GenerationRequest]:
    """Give each seeded request its own seed drawn from `rng`.

    Beams often share a prefix; one seed for all would make them sample the same steps on engines that
    honour per-request seeds. Requests without a seed are left alone (the engine's own seed rules).
    """
    out = []
    for req in requests:
        if req.sampling.seed is not None:
            req = req.model_copy(update={"sampling": req.sampling.model_copy(update={"seed": rng.randrange(2**31)})})
        out.append(req)
    return out


def usage_of(outputs: Sequence[Sequence[Sample]], parameters: int | None = None) -> Usage:
    """Tokens of one generate call's outputs, counted like `StrategyContext.generate` counts them."""
    usage = Usage(backend_calls=1)
    for samples in outputs:
        usage.add_request(list(samples), parameters)
    return usage


def flops_report(usage: Usage, parameter_count: int | None) -> dict[str, Any]:
    """Tokens and the FLOPs estimate 2 x parameters x tokens processed (forward passes only).

    `flops_with_prefix_cache` counts only prompt tokens the engine computed (prompt - cached) plus the
    generated ones; `flops_without_prefix_cache` counts every prompt token, as an engine without a prefix
    cache would compute them. None where the backend cannot tell its parameter count.
    """
    computed = usage.prompt_tokens - usage.cached_tokens + usage.completion_tokens
    every = usage.prompt_tokens + usage.completion_tokens
    return {
        "parameters": parameter_count,
        "generated_tokens": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "cached_prompt_tokens": usage.cached_tokens,
        "processed_tokens_with_prefix_cache": computed,
        "processed_tokens_without_prefix_cache": every,
        "flops_with_prefix_cache": 2 * parameter_count * computed if parameter_count else None,
        "flops_without_prefix_cache": 2 * parameter_count * every if parameter_count else None,
    }
