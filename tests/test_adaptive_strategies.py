"""adaptive-consistency and early-stop on the scripted backend: where they stop, what they answer, and that
no sample is drawn after the decision (every request the backend received is counted).

Hand computations (scipy 1.x):

* Beta rule: with top counts a >= b, P = P(p > 1/2) for p ~ Beta(a + 1, b + 1) = stats.beta.sf(0.5, a+1, b+1).
  With b = 0 it is 1 - 0.5^(a+1): 0.75, 0.875, 0.9375, 0.96875 for a = 1..4 (stop after 4 at 0.95).
  (1,1) 0.5; (2,1) 0.6875; (3,1) 0.8125; (4,1) 0.890625; (5,1) 0.9375; (6,1) 0.96484375.
* Dirichlet rule: P(p_1 is the largest) for (p_1, p_2, p_3) ~ Dirichlet(c_1+1, c_2+1, c_3+1), by quadrature
  (integrate.dblquad of stats.dirichlet's density over p_1 > p_2, p_1 > 1 - p_1 - p_2):
  (1,1,1) 1/3; (2,1,1) 0.535494; (3,1,1) 0.698; (6,1,1) 0.935124; (7,1,1) 0.963122. The toolkit estimates
  it by Monte Carlo (50,000 draws, fixed seed), so the values are compared within 0.005.
"""

from __future__ import annotations

import math
import random

import pytest

from tests.fakes import ToyTask
from tests.step_worlds import FnScorer
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.registry import build_strategy
from tts.scorer import Scorer
from tts.scorers.confidence import MeanLogprob
from tts.strategies.adaptive_consistency import AdaptiveConsistency
from tts.strategies.early_stop import EarlyStop
from tts.strategy import Strategy, StrategyContext
from tts.types import SamplingConfig

BETA_A4 = [0.75, 0.875, 0.9375, 0.96875]  # A, A, A, A: 1 - 0.5^(a+1)
BETA_ABA = [0.75, 0.5, 0.6875, 0.8125, 0.890625, 0.9375, 0.96484375]  # A, B, A, A, A, A, A


async def run(strategy: Strategy, script: list, scorers: list[Scorer] | None = None):
    """One toy problem; returns (result, backend)."""
    task = ToyTask()
    backend = ScriptedBackend(script)
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(max_tokens=32),
                          scorers=list(scorers or []), rng=random.Random(0))
    return await strategy.run(task.load(1)[0].problem, ctx), backend


def asked(backend: ScriptedBackend) -> list[int]:
    """The n of every request the backend received, in order (one request per call here)."""
    return [req.sampling.n for call in backend.calls for req in call]


def answers(*values: object) -> list[str]:
    """Completions whose ToyTask answers are `values` (None: a completion with no number)."""
    return [f"so it is {v}" if v is not None else "no idea" for v in values]


# ------------------------------------------------------------------------------------------- adaptive-consistency

AC_CASES = [
    # unanimous: stops after 4 (0.96875 >= 0.95), the 5th completion is never drawn
    ("unanimous", {}, answers(*[7] * 10), 4, BETA_A4, "7"),
    # one dissent at sample 2: the top-two race reaches 0.9648 at (6, 1), after 7 samples
    ("one dissent", {}, answers(7, 3, *[7] * 10), 7, BETA_ABA, "7"),
    # equivalent answers vote together: "7", "007", "07", "+7" are one group for ToyTask (int compare)
    ("equivalence", {}, ["7", "007", "it is 07", "+7", "7", "7"], 4, BETA_A4, "7"),
    # no-answer samples cast no vote (P = 0 with no vote yet) but count as samples drawn
    ("no answers", {}, answers(None, 7, None, 7, 7, 7, 7), 6, [0.0, 0.75, 0.75, 0.875, 0.9375, 0.96875], "7"),
    # min_samples: settled after 4 but never stops before 6 (1 - 0.5^6, 1 - 0.5^7 after 5 and 6)
    ("min_samples", {"min_samples": 6}, answers(*[7] * 10), 6, [*BETA_A4, 0.984375, 0.9921875], "7"),
    # a lower threshold stops earlier: 0.9 is reached at (3, 0) = 0.9375
    ("threshold", {"threshold": 0.9}, answers(*[7] * 10), 3, BETA_A4[:3], "7"),
]


@pytest.mark.parametrize("options, script, stop, history, answer",
                         [c[1:] for c in AC_CASES], ids=[c[0] for c in AC_CASES])
async def test_adaptive_consistency_stops_where_the_beta_posterior_says(options, script, stop, history, answer):
    result, backend = await run(AdaptiveConsistency(n=16, **options), script)
    info = result.info
    assert info["stopped"] == "settled" and info["samples_used"] == stop == len(result.candidates)
    assert info["history"] == pytest.approx(history, abs=1e-12)
    assert asked(backend) == [1] * stop  # one sample per round, none after the decision
    assert result.usage.backend_calls == stop
    assert result.answer == answer
    votes = sum(c.answer is not None and int(c.answer) == int(answer) for c in result.candidates)
    assert result.confidence == pytest.approx(votes / stop)  # the winning share of every sample drawn


@pytest.mark.parametrize("prior, stop", [
    ("beta", 8),  # the top two alone: (6, 1) gives 0.9648 after 8 samples
    ("dirichlet", 9),  # all three answers: (6, 1, 1) gives 0.9351 < 0.95, (7, 1, 1) 0.9631
])
async def test_dirichlet_rule_weighs_every_answer_and_stops_later(prior, stop):
    script = answers(7, 3, 5, *[7] * 10)  # A, B, C, then A only
    result, backend = await run(AdaptiveConsistency(n=16, prior=prior), script)
    assert result.info["samples_used"] == stop and asked(backend) == [1] * stop
    assert result.info["prior"] == prior and result.answer == "7"
    if prior == "dirichlet":  # counts (1), (1,1), (1,1,1), (2,1,1), (3,1,1), ..., (7,1,1): quadrature values
        expected = [0.75, 0.5, 1 / 3, 0.535494, 0.698, None, None, 0.935124, 0.963122]
        for got, want in zip(result.info["history"], expected):
            if want is not None:
                assert got == pytest.approx(want, abs=0.005)


async def test_adaptive_consistency_budget_cap_and_tie_rule():
    # A and B alternate: never settled; the budget of 5 is spent exactly, the vote is 3 to 2
    result, backend = await run(AdaptiveConsistency(n=5), answers(7, 3) * 10)
    assert result.info["stopped"] == "budget" and result.info["samples_used"] == 5 and sum(asked(backend)) == 5
    assert result.answer == "7" and result.info["rounds"] == 5 and len(result.info["history"]) == 5
    # n = 4: 2 to 2, the group seen first wins and both options are recorded as tied
    result, _ = await run(AdaptiveConsistency(n=4), answers(3, 7) * 10)
    assert result.answer == "3" and result.info["tied_answers"] == ["3", "7"]


async def test_rounds_larger_than_one_never_pass_the_budget():
    # unanimous in rounds of 3: 0.9375 after 3 samples, 1 - 0.5^7 after 6: the 2nd round decides
    result, backend = await run(AdaptiveConsistency(n=16, round=3), answers(*[7] * 20))
    assert asked(backend) == [3, 3] and result.info["samples_used"] == 6
    assert result.info["history"] == pytest.approx([0.9375, 0.9921875])
    # never settled: rounds of 3 under a budget of 7 ask 3, 3, then only the 1 left
    result, backend = await run(AdaptiveConsistency(n=7, round=3), answers(7, 3) * 10)
    assert asked(backend) == [3, 3, 1] and result.info["stopped"] == "budget" and result.info["rounds"] == 3


def test_adaptive_consistency_refuses_min_samples_past_the_budget():
    with pytest.raises(UserError, match="min_samples"):
        build_strategy("adaptive-consistency", n=4, min_samples=5)
    with pytest.raises(UserError, match="prior"):
        build_strategy("adaptive-consistency", prior="gamma")


# ------------------------------------------------------------------------------------------------- early-stop


def scored(*pairs: tuple[object, float], label: str | None = None) -> tuple[list[str], FnScorer]:
    """Completions with answers and the scores a scripted scorer gives them (each text is distinct)."""
    texts = [f"try {chr(97 + i)} gives {a}" if a is not None else f"try {chr(97 + i)} gives up"
             for i, (a, _) in enumerate(pairs)]
    table = dict(zip(texts, (s for _, s in pairs)))
    return texts, FnScorer(lambda text: table[text], **({"label": label} if label else {}))


async def test_early_stop_stops_at_the_first_confident_sample():
    texts, scorer = scored((3, 0.2), (5, 0.5), (7, 0.95), (9, 0.99), (9, 0.99))
    result, backend = await run(EarlyStop(n=16, tau=0.9), texts, [scorer])
    assert asked(backend) == [1, 1, 1] and len(scorer.batches) == 3  # nothing drawn or scored after sample 3
    assert result.chosen == 2 and result.answer == "7" and result.confidence == 0.95
    assert result.info["stopped"] == "confident" and result.info["stop_index"] == 2
    assert result.info["confidences"] == [0.2, 0.5, 0.95] and result.info["scorer"] == "fn-scorer"


async def test_early_stop_round_picks_the_first_confident_not_the_best_of_the_round():
    # rounds of 3: sample 1 (0.92) stops the search; sample 2 (0.99) was already paid for but is not picked
    texts, scorer = scored((3, 0.3), (5, 0.92), (7, 0.99), (9, 0.99))
    result, backend = await run(EarlyStop(n=16, tau=0.9, round=3), texts, [scorer])
    assert asked(backend) == [3] and result.info["samples_used"] == 3 and result.usage.completion_tokens > 0
    assert result.chosen == 1 and result.answer == "5" and result.info["stop_index"] == 1


async def test_early_stop_at_the_budget_returns_the_most_confident_first_on_ties():
    texts, scorer = scored((3, 0.3), (5, 0.7), (7, 0.5), (9, 0.7), (1, 0.99))
    result, backend = await run(EarlyStop(n=4, tau=0.9, round=3), texts, [scorer])
    assert asked(backend) == [3, 1]  # the 5th completion (0.99) lies past the budget
    assert result.info["stopped"] == "budget" and result.info["stop_index"] is None
    assert result.chosen == 1 and result.answer == "5" and result.info["tied_indices"] == [1, 3]


async def test_early_stop_ignores_samples_without_an_answer():
    # the confident sample has no answer: it neither stops the search nor wins at the budget
    texts, scorer = scored((None, 0.99), (5, 0.4), (None, 0.98), (7, 0.93))
    result, _ = await run(EarlyStop(n=16, tau=0.9), texts, [scorer])
    assert result.info["stop_index"] == 3 and result.answer == "7" and result.info["invalid"] == 2
    result, _ = await run(EarlyStop(n=3, tau=0.9), texts, [scorer])
    assert result.info["stopped"] == "budget" and result.chosen == 1 and result.answer == "5"
    texts, scorer = scored((None, 0.99), (None, 0.5))
    result, _ = await run(EarlyStop(n=2, tau=0.9), texts, [scorer])
    assert result.chosen is None and result.answer is None and result.info["reason"] == "no sample has an answer"


WEIGHTED_CASES = [
    # weighted shares of "5": 0.6/1.1, 1.5/2.0, 2.3/2.8, 3.0/3.5 = 0.857 after 5 samples
    ("settles at tau", 0.85, 16, [(5, 0.6), (3, 0.5), (5, 0.9), (5, 0.8), (5, 0.7), (5, 0.9)], 5, "settled", "5"),
    # the same pool under tau 0.9: the budget of 5 is spent, the weighted vote still says 5 (3.0 vs 0.5)
    ("budget", 0.9, 5, [(5, 0.6), (3, 0.5), (5, 0.9), (5, 0.8), (5, 0.7), (5, 0.9)], 5, "budget", "5"),
    # one sample always holds the whole share: the rule waits for the second sample
    ("needs two", 0.5, 16, [(5, 0.9), (5, 0.9), (5, 0.9)], 2, "settled", "5"),
    # weight beats count at the budget: 0.95 for 3 against 0.1 + 0.1 for 5
    ("weight over count", 0.99, 3, [(3, 0.95), (5, 0.1), (5, 0.1)], 3, "budget", "3"),
    # "5" and "05" are one answer for ToyTask: share (0.5 + 0.5) / 1.0 after 2 samples
    ("equivalence", 0.9, 16, [(5, 0.5), ("05", 0.5), (3, 0.9)], 2, "settled", "5"),
]


@pytest.mark.parametrize("tau, n, pairs, used, stopped, answer",
                         [c[1:] for c in WEIGHTED_CASES], ids=[c[0] for c in WEIGHTED_CASES])
async def test_early_stop_weighted_vote(tau, n, pairs, used, stopped, answer):
    texts, scorer = scored(*pairs)
    result, backend = await run(EarlyStop(n=n, tau=tau, final="weighted-vote"), texts, [scorer])
    assert sum(asked(backend)) == used == result.info["samples_used"] and result.info["stopped"] == stopped
    assert result.answer == answer
    weights = [s for _, s in pairs[:used]]
    winner = sum(w for (a, _), w in zip(pairs, weights) if int(str(a)) == int(answer))
    assert result.confidence == pytest.approx(winner / sum(weights))
    assert result.info["stop_index"] == (used - 1 if stopped == "settled" else None)


async def test_early_stop_reads_a_confidence_scorer():
    # mean-logprob scores exp(mean token logprob): 0.5, 0.8, 0.95 -> stops at the third sample
    script = [(f"so it is {a}", math.log(p)) for a, p in [(3, 0.5), (5, 0.8), (7, 0.95), (9, 0.99)]]
    result, backend = await run(EarlyStop(n=8, tau=0.9), script, [MeanLogprob()])
    assert asked(backend) == [1, 1, 1] and result.answer == "7" and result.info["scorer"] == "mean-logprob"
    assert result.info["confidences"] == pytest.approx([0.5, 0.8, 0.95])


async def test_early_stop_reads_the_named_scorer_among_several():
    texts, low = scored((3, 0.1), (5, 0.1), (7, 0.1), label="low")
    _, high = scored((3, 0.2), (5, 0.95), (7, 0.1), label="high")
    result, _ = await run(EarlyStop(n=3, tau=0.9, scorer="high"), texts, [low, high])
    assert result.answer == "5" and result.info["scorer"] == "high" and result.info["stop_index"] == 1
    result, _ = await run(EarlyStop(n=3, tau=0.9, scorer="low"), texts, [low, high])
    assert result.info["stopped"] == "budget" and result.answer == "3"  # all 0.1: the first
    assert all(len(c.verdicts) == 2 for c in result.candidates)  # both scorers' verdicts are recorded


REFUSALS = [
    # no scorer at all
    ("no scorer", None, [], "none was given"),
    # two scorers and none named
    ("ambiguous", None, ["a", "b"], "name one with -o scorer"),
    # a name that no scorer has
    ("unknown", "judge", ["a", "b"], "'judge' is not among the run's scorers (a, b)"),
    # a name two scorers share (their labels differ, their name is the same)
    ("shared name", "fn-scorer", ["a", "b"], "several scorers are called 'fn-scorer'"),
]


@pytest.mark.parametrize("wanted, labels, message", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
async def test_early_stop_refuses_unusable_scorers_before_generating(wanted, labels, message):
    scorers = [scored((5, 0.5), label=label)[1] for label in labels]
    strategy = build_strategy("early-stop", **({"scorer": wanted} if wanted else {}))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        strategy.check_scorers(scorers)  # what tts eval and tts.solve call before any engine starts
    task = ToyTask()
    backend = ScriptedBackend(["so it is 5"])
    ctx = StrategyContext(backend=backend, answers=task, scorers=scorers)
    with pytest.raises(UserError):
        await strategy.run(task.load(1)[0].problem, ctx)
    assert backend.calls == []  # refused before a single sample
