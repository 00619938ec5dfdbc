"""Step-level search on scripted worlds (docs/algorithms/step-search.md): PRM beam search, DVTS, particle
filtering and particle Gibbs. Resampling against a hand computation, finished particles kept and never
extended, beams replicated to N, DVTS subtrees independent, exact budgets, determinism, one engine call
and one scoring call per step phase, lookahead, caps and bad inputs."""

import asyncio
import math
import random
from collections import Counter

import pytest

from tests.fakes import ToyTask
from tests.step_worlds import SEP, FnScorer, answer_of, by_last_option, depth_of, options_of, search, stepper
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.registry import build_scorer, build_strategy
from tts.step_search import StepSearch, Track, logit, replicate, softmax_of_logits
from tts.stepwise import Step, StepState
from tts.strategies.beam_search import BeamSearch
from tts.strategies.dvts import DVTS
from tts.strategies.particle_filtering import ParticleFiltering, filter_particles
from tts.strategies.particle_gibbs import ParticleGibbs
from tts.strategy import StrategyContext
from tts.types import SamplingConfig

ALL = [(BeamSearch, {"n": 8}), (DVTS, {"n": 8}), (ParticleFiltering, {"n": 8}),
       (ParticleGibbs, {"n": 8, "iterations": 2})]


def run(strategy, script=None, scorer=None, **kw):
    scorer = scorer if scorer is not None else FnScorer(by_last_option())
    return asyncio.run(search(strategy, script or stepper(4), scorer, **kw))


def step_calls(backend):
    """The generate calls that asked for next steps (they stop at the blank line)."""
    return [c for c in backend.calls if c[0].sampling.stop == (SEP,) and c[0].sampling.temperature != 0.0]


# ---- weights and replication --------------------------------------------------------------------

@pytest.mark.parametrize(("scores", "tau", "expected"), [
    # logit(0.9) = log 9, logit(0.5) = 0, logit(0.1) = -log 9: weights proportional to 9 : 1 : 1/9
    ([0.9, 0.5, 0.1], 1.0, [9 / (9 + 1 + 1 / 9), 1 / (9 + 1 + 1 / 9), (1 / 9) / (9 + 1 + 1 / 9)]),
    # tau 0.5 doubles the logits: 81 : 1 : 1/81
    ([0.9, 0.5, 0.1], 0.5, [81 / (81 + 1 + 1 / 81), 1 / (81 + 1 + 1 / 81), (1 / 81) / (81 + 1 + 1 / 81)]),
    # all equal: uniform
    ([0.3, 0.3, 0.3, 0.3], 1.0, [0.25] * 4),
    # 0 and 1 are clipped to 1e-6 away before the logit, so both stay finite
    ([1.0, 0.0], 1.0, [1 / (1 + ((1e-6 / (1 - 1e-6)) ** 2)), 1 - 1 / (1 + ((1e-6 / (1 - 1e-6)) ** 2))]),
])
def test_particle_weights_are_softmax_of_logits(scores, tau, expected):
    assert softmax_of_logits(scores, tau).tolist() == pytest.approx(expected, rel=1e-9)


def test_logit_clips():
    assert logit(0.5) == 0.0
    assert math.isfinite(logit(0.0)) and math.isfinite(logit(1.0))
    assert logit(1.0) == pytest.approx(-logit(0.0))


@pytest.mark.parametrize(("count", "total", "expected"), [
    (2, 8, [4, 4]),      # N/M survivors, each M copies
    (3, 8, [3, 3, 2]),   # cyclic: the first total % count get one more
    (1, 4, [4]),
    (5, 4, [1, 1, 1, 1, 0]),
    (0, 4, []),
])
def test_replicate(count, total, expected):
    assert replicate(count, total) == expected


def test_resampling_follows_the_weights():
    """Over many seeds, the copies of each first-step particle match N x its weight (hand computation)."""
    n, scores = 4, {0: 0.9, 1: 0.5, 2: 0.2, 3: 0.5}  # by the option each particle's first step drew
    expected = softmax_of_logits([scores[i] for i in range(n)], 1.0)
    counts: Counter = Counter()
    runs = 300
    for seed in range(runs):
        result, _ = run(ParticleFiltering(n=n), stepper(3), FnScorer(lambda t: scores[options_of(t)[0]]), seed=seed)
        first = result.info["history"][0]
        assert first["weights"] == pytest.approx(expected.tolist(), abs=1e-4)
        counts.update(first["drawn"])
    for i in range(n):
        share = counts[i] / (runs * n)
        sd = math.sqrt(expected[i] * (1 - expected[i]) / (runs * n))
        assert abs(share - expected[i]) < 4 * sd + 1e-3, (i, share, expected[i])


# ---- particle filtering -------------------------------------------------------------------------

def test_finished_particles_are_kept_and_never_extended():
    # Sample 0 of the empty prefix answers at once with a high score; the others go on for 3 more steps.
    script = stepper(5, finish_at=lambda answer, i: answer == "" and i == 0, final=lambda a: "7")
    scorer = FnScorer(lambda t: 0.99 if "answer is 7" in t else 0.3)
    result, backend = run(ParticleFiltering(n=4), script, scorer, seed=1)
    finished_text = "The answer is 7."
    for call in backend.calls:
        for req in call:
            assert not req.continuation.startswith(finished_text), "a finished particle was extended"
    # Its weight (0.99 against 0.3) makes it win most draws; its copies stay finished to the end.
    assert any(c.text == finished_text and c.info["finished"] for c in result.candidates)
    assert result.answer == "7"
    # Once all particles are finished nothing more is generated: the last call had only active particles.
    assert all(c.info["finished"] for c in result.candidates)


def test_copies_of_a_particle_go_as_one_request():
    """Resampled copies share their text: one request with n = copies, so the engine prefills it once."""
    scorer = FnScorer(lambda t: 0.999 if options_of(t)[:1] == [2] else 0.001)  # particle 2 takes every draw
    result, backend = run(ParticleFiltering(n=4), stepper(4), scorer, seed=0)
    assert result.info["history"][0]["drawn"] == [2, 2, 2, 2]
    second = backend.calls[1]
    assert len(second) == 1 and second[0].sampling.n == 4
    assert second[0].continuation == "step 0 option 2" + SEP
    assert len({c.text for c in result.candidates}) > 1  # the copies then part ways


def test_no_resampling_after_the_last_step():
    result, _ = run(ParticleFiltering(n=4), stepper(3))
    history = result.info["history"]
    assert history[-1]["resampled"] is False
    assert all(h["resampled"] for h in history[:-1])


def test_particles_per_step_respect_the_budget():
    result, backend = run(ParticleFiltering(n=6), stepper(4))
    calls = backend.calls
    assert all(sum(r.sampling.n for r in c) <= 6 for c in calls)
    assert sum(r.sampling.n for r in calls[0]) == 6  # every particle writes its first step
    assert len(result.candidates) == 6


# ---- particle Gibbs -----------------------------------------------------------------------------

def test_particle_gibbs_splits_the_budget_and_keeps_a_reference():
    result, backend = run(ParticleGibbs(n=8, iterations=2), stepper(3))
    per_call = [sum(r.sampling.n for r in c) for c in backend.calls]
    # 3 steps a run: the first run has 4 free particles, the second 3 free plus the reference.
    assert per_call == [4, 4, 4, 3, 3, 3]
    runs = result.info["runs"]
    assert len(runs) == 2 and "reference" in runs[0]
    assert len(result.candidates) == 4  # the last run's particles, the reference among them


def test_reference_competes_with_its_weight_at_the_current_step():
    """In a Gibbs run the reference enters each resampling cut back to the current step: at step 1 its weight
    is its step-1 score (0.95), not its final one (0.01, which its_hub would use)."""
    task = ToyTask()
    problem = task.load(1)[0].problem
    ctx = StrategyContext(backend=ScriptedBackend(stepper(3)), answers=task, sampling=SamplingConfig(max_tokens=64),
                          scorers=[FnScorer(lambda t: 0.5)], rng=random.Random(0))
    cfg = ParticleGibbs.Config(n=4, iterations=1)
    search = StepSearch(problem, ctx, cfg, "particle-gibbs")
    reference = Track(StepState(steps=(Step(text="step 0 option 9", delimiter=SEP),
                                       Step(text="The answer is 1.", finished=True))), ((0.95,), (0.01,)))
    particles, history = asyncio.run(filter_particles(search, 3, 1.0, reference))
    expected = softmax_of_logits([0.5, 0.5, 0.5, 0.95], 1.0)
    assert history[0]["weights"] == pytest.approx(expected.tolist(), abs=1e-4)
    assert particles[-1] is reference and len(particles) == 4
    # a drawn copy of the reference is cut back to one step and goes on from there
    assert 3 in history[0]["drawn"]  # weight 0.86: drawn under this seed
    assert any(p.state.steps[0].text == "step 0 option 9" and p.state.depth >= 2 for p in particles[:-1])


@pytest.mark.parametrize(("options", "message"), [
    ({"n": 7, "iterations": 2}, "multiple of iterations"),
    ({"n": 2, "iterations": 2}, "at least 2 particles"),
])
def test_particle_gibbs_bad_budgets(options, message):
    with pytest.raises(UserError, match=message):
        build_strategy("particle-gibbs", **options)


# ---- beam search --------------------------------------------------------------------------------

def test_beams_are_replicated_to_n_and_the_top_n_over_m_survive():
    result, backend = run(BeamSearch(n=8, beam_width=4), stepper(4))
    calls = step_calls(backend)
    assert [sum(r.sampling.n for r in c) for c in backend.calls] == [8, 8, 8, 8]
    # first call: one empty prefix sampled 8 times; then N/M = 2 survivors, 4 copies each
    assert [(r.continuation, r.sampling.n) for r in calls[0]] == [("", 8)]
    for c in calls[1:]:
        assert sorted(r.sampling.n for r in c) == [4, 4]
    # the survivors are the best-scored: after step 0 the options 7 and 6
    assert sorted(options_of(r.continuation)[0] for r in calls[1]) == [6, 7]
    assert len(result.candidates) == 8


def test_beam_search_drops_duplicate_texts_before_ranking():
    # Every beam writes the same step: with duplicates filtered one survivor is left (replicated to N).
    def same(text, index):
        answer = answer_of(text)
        return "The answer is 5." if depth_of(answer) >= 2 else f"step {depth_of(answer)} option 1{SEP}"

    result, backend = run(BeamSearch(n=8, beam_width=4, filter_duplicates=True), same)
    assert [len(h["kept_scores"]) for h in result.info["history"][:2]] == [1, 1]
    result, backend = run(BeamSearch(n=8, beam_width=4, filter_duplicates=False), same)
    assert [len(h["kept_scores"]) for h in result.info["history"][:2]] == [2, 2]
    # either way the identical survivors' copies go as one request of n = 8 (one prefill)
    assert [[r.sampling.n for r in c] for c in step_calls(backend)] == [[8], [8], [8]]


@pytest.mark.parametrize(("sort_completed", "answers"), [
    (False, ["7", "7", "8", "8"]),  # the first N to complete: the two early, poorly scored ones first
    (True, ["8", "8", "8", "8"]),   # the N best
])
def test_completed_beams_are_first_n_or_best_n(sort_completed, answers):
    # Samples 0 and 2 of the empty prefix answer 7 at once (score 0.1); the other beams answer 8 at depth 3
    # (score 0.9): 2 completed in the first iteration, 4 in the last, 6 in all.
    script = stepper(4, finish_at=lambda answer, i: answer == "" and i % 2 == 0,
                     final=lambda a: "7" if a == "" else "8")
    scorer = FnScorer(lambda t: 0.1 if "answer is 7" in t else 0.9 if "answer is 8" in t else 0.5)
    result, _ = run(BeamSearch(n=4, beam_width=2, sort_completed=sort_completed), script, scorer)
    assert result.info["completed"] == 6
    assert [c.answer for c in result.candidates] == answers
    assert result.answer == "8"


# ---- DVTS ---------------------------------------------------------------------------------------

def test_dvts_subtrees_stay_independent():
    result, backend = run(DVTS(n=8, beam_width=4), stepper(4))
    for call in step_calls(backend)[1:]:
        assert len(call) == 2 and all(r.sampling.n == 4 for r in call)  # one request per subtree, M each
    # each subtree's requests extend only its own head: the heads of the two subtrees never merge
    origins = Counter(c.info["origin"] for c in result.candidates)
    assert origins == {0: 4, 1: 4}
    heads = {}
    for c in result.candidates:
        heads.setdefault(c.info["origin"], set()).add(c.text.rsplit(SEP, 1)[0])
    assert all(len(h) == 1 for h in heads.values())  # M siblings share their subtree's text before the last step


def test_dvts_advances_each_subtree_by_its_best_candidate():
    result, backend = run(DVTS(n=4, beam_width=4), stepper(3))
    second = step_calls(backend)[1]
    assert [options_of(r.continuation) for r in second] == [[3]]  # option 3 scored highest among 0..3


def test_dvts_needs_n_multiple_of_width():
    with pytest.raises(UserError, match="multiple of beam_width"):
        build_strategy("dvts", n=6, beam_width=4)


# ---- shared behaviour ---------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "options"), ALL)
def test_one_engine_call_and_one_scoring_call_per_step_phase(cls, options):
    scorer = FnScorer(by_last_option())
    result, backend = run(cls(**options), stepper(4), scorer)
    assert result.info["engine_calls"]["steps"] == len(backend.calls)
    assert result.info["engine_calls"]["scoring"] == len(scorer.batches) == len(backend.calls)
    assert result.usage.backend_calls == len(backend.calls)


@pytest.mark.parametrize(("cls", "options"), ALL)
def test_deterministic_under_a_seed(cls, options):
    a, _ = run(cls(**options), stepper(4), seed=3)
    b, _ = run(cls(**options), stepper(4), seed=3)
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
    assert (a.answer, a.chosen, a.info["scores"]) == (b.answer, b.chosen, b.info["scores"])


@pytest.mark.parametrize(("cls", "options"), ALL)
def test_final_candidates_carry_step_score_verdicts(cls, options):
    result, _ = run(cls(**options), stepper(4))
    for c in result.candidates:
        (v,) = c.verdicts
        assert v.verifier == "fn-scorer" and v.step_scores and len(v.step_scores) == c.info["steps"]
        assert v.score == pytest.approx(v.step_scores[-1])  # aggregation "last"
    assert result.answer is not None and result.usage.completion_tokens > 0


@pytest.mark.parametrize(("cls", "options"), ALL)
def test_weighted_vote_final_choice(cls, options):
    result, _ = run(cls(**options, final="weighted-vote"), stepper(4))
    assert result.info["final"] == "weighted-vote" and result.info["groups"]
    weights = {}
    for c, s in zip(result.candidates, result.info["scores"]):
        if c.answer is not None:
            weights[c.answer] = weights.get(c.answer, 0.0) + s
    assert result.answer == max(weights, key=weights.get)


@pytest.mark.parametrize(("cls", "options"), ALL)
def test_refuses_without_a_scorer_or_with_a_whole_sample_scorer(cls, options):
    with pytest.raises(UserError, match="no scorer"):
        run(cls(**options), stepper(3), [])
    with pytest.raises(UserError, match="log-probabilities of whole samples"):
        run(cls(**options), stepper(3), build_scorer("mean-logprob"))


def test_several_scorers_are_averaged_per_step():
    result, _ = run(ParticleFiltering(n=2), stepper(3), [FnScorer(lambda t: 0.2), FnScorer(lambda t: 0.6, label="b")])
    c = result.candidates[0]
    assert [v.verifier for v in c.verdicts] == ["fn-scorer", "b"]
    assert result.info["scores"][0] == pytest.approx(0.4)


def test_the_last_step_runs_to_the_end_and_the_answer_cap_ends_a_track():
    # max_steps=2: the second step has no stop string.
    result, backend = run(BeamSearch(n=4, max_steps=2), stepper(10))
    assert backend.calls[-1][0].sampling.stop == ()
    assert all(c.info["finished"] for c in result.candidates)
    # a 5-token answer cap: "step 0 option i" (4 words) + 4 more reach it after two steps
    result, backend = run(ParticleFiltering(n=2, answer_max_tokens=6), stepper(10))
    assert all(c.completion_tokens <= 8 and c.info["finished"] for c in result.candidates)
    assert len(backend.calls) == 2
    assert backend.calls[1][0].sampling.max_tokens == 2  # what is left of the cap


def test_lookahead_is_greedy_scored_and_not_kept():
    scorer = FnScorer(by_last_option())
    result, backend = run(BeamSearch(n=4, beam_width=2, lookahead=1), stepper(4), scorer)
    greedy = [c for c in backend.calls if c[0].sampling.temperature == 0.0]
    assert greedy and all(r.sampling.n == 1 for c in greedy for r in c)
    # the scorer saw texts one step past the kept ones
    first_scored = scorer.batches[0]
    assert all(depth_of(t) == 2 for t in first_scored)
    assert all(depth_of(r.continuation) == 1 for r in step_calls(backend)[1])
    assert result.info["phase_usage"]["lookahead"]["completion_tokens"] > 0


def test_requests_continue_the_partial_answer_and_count_cached_tokens():
    class Cached(ScriptedBackend):
        async def generate(self, requests):
            out = await super().generate(requests)
            for samples in out:
                for s in samples:
                    s.cached_tokens = s.prompt_tokens // 2
            return out

    result, backend = run(DVTS(n=4), stepper(4), backend=Cached(stepper(4)))
    assert result.usage.cached_tokens > 0
    assert result.info["compute"]["cached_prompt_tokens"] == result.usage.cached_tokens
    # the continuation of each step call is the head's text exactly as written (steps and blank lines)
    for call in step_calls(backend)[1:]:
        assert all(r.continuation.endswith(SEP) for r in call)


def test_registry_builds_every_step_strategy():
    for name in ("beam-search", "dvts", "particle-filtering", "particle-gibbs"):
        assert build_strategy(name).config.n == 8


def test_seeds_differ_per_request():
    """Beams share a prefix: each request gets its own seed, so seeded engines do not repeat the same step."""
    task = ToyTask()
    backend = ScriptedBackend(stepper(3))
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(max_tokens=64, seed=5),
                          scorers=[FnScorer(by_last_option())], rng=random.Random(0))
    asyncio.run(BeamSearch(n=4, beam_width=2).run(task.load(1)[0].problem, ctx))
    seeds = [r.sampling.seed for c in backend.calls for r in c]
    assert len(set(seeds)) == len(seeds)
