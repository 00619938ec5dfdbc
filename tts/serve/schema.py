"""What crosses the HTTP boundary: the server's settings, the request bodies and the model-name scheme.

Request models forbid unknown fields: an OpenAI field this server cannot honour (tools, logprobs,
penalties) is a 400 naming it, never silently ignored. The `tts` extension field carries what the model
string cannot say comfortably (scorer options, what to include in the answer, progress events).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

INCLUDE = ("candidates", "info")
# Splits "n=8,scorers=judge" at the commas that start a new KEY=, so JSON values may hold commas.
_OPTION_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.\-]*\s*=)")


class ServeSettings(BaseModel):
    """The server's limits and defaults (`tts serve` flags)."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent: int = Field(64, ge=1, description="searches running at once")
    max_queue: int = Field(256, ge=0, description="searches waiting for a slot; beyond this: 429")
    max_budget: int = Field(64, ge=1, description="largest strategy n a request may ask for")
    max_tokens: int = Field(4096, ge=1, description="largest max_tokens (per sample) a request may ask for")
    default_max_tokens: int = Field(512, ge=1, description="max_tokens of a request that gives none (capped)")
    api_key: str | None = Field(None, min_length=1, description="Bearer token every /v1 route requires; None: open")
    seed: int = Field(0, description="the problem RNG's seed for requests without `seed`")
    disconnect_poll: float = Field(0.25, gt=0, description="seconds between checks that the client is still there")


class ModelSpec(BaseModel):
    """A parsed `STRATEGY[:KEY=VALUE,...]`: strategy options, and the reserved `scorers` key apart."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    options: dict[str, Any] = Field(default_factory=dict)
    scorers: list[str] | None = None
    scorer_options: dict[str, Any] = Field(default_factory=dict)


def parse_value(text: str) -> Any:
    """A value as JSON, else the string itself (as `-o KEY=VALUE` on the command line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_scorers(value: Any) -> list[str]:
    """`judge+mean-logprob` (or a list) -> names; `none` -> []."""
    names = value if isinstance(value, list) else str(value).split("+")
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise ValueError(f"scorers: expected names joined by '+', got {value!r}")
    return [] if names == ["none"] else names


def parse_model(model: str) -> ModelSpec:
    """`self-consistency:n=8,scorers=judge,judge.votes=4` -> ModelSpec. Dashes in keys become underscores;
    a dotted key (`judge.votes`) is a scorer option. ValueError says what is wrong."""
    strategy, _, rest = model.strip().partition(":")
    if not strategy.strip():
        raise ValueError(f"model {model!r} names no strategy; expected STRATEGY[:KEY=VALUE,...]")
    spec = ModelSpec(strategy=strategy.strip())
    if not rest.strip():
        return spec
    for part in _OPTION_SPLIT.split(rest):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"model {model!r}: expected KEY=VALUE after the strategy, got {part!r}")
        if key == "scorers":
            spec.scorers = split_scorers(value.strip())
        elif "." in key:
            spec.scorer_options[key] = parse_value(value.strip())
        elif key in spec.options:
            raise ValueError(f"model {model!r}: option {key!r} is given twice")
        else:
            spec.options[key] = parse_value(value.strip())
    return spec


class TTSRequest(BaseModel):
    """The request's `tts` extension field (the openai client: `extra_body={"tts": {...}}`)."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(None, description="the strategy; given, the `model` field is not interpreted")
    options: dict[str, Any] = Field(default_factory=dict, description="strategy options, over the model string's")
    scorers: list[str] | None = Field(None, description="scorer names ([] or ['none']: no scorer)")
    scorer_options: dict[str, Any] = Field(default_factory=dict, description="KEY or NAME.KEY -> value")
    include: list[Literal["candidates", "info"]] = Field(default_factory=list)
    progress: bool = Field(False, description="streaming: progress events while the search runs")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    """A chat message; `developer` is OpenAI's newer name for `system`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Common(BaseModel):
    """The fields both endpoints share: sampling (mapped to SamplingConfig) and the extensions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="an end-user id for the caller's records; not used")
    tts: TTSRequest = Field(default_factory=TTSRequest)

    @model_validator(mode="after")
    def _stop_strings(self) -> _Common:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if any(not s for s in stops):
            raise ValueError("stop: a stop string is empty")
        return self

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def token_cap(self) -> int | None:
        return self.max_tokens


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_cap(self) -> ChatRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens disagree; give one")
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages: at least one user message is needed")
        return self

    def token_cap(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(_Common):
    prompt: str = Field(min_length=1)
    echo: bool = False

    @model_validator(mode="after")
    def _no_echo(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo: not supported (the answer is the chosen candidate only)")
        return self
