"""Strategy logic on scripted backends: exact, deterministic."""

import pytest

from tests.fakes import EvenVerifier, ToyTask
from tts.backends.scripted import ScriptedBackend
from tts.selection import group_answers, majority_vote
from tts.strategies.repeated_sampling import RepeatedSampling
from tts.strategies.self_consistency import SelfConsistency
from tts.strategy import StrategyContext


def ctx_for(script, task=None, **kw):
    task = task or ToyTask()
    backend = ScriptedBackend(script)
    return StrategyContext(backend=backend, answers=task, scorers=task.default_scorers(), **kw), backend


async def test_self_consistency_majority_and_confidence():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, backend = ctx_for(["so 3", "it is 5", "answer 5", "no idea", "5"], task)
    result = await SelfConsistency(n=5).run(problem, ctx)
    assert result.answer == "5"
    assert result.confidence == pytest.approx(3 / 5)  # share of all samples, the invalid one included
    assert result.chosen == 1  # first member of the winning group
    assert result.info["invalid"] == 1
    assert [g["count"] for g in result.info["groups"]] == [1, 3]
    assert len(result.candidates) == 5
    assert len(backend.calls) == 1 and backend.calls[0][0].sampling.n == 5  # one batched request


async def test_self_consistency_groups_by_equivalence_not_string():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["7", "007", "8", "+7"], task)  # ToyTask.equivalent compares as integers
    result = await SelfConsistency(n=4).run(problem, ctx)
    assert result.answer == "7"
    assert result.confidence == pytest.approx(3 / 4)


async def test_self_consistency_tie_break_is_first_occurrence():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["2", "9", "9", "2"], task)
    result = await SelfConsistency(n=4).run(problem, ctx)
    assert result.answer == "2"
    assert result.info["tied_answers"] == ["2", "9"] and result.info["tied_indices"] == [0, 1]


async def test_self_consistency_all_invalid_abstains():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["no", "none"], task)
    result = await SelfConsistency(n=2).run(problem, ctx)
    assert result.answer is None and result.chosen is None and result.confidence == 0.0


async def test_repeated_sampling_picks_first_passing_selection():
    task = ToyTask(selection=[EvenVerifier()])
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["1", "3", "4", "6"], task)
    result = await RepeatedSampling(n=4).run(problem, ctx)
    assert result.chosen == 2 and result.answer == "4"
    assert result.confidence == pytest.approx(2 / 4)
    assert all(len(c.verdicts) == 1 for c in result.candidates)
    assert result.usage.verifier_calls == 4


async def test_repeated_sampling_without_passing_takes_first():
    task = ToyTask(selection=[EvenVerifier()])
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["1", "3"], task)
    result = await RepeatedSampling(n=2).run(problem, ctx)
    assert result.chosen == 0 and result.answer == "1"


async def test_repeated_sampling_without_verifier_takes_first_and_no_confidence():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["10", "20"], task)
    result = await RepeatedSampling(n=2).run(problem, ctx)
    assert result.chosen == 0 and result.confidence is None


async def test_usage_counts_tokens_calls_and_time():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for(["one two three", "four five"], task)
    result = await SelfConsistency(n=2).run(problem, ctx)
    assert result.usage.completion_tokens == 5
    assert result.usage.backend_calls == 1
    assert result.usage.prompt_tokens > 0  # counted once for the request
    assert result.usage.wall_time >= 0


def test_strategy_options_are_validated():
    with pytest.raises(ValueError):
        SelfConsistency(n=0)
    with pytest.raises(ValueError):
        SelfConsistency(n=2, bogus=1)


def test_group_answers_and_weighted_vote():
    groups = group_answers(["1", None, "01", "2", "2", "3"], lambda a, b: int(a) == int(b))
    assert groups == [[0, 2], [3, 4], [5]]
    winner, tied = majority_vote(groups)
    assert winner == 0 and tied == [0, 1]
    winner, _ = majority_vote(groups, weights=[0.1, 0, 0.1, 0.1, 0.1, 0.9])
    assert winner == 2
    assert majority_vote([]) == (None, [])
