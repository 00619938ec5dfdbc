"""Every registered plugin keeps the contract, so a new one is tested by being registered.

For each entry point of every `tts.*` group this distribution declares (strategies, tasks, verifiers,
backends, and any group added later): it loads, its key equals the class's `name`, and it subclasses
its kind's base class. Every strategy then runs on the scripted backend with the toy task from
`tts.testing` (small options) and returns a valid `Result`; every task's and backend's declared
options model validates its own defaults, and each of its fields is something the class accepts.
"""

from __future__ import annotations

import importlib
import inspect
import math
from importlib.metadata import distribution

import pytest
from pydantic import BaseModel, Field

from tts import selection
from tts.backends.base import Backend, BackendOptions
from tts.strategy import Strategy, StrategyConfig
from tts.task import Task, TaskOptions
from tts.testing import AnswerPresentVerifier, ScriptedBackend, ToyTask, run_strategy, toy_script
from tts.types import Result
from tts.verifier import Verifier

BASES = {"tts.strategies": Strategy, "tts.tasks": Task, "tts.verifiers": Verifier, "tts.backends": Backend}
# Base classes of groups beyond the core four, imported only when the group has entry points.
MORE_BASES = {"tts.selectors": "tts.study.selectors:StudySelector", "tts.scorers": "tts.scorer:Scorer"}
# Small values for options a strategy may declare (applied only where declared), so every strategy runs
# in well under a second on the scripted backend.
SMALL = {"n": 4, "batch_size": 2, "beams": 2, "candidates": 2, "max_steps": 2, "clusters": 2, "final_clusters": 2,
         "min_paths": 2, "step_max_tokens": 32, "rollout_max_tokens": 32, "final_max_tokens": 32,
         # mixture: two configurations drawing n = 4 between them
         "mixture": {"components": [{"label": "hot", "n": 2, "temperature": 1.0},
                                    {"label": "cold", "n": 2, "temperature": 0.3}]}}


def _entry_points():
    eps = [ep for ep in distribution("tts-toolkit").entry_points if ep.group.startswith("tts.")]
    return sorted(eps, key=lambda ep: (ep.group, ep.name))


ENTRY_POINTS = _entry_points()
STRATEGIES = [ep for ep in ENTRY_POINTS if ep.group == "tts.strategies"]
WITH_OPTIONS = [ep for ep in ENTRY_POINTS if ep.group in ("tts.tasks", "tts.backends")]
SCORERS = [ep for ep in ENTRY_POINTS if ep.group == "tts.scorers"]


def test_every_kind_is_registered():
    groups = {ep.group for ep in ENTRY_POINTS}
    assert set(BASES) <= groups, f"missing entry point groups: {set(BASES) - groups}"


@pytest.mark.parametrize("ep", ENTRY_POINTS, ids=[f"{ep.group}:{ep.name}" for ep in ENTRY_POINTS])
def test_entry_point_loads_and_its_key_is_the_class_name(ep):
    cls = ep.load()
    assert isinstance(cls, type), f"{ep.value} is not a class"
    assert getattr(cls, "name", None) == ep.name, f"{ep.value}.name is {getattr(cls, 'name', None)!r}, key {ep.name!r}"
    description = getattr(cls, "description", None)
    assert isinstance(description, str) and description.strip(), f"{ep.value} has no description"
    base = BASES.get(ep.group)
    if base is None and ep.group in MORE_BASES:
        module, _, attr = MORE_BASES[ep.group].partition(":")
        base = getattr(importlib.import_module(module), attr)
    if base is not None:
        assert issubclass(cls, base), f"{ep.value} is not a {base.__name__}"
        assert not inspect.isabstract(cls), f"{ep.value} leaves abstract methods: {cls.__abstractmethods__}"


def small_options(cls: type[Strategy]) -> dict:
    fields = cls.Config.model_fields
    return {k: v for k, v in SMALL.items() if k in fields}


@pytest.mark.parametrize("ep", STRATEGIES, ids=[ep.name for ep in STRATEGIES])
async def test_strategy_returns_a_valid_result_on_the_scripted_backend(ep):
    cls = ep.load()
    assert issubclass(cls.Config, StrategyConfig)
    strategy = cls(**small_options(cls))
    task = ToyTask(selection=[AnswerPresentVerifier()])  # search strategies need a selection verifier
    backend = ScriptedBackend(toy_script)
    result = await run_strategy(strategy, task, backend, problem=3)

    assert isinstance(result, Result)
    Result.model_validate(result.model_dump(mode="json"))  # it survives its own JSON round trip (run folders)
    assert result.problem_id == "toy/3" and result.strategy == ep.name
    assert result.candidates, "no candidates"
    if result.chosen is not None:
        assert 0 <= result.chosen < len(result.candidates)
        assert result.answer == result.candidates[result.chosen].answer
    if result.answer is not None:
        assert task.equivalent(result.answer, result.answer)
    if result.confidence is not None:
        assert 0.0 <= result.confidence <= 1.0
    usage = result.usage
    assert usage.backend_calls == len(backend.calls) >= 1, "generation must go through ctx.generate"
    assert usage.completion_tokens > 0 and math.isfinite(usage.wall_time) and usage.wall_time >= 0
    item = task.load(4)[3]  # the chosen answer can be graded like `tts eval` grades it
    chosen = result.candidates[result.chosen] if result.chosen is not None else None
    if chosen is not None:
        verdict = task.oracle(item.problem, item.reference).verify(item.problem, chosen)
        assert 0.0 <= verdict.score <= 1.0


@pytest.mark.parametrize("ep", WITH_OPTIONS, ids=[f"{ep.group}:{ep.name}" for ep in WITH_OPTIONS])
def test_declared_options_validate_their_defaults_and_are_accepted(ep):
    cls = ep.load()
    model = cls.Options
    assert isinstance(model, type) and issubclass(model, BaseModel)
    assert issubclass(model, TaskOptions if ep.group == "tts.tasks" else BackendOptions)
    assert model.model_config.get("extra") == "forbid", "unknown keys must be refused"
    defaults = model()  # every field has a default, and the defaults are valid
    model.model_validate(defaults.model_dump())
    for key, field in model.model_fields.items():
        assert field.description, f"{ep.name} option {key!r} has no description (tts list shows it)"
    if ep.group == "tts.backends":  # the registry passes every option to the constructor as a keyword
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        missing = [k for k in model.model_fields if k not in params and not takes_any]
        assert not missing, f"{ep.name}.__init__ does not accept its options {missing}"
        assert set(model.outside_identity) <= set(model.model_fields)


class CautiousMajority(Strategy):
    """The docs/plugins.md example: majority vote that abstains below a winning share."""

    class Config(StrategyConfig):
        min_share: float = Field(0.5, ge=0, le=1, description="abstain when the winner has a smaller share")

    name = "cautious-majority"
    description = "majority vote; no answer when the winning share is below min_share"

    async def run(self, problem, ctx):
        candidates = await ctx.sample_candidates(problem, self.config.n)
        groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        pick = selection.majority(groups)
        if pick.confidence is not None and pick.confidence < self.config.min_share:
            pick = selection.Selection(chosen=None, confidence=pick.confidence, group_scores=pick.group_scores)
        return ctx.finish_choice(problem, self.name, candidates, pick, groups)


def test_a_plugin_strategy_is_tested_with_tts_testing():
    """What docs/plugins.md shows a plugin author: a strategy of one's own, tested with tts.testing only."""
    import asyncio

    backend = ScriptedBackend(["it is 10", "10", "7"])  # sample i gets completion i % 3
    result = asyncio.run(run_strategy(CautiousMajority(n=3), ToyTask(), backend))
    assert result.answer == "10" and result.confidence == pytest.approx(2 / 3)
    assert [c.answer for c in result.candidates] == ["10", "10", "7"]
    shy = asyncio.run(run_strategy(CautiousMajority(n=3, min_share=0.9), ToyTask(), ScriptedBackend(toy_script)))
    assert shy.answer is None and shy.chosen is None


@pytest.mark.parametrize("ep", SCORERS, ids=[ep.name for ep in SCORERS])
def test_scorer_options_are_declared_and_described(ep):
    from tts.scorer import ScorerOptions

    model = ep.load().Options
    assert isinstance(model, type) and issubclass(model, ScorerOptions)
    assert model.model_config.get("extra") == "forbid", "unknown keys must be refused"
    for key, field in model.model_fields.items():
        assert field.description, f"{ep.name} option {key!r} has no description (tts list shows it)"
    assert set(model.outside_identity) <= set(model.model_fields)


@pytest.mark.parametrize("ep", SCORERS, ids=[ep.name for ep in SCORERS])
async def test_scorer_gives_one_verdict_per_candidate_through_best_of_n(ep):
    """Every scorer that needs no model folder of its own runs inside a strategy on the scripted backend."""
    from tts.strategies.best_of_n import BestOfN

    cls = ep.load()
    if any(f.is_required() for f in cls.Options.model_fields.values()):
        pytest.skip(f"{ep.name} needs a model of its own (tests/test_reward_model.py runs it on a tiny one)")
    task = ToyTask(selection=[cls()])
    result = await run_strategy(BestOfN(n=3), task, ScriptedBackend(toy_script), problem=2)
    for c in result.candidates:
        assert [v.verifier for v in c.verdicts] == [ep.name]
        assert 0.0 <= c.verdicts[0].score <= 1.0
