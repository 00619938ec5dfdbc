"""Selectors over one pool (tts.selection) and the strategies built on them: exact, deterministic."""

import numpy as np
import pytest

from tests.fakes import EvenVerifier, ToyTask
from tts import selection
from tts.backends.scripted import ScriptedBackend
from tts.selection import Groups, Selection
from tts.strategies.best_of_n import BestOfN
from tts.strategies.perplexity import Perplexity
from tts.strategy import StrategyContext
from tts.types import Verdict


def int_eq(a, b):
    return int(a) == int(b)


# ------------------------------------------------------------------------------------------------ groups


def test_groups_use_equivalence_and_leave_out_missing_answers():
    groups = Groups.of_answers(["1", None, "01", "2", "2", "3"], int_eq)
    assert groups.ids.tolist() == [0, -1, 0, 1, 1, 2]
    assert groups.members == [[0, 2], [3, 4], [5]]
    assert groups.count == 3


def test_groups_subset_renumbers_without_equivalence_calls():
    groups = Groups.of_answers(["7", "8", "07", None, "9"], int_eq)
    sub = groups.subset([4, 2, 3, 0])
    assert sub.ids.tolist() == [0, 1, -1, 1]  # "9" first, then the "7" group; no answer stays -1
    assert sub.members == [[0], [1, 3]]
    assert Groups.from_ids([5, -1, 5, 2]).ids.tolist() == [0, -1, 0, 1]
    assert Groups.from_ids([-1, -1]).count == 0


# ------------------------------------------------------------------------------------------------ majority


@pytest.mark.parametrize(
    "answers,chosen,tied",
    [
        (["2", "9", "9", "2"], 0, [0, 1]),          # 2-2 tie: the group seen first wins
        (["9", "2", "2", "9"], 0, [0, 1]),
        (["5", "3", "3"], 1, [1]),                  # clear majority: its first member
        ([None, "4", None, "6", "6"], 3, [3]),      # None casts no vote
        (["1", "2", "3"], 0, [0, 1, 2]),            # three-way tie
    ],
)
def test_majority_tie_breaking(answers, chosen, tied):
    pick = selection.majority(Groups.of_answers(answers, int_eq))
    assert pick.chosen == chosen
    assert pick.tied == tied


def test_majority_abstains_without_answers_and_reports_votes():
    assert selection.majority(Groups.of_answers([None, None], int_eq)).chosen is None
    pick = selection.majority(Groups.of_answers(["5", "3", "3", None], int_eq))
    assert pick.group_scores == [1, 2]
    assert pick.confidence == pytest.approx(2 / 4)


def test_credit_splits_ties():
    pick = selection.majority(Groups.of_answers(["2", "9", "9", "2"], int_eq))
    assert pick.credit([True, False, False, True]) == 0.5  # one of two tied groups is right
    assert Selection(chosen=None).credit([True]) == 0.0


def test_weighted_vote_changes_the_winner_and_treats_missing_weight_as_zero():
    groups = Groups.of_answers(["1", "1", "2", "3"], int_eq)
    assert selection.majority(groups).chosen == 0
    pick = selection.weighted_vote(groups, [0.1, None, 0.9, 0.2])
    assert pick.chosen == 2 and pick.tied == [2]
    assert pick.group_scores == pytest.approx([0.1, 0.9, 0.2])
    assert pick.confidence == pytest.approx(0.9 / 1.2)


def test_weighted_vote_ties_within_float_rounding():
    groups = Groups.of_answers(["1", "1", "2"], int_eq)
    pick = selection.weighted_vote(groups, [0.1, 0.2, 0.3])  # 0.1 + 0.2 == 0.30000000000000004 != 0.3
    assert pick.tied == [0, 2] and pick.chosen == 0


# ------------------------------------------------------------------------------------------------ argmax selectors


def test_perplexity_picks_the_most_probable_path():
    assert selection.perplexity([-0.9, -0.2, None, -0.5]).chosen == 1
    pick = selection.perplexity([-0.3, -0.1, -0.1])
    assert pick.chosen == 1 and pick.tied == [1, 2]
    assert pick.confidence == pytest.approx(np.exp(-0.1))
    assert selection.perplexity([None, float("nan")]).chosen is None


@pytest.mark.parametrize(
    "scores,logprobs,chosen,tied",
    [
        ([0.2, 0.9, 0.5], [-0.1, -0.9, -0.5], 1, [1]),       # score decides
        ([1.0, 1.0, 0.5], [-0.8, -0.3, -0.1], 1, [1]),       # tie on score: mean log-prob decides
        ([1.0, 1.0, 0.5], [-0.3, -0.3, -0.1], 0, [0, 1]),    # full tie: earliest
        ([None, None, None], [-0.8, -0.3, -0.5], 1, [1]),    # no scores: perplexity
        ([None, 0.1, None], [-0.1, -0.9, -0.1], 1, [1]),     # a missing score ranks lowest
        ([None, None], [None, None], 0, [0, 1]),             # nothing at all: the first
    ],
)
def test_best_of_n(scores, logprobs, chosen, tied):
    pick = selection.best_of_n(scores, logprobs)
    assert (pick.chosen, pick.tied) == (chosen, tied)


def test_best_of_n_without_scores_equals_perplexity():
    rng = np.random.default_rng(3)
    for _ in range(20):
        lp = rng.normal(-0.5, 0.2, 6)
        assert selection.best_of_n([None] * 6, lp).chosen == selection.perplexity(lp).chosen


def test_first_passing():
    assert selection.first_passing([False, None, True, True]).chosen == 2
    assert selection.first_passing([np.False_, np.True_]).chosen == 1
    none = selection.first_passing([False, None])
    assert none.chosen is None and none.credit([True, True]) == 0.0


def test_verdict_score_and_passed():
    v = [Verdict(verifier="a", score=1.0, passed=True), Verdict(verifier="b", score=0.5, passed=None)]
    assert selection.verdict_score(v) == 0.75 and selection.verdict_passed(v) is True
    assert selection.verdict_passed(v + [Verdict(verifier="c", score=0.0, passed=False)]) is False
    assert selection.verdict_score([]) is None and selection.verdict_passed(v[1:]) is None


# ------------------------------------------------------------------------------------------------ strategies


def ctx_for(script, task):
    backend = ScriptedBackend(script)
    return StrategyContext(backend=backend, answers=task, scorers=task.default_scorers()), backend


async def test_perplexity_strategy_takes_the_most_probable_sample():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, backend = ctx_for([("so 3", -0.9), ("it is 5", -0.2), ("5", -0.8), ("7", -0.3)], task)
    result = await Perplexity(n=4).run(problem, ctx)
    assert result.chosen == 1 and result.answer == "5"
    assert result.confidence == pytest.approx(np.exp(-0.2))
    assert len(backend.calls) == 1 and backend.calls[0][0].sampling.n == 4


async def test_best_of_n_uses_the_selection_verifier_then_log_prob():
    task = ToyTask(selection=[EvenVerifier()])
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for([("1", -0.1), ("4", -0.7), ("6", -0.3), ("3", -0.2)], task)
    result = await BestOfN(n=4).run(problem, ctx)
    assert result.answer == "6"  # both even ones pass; the more probable wins the tie
    assert result.info["scores"] == [0.0, 1.0, 1.0, 0.0]
    assert result.confidence == 1.0 and result.usage.verifier_calls == 4


async def test_best_of_n_without_verifier_degrades_to_perplexity():
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx, _ = ctx_for([("1", -0.5), ("4", -0.7), ("6", -0.05)], task)
    result = await BestOfN(n=3).run(problem, ctx)
    assert result.answer == "6" and result.confidence is None
