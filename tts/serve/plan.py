"""A request turned into a validated search plan, before anything is generated.

Strategy and options (model string, then the body's `tts` field over it), scorers, sampling and the
server's caps are all checked here; any problem is an `ApiError` (404 for an unknown strategy, 400 for
the rest, with the plugin's own validation message), so a bad request never reaches the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from tts import registry
from tts.errors import UserError
from tts.scorer import Scorer
from tts.serve.errors import ApiError
from tts.serve.schema import ChatRequest, CompletionRequest, ModelSpec, ServeSettings, parse_model, split_scorers
from tts.strategy import Strategy
from tts.task import Task
from tts.types import ChatMessage, Problem, Prompt, SamplingConfig

# Scorer options that give a scorer a model (an engine) of its own: a request may not start engines; the
# server's operator chooses such scorers with --scorer / --scorer-option.
OWN_MODEL_OPTIONS = ("model", "backend", "base_url", "backend_options")
SCORER_CACHE = 32


@dataclass
class Plan:
    strategy_name: str
    strategy: Strategy
    scorers: list[Scorer]
    sampling: SamplingConfig
    seed: int
    problem: Problem
    include: list[str]
    progress: bool

    def options(self) -> dict[str, Any]:
        return self.strategy.config.model_dump(mode="json")


@dataclass
class ScorerPool:
    """The server's own scorers (built at start) and the scorer sets requests asked for, built once each."""

    defaults: list[Scorer]
    built: dict[str, list[Scorer]] = field(default_factory=dict)

    def get(self, names: list[str] | None, options: dict[str, Any]) -> list[Scorer]:
        if names is None and not options:
            return self.defaults
        if names is None:
            if not self.defaults:
                raise ApiError(400, "scorer_options given, but the server has no default scorer: name one with "
                               "`scorers=` in the model or tts.scorers", param="tts.scorer_options")
            names = [s.name for s in self.defaults]
        if not options and [s.name for s in self.defaults] == names:
            return self.defaults
        if names == []:
            if options:
                raise ApiError(400, "scorer_options given with no scorer", param="tts.scorer_options")
            return []
        key = json.dumps([names, options], sort_keys=True, default=repr)
        if key in self.built:
            return self.built[key]
        try:
            scorers = registry.build_scorers(names, list(options.items()))
        except UserError as exc:
            raise ApiError(400, str(exc).replace("--scorer-option", "scorer option").replace("--scorer", "scorer"),
                           param="tts.scorers", code="invalid_scorer") from None
        for scorer in scorers:
            self._refuse_own_model(scorer)
        if len(self.built) < SCORER_CACHE:
            self.built[key] = scorers
        return scorers

    @staticmethod
    def _refuse_own_model(scorer: Scorer) -> None:
        options: BaseModel = scorer.options
        declared = type(options).model_fields
        chosen = [k for k in OWN_MODEL_OPTIONS if k in options.model_fields_set]
        needs_model = "model" in declared and declared["model"].is_required()
        if chosen or needs_model:
            what = f"the option {chosen[0]!r}" if chosen else "a model of its own"
            raise ApiError(400, f"scorer {scorer.name!r} with {what} would start an engine; a request may only use "
                           "scorers on the served model (start the server with --scorer/--scorer-option for others)",
                           param="tts.scorers", code="invalid_scorer")

    async def aclose(self) -> None:
        for scorers in [self.defaults, *self.built.values()]:
            for scorer in scorers:
                await scorer.aclose()


def merged_spec(body: ChatRequest | CompletionRequest) -> ModelSpec:
    """The model string's strategy and options with the body's `tts` field over them."""
    ext = body.tts
    if ext.strategy is not None:
        spec = ModelSpec(strategy=ext.strategy)
    else:
        try:
            spec = parse_model(body.model)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="model") from None
    options = {**spec.options, **{k.replace("-", "_"): v for k, v in ext.options.items()}}
    scorers = spec.scorers
    if ext.scorers is not None:
        try:
            scorers = split_scorers(ext.scorers) if ext.scorers else []
        except ValueError as exc:
            raise ApiError(400, str(exc), param="tts.scorers") from None
    return ModelSpec(strategy=spec.strategy, options=options, scorers=scorers,
                     scorer_options={**spec.scorer_options, **ext.scorer_options})


def build_strategy(spec: ModelSpec, settings: ServeSettings) -> Strategy:
    if spec.strategy not in registry.names("strategies"):
        raise ApiError(404, f"unknown model {spec.strategy!r}: the model names a strategy, one of "
                       f"{', '.join(registry.names('strategies'))} (GET /v1/models)", param="model",
                       code="model_not_found")
    try:
        strategy = registry.build_strategy(spec.strategy, **spec.options)
    except UserError as exc:
        raise ApiError(400, str(exc), param="model", code="invalid_option") from None
    n = strategy.config.n
    if n > settings.max_budget:
        raise ApiError(400, f"n={n} is over this server's budget cap of {settings.max_budget} samples "
                       "(tts serve --max-budget)", param="model", code="budget_too_large")
    return strategy


def sampling_for(body: ChatRequest | CompletionRequest, settings: ServeSettings) -> SamplingConfig:
    if body.n != 1:
        raise ApiError(400, f"n={body.n}: this server answers each request with one chosen completion; the "
                       "search's budget is in the model name, e.g. model='self-consistency:n=8'", param="n")
    cap = body.token_cap()
    if cap is not None and cap > settings.max_tokens:
        raise ApiError(400, f"max_tokens={cap} is over this server's cap of {settings.max_tokens} "
                       "(tts serve --max-tokens)", param="max_tokens")
    fields: dict[str, Any] = {"max_tokens": cap or min(settings.default_max_tokens, settings.max_tokens),
                              "stop": body.stops()}
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if body.top_p is not None:
        fields["top_p"] = body.top_p
    return SamplingConfig(**fields)


def problem_for(body: ChatRequest | CompletionRequest, task: Task, request_id: str) -> Problem:
    """The client's prompt, verbatim, as a problem of the server's task (its kind and answer format)."""
    prompt: Prompt
    if isinstance(body, ChatRequest):
        prompt = [ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
                  for m in body.messages]
        question = next(m.text() for m in reversed(body.messages) if m.role == "user")
    else:
        prompt = question = body.prompt
    return task.make_problem(question, request_id).model_copy(update={"prompt": prompt})


def make_plan(body: ChatRequest | CompletionRequest, task: Task, pool: ScorerPool, settings: ServeSettings,
              request_id: str) -> Plan:
    """Everything checked, nothing generated."""
    spec = merged_spec(body)
    strategy = build_strategy(spec, settings)
    scorers = pool.get(spec.scorers, spec.scorer_options)
    try:
        strategy.check_scorers(scorers)
    except UserError as exc:
        raise ApiError(400, str(exc), param="tts.scorers", code="invalid_scorer") from None
    sampling = sampling_for(body, settings)
    return Plan(strategy_name=spec.strategy, strategy=strategy, scorers=scorers, sampling=sampling,
                seed=settings.seed if body.seed is None else body.seed,
                problem=problem_for(body, task, request_id), include=list(body.tts.include),
                progress=body.tts.progress)
