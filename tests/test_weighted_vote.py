"""weighted-vote: the group with the largest sum of scorer scores wins (search-and-learn's weighted best-of-N)."""

import pytest

from tests.fakes import ToyTask
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.scorer import Scorer, ScoringContext
from tts.strategies.weighted_vote import WeightedVote
from tts.strategy import StrategyContext
from tts.types import Candidate, Problem, Verdict


class TableScorer(Scorer):
    """Scores each answer from a fixed table (unknown answers: 0)."""

    name = "table"
    description = "fixed scores per answer (tests)"

    def __init__(self, table: dict[str, float]):
        super().__init__()
        self.table = table

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        return [Verdict(verifier=self.name, score=self.table.get(c.answer or "", 0.0)) for c in candidates]


@pytest.mark.parametrize("table, expected, confidence", [
    # three weak votes for 5 (0.3 in all) lose to one strong vote for 7 (0.9)
    ({"5": 0.1, "7": 0.9}, "7", 0.9 / 1.2),
    # three fair votes for 5 (1.2 in all) beat one strong vote for 7 (0.9): unlike best-of-n
    ({"5": 0.4, "7": 0.9}, "5", 1.2 / 2.1),
    # equal sums: the group seen first wins
    ({"5": 0.3, "7": 0.9}, "5", 0.5),
])
async def test_the_heaviest_group_wins(table, expected, confidence):
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx = StrategyContext(backend=ScriptedBackend(["5", "7", "5", "5"]), answers=task, scorers=[TableScorer(table)])
    result = await WeightedVote(n=4).run(problem, ctx)
    assert result.answer == expected
    assert result.confidence == pytest.approx(confidence)
    assert result.info["scorers"] == ["table"]
    assert len(result.candidates) == 4 and all(c.verdicts for c in result.candidates)


async def test_no_scorer_is_refused():
    task = ToyTask()
    ctx = StrategyContext(backend=ScriptedBackend(["5"]), answers=task, scorers=[])
    with pytest.raises(UserError, match="no scorer was given"):
        await WeightedVote(n=2).run(task.load(1)[0].problem, ctx)
