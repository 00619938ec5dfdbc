"""φ-Decoding (docs/algorithms/phi-decoding.md) on scripted backends: pruning rules, the selection distributions, early
stopping, the final-selection fix, determinism, one engine call per phase, compute accounting."""

import asyncio
import json
import math
import random
import sys
from collections import Counter

import numpy as np
import pytest

from tests.fakes import ToyTask
from tts.backends.scripted import ScriptedBackend
from tts.clustering import ClusteringError, cluster_shares, cluster_texts
from tts.errors import UserError
from tts.strategies.phi_decoding import PhiDecoding
from tts.strategies.phi_selection import (
    choose_final,
    choose_next,
    sample_without_replacement,
    width_prune,
)
from tts.strategy import StrategyContext

PREFIX = "The reasoning steps are:\n\n"
ROLLOUT_CAP, FINAL_CAP = 100, 200
SMALL = {"rollout_max_tokens": ROLLOUT_CAP, "final_max_tokens": FINAL_CAP}


def softmax(xs):
    e = [math.exp(x - max(xs)) for x in xs]
    return [v / sum(e) for v in e]


class PhasedBackend(ScriptedBackend):
    """A scripted backend whose script also sees the phase of the call (told apart by the request caps):
    script(phase, answer_so_far, index) -> text or (text, mean logprob). It asserts that every call
    carries a single phase and records the phase of each call."""

    def __init__(self, script, parameter_count=None, cached_share=0.0):
        super().__init__(lambda text, index: script(self.phase, text.split(PREFIX, 1)[1], index))
        self.phases: list[str] = []
        self.parameter_count = parameter_count
        self.cached_share = cached_share

    @staticmethod
    def phase_of(request):
        if request.sampling.stop == ("\n",):
            return "steps"
        return {ROLLOUT_CAP: "foresight", FINAL_CAP: "final"}[request.sampling.max_tokens]

    async def generate(self, requests):
        phases = {self.phase_of(r) for r in requests}
        assert len(phases) == 1, f"one call mixed phases {phases}"
        self.phase = phases.pop()
        self.phases.append(self.phase)
        out = await super().generate(requests)
        for samples in out:
            for s in samples:
                s.cached_tokens = int(s.prompt_tokens * self.cached_share)
        return out


def depth(answer_so_far):
    return answer_so_far.count("\n")


async def run(script, seed=0, backend=None, **options):
    task = ToyTask()
    problem = task.load(1)[0].problem
    backend = backend or PhasedBackend(script)
    ctx = StrategyContext(backend=backend, answers=task, rng=random.Random(seed))
    result = await PhiDecoding(**{**SMALL, **options}).run(problem, ctx)
    return result, backend


# ----------------------------------------------------------------------------- sampling primitives


def test_sample_without_replacement_is_successive_sampling():
    rng = random.Random(0)
    weights = [0.5, 0.3, 0.2]
    draws = Counter(tuple(sample_without_replacement(np.log(weights), 2, rng)) for _ in range(20000))
    # P(0 then 1) = 0.5 * 0.3 / 0.5; P(2 then 0) = 0.2 * 0.5 / 0.8
    assert draws[(0, 1)] / 20000 == pytest.approx(0.3, abs=0.015)
    assert draws[(2, 0)] / 20000 == pytest.approx(0.125, abs=0.015)


def test_sample_without_replacement_survives_underflowed_weights():
    """Caution 3: softmax weights that underflow to zero still leave k distinct picks."""
    picks = sample_without_replacement([0.0, -math.inf, -math.inf, -2000.0], 4, random.Random(0))
    assert sorted(picks) == [0, 1, 2, 3] and picks[0] == 0 and picks[1] == 3
    with pytest.raises(ValueError):
        sample_without_replacement([0.0], 2, random.Random(0))


# ----------------------------------------------------------------------------- in-width pruning


def test_width_pruning_drops_below_mu_minus_sigma():
    mlogps = [-0.2] * 15 + [-3.0]
    pruned = width_prune(mlogps, 1.0, 0.1, 4, random.Random(0))
    mu, sigma = np.mean(mlogps), np.std(mlogps)
    assert pruned.mu == pytest.approx(mu) and pruned.sigma == pytest.approx(sigma)
    assert pruned.threshold == pytest.approx(mu - sigma)
    assert pruned.kept == list(range(15)) and pruned.added_back == []


def test_width_pruning_tops_up_to_the_beam_width():
    pruned = width_prune([-0.1, -0.1, -0.1, -5.0], 1.0, 0.1, 4, random.Random(0))
    assert pruned.kept == [0, 1, 2, 3] and pruned.added_back == [3]
    # equal values: none is strictly above mu - 0*sigma, so exactly `width` come back, drawn at random
    equal = width_prune([-0.5] * 8, 1.0, 0.1, 3, random.Random(0))
    assert len(equal.kept) == 3 and equal.added_back == equal.kept


async def test_width_pruned_candidates_get_no_rollout():
    """Beam 0's first candidate has a far lower step log-prob: it is the one left without foresight."""

    def script(phase, so_far, index):
        if phase == "steps":
            return (f"low step {index}\n", -3.0) if index == 0 else (f"step {index}\n", -0.2)
        return f"rollout {index} the answer is 1", -0.5

    result, backend = await run(script, max_steps=1)
    (record,) = result.info["steps"]
    assert record["width_pruning"]["pruned"] == 1 and record["rollouts"] == 15
    assert result.info["width_pruned_steps"] == 1 and result.info["candidate_steps"] == 16
    foresight_call = backend.calls[backend.phases.index("foresight")]
    assert len(foresight_call) == 15
    assert not any("low step" in r.continuation for r in foresight_call)
    low = [c for c in record["candidates"] if c["step"] == "low step 0"]
    assert low and not low[0]["kept"] and low[0]["advantage"] is None


# ----------------------------------------------------------------------------- selection distribution


def test_joint_distribution_matches_a_hand_computation():
    advantages = [0.3, 0.1, 0.2, -0.1, 0.25]
    pool, labels = [0, 1, 2, 4], [0, 0, 1, 0]  # cluster 0 holds 3 of the 4 pool members
    sel = choose_next(advantages, pool, labels, 2, 0.1, 0.7, random.Random(0))
    align = softmax([0.75, 0.75, 0.25, 0.75])
    adv = softmax([3.0, 1.0, 2.0, 2.5])
    expected = [(al + ad) / 2 for al, ad in zip(align, adv)]
    assert sel.mode == "joint"
    assert [sel.probabilities[i] for i in pool] == pytest.approx(expected)
    assert sel.probabilities[3] == 0.0  # outside the pool
    assert sel.alignment == [0.75, 0.75, 0.25, None, 0.75]
    assert sel.cluster_shares == pytest.approx([0.75, 0.25])
    assert sel.early_stop  # 0.75 > 0.7
    assert len(set(sel.chosen)) == 2 and set(sel.chosen) <= set(pool)
    # the first pick follows those probabilities
    rng = random.Random(1)
    firsts = Counter(choose_next(advantages, pool, labels, 1, 0.1, 0.7, rng).chosen[0] for _ in range(20000))
    for i, p in zip(pool, expected):
        assert firsts[i] / 20000 == pytest.approx(p, abs=0.015)


@pytest.mark.parametrize("pool, labels, mode", [
    ([0], [0], "advantage: small pool"),  # |S| < width
    ([0, 1, 2], None, "advantage: clustering failed"),
])
def test_fallback_draws_from_softmax_advantage_over_all_kept(pool, labels, mode):
    advantages = [0.3, 0.1, -0.2, -0.4]
    sel = choose_next(advantages, pool, labels, 2, 0.1, 0.7, random.Random(0))
    assert sel.mode == mode and not sel.early_stop
    assert sel.probabilities == pytest.approx(softmax([3.0, 1.0, -2.0, -4.0]))
    assert len(set(sel.chosen)) == 2


def test_shares_at_the_threshold_do_not_stop():
    sel = choose_next([0.1] * 10, list(range(10)), [0] * 7 + [1] * 3, 2, 0.1, 0.7, random.Random(0))
    assert sel.cluster_shares == pytest.approx([0.7, 0.3]) and not sel.early_stop  # needs > 0.7


# ----------------------------------------------------------------------------- final selection (with the fix)


@pytest.mark.parametrize("labels, members", [([1, 1, 0], [0, 1]), ([0, 0, 1], [0, 1]), ([0, 1, 1], [1, 2])])
def test_final_pick_is_inside_the_larger_cluster_whatever_its_label(labels, members):
    """The reference code samples from cluster 0's members even when cluster 1 is the larger: fixed."""
    advantages = [0.1, 0.2, 0.9]
    picks = set()
    for seed in range(50):
        final = choose_final(advantages, [0, 1, 2], labels, 0.1, random.Random(seed))
        assert final.mode == "larger cluster" and final.members == members
        picks.add(final.chosen)
    assert picks <= set(members)
    expected = softmax([advantages[b] / 0.1 for b in members])
    assert [final.probabilities[b] for b in members] == pytest.approx(expected)
    assert sum(final.probabilities) == pytest.approx(1.0)


def test_final_tie_draws_from_both_clusters_and_empty_pool_uses_negative_advantage():
    tie = choose_final([0.1, 0.3], [0, 1], [0, 1], 0.1, random.Random(0))
    assert tie.members == [0, 1] and tie.probabilities == pytest.approx(softmax([1.0, 3.0]))
    empty = choose_final([-0.1, -0.3, -0.2], [], None, 0.1, random.Random(0))
    assert empty.mode == "negative advantage: empty pool"
    assert empty.probabilities == pytest.approx(softmax([1.0, 3.0, 2.0]))  # softmax(-A/tau), as the reference
    failed = choose_final([-0.1, 0.3], [1], None, 0.1, random.Random(0))
    assert failed.mode == "advantage: clustering failed"
    assert failed.probabilities == pytest.approx(softmax([-1.0, 3.0]))


async def test_final_selection_avoids_the_outlier_with_the_best_advantage():
    """End to end: beam 0's completion is unlike the three others and has the best log-prob; the pick must
    still come from the larger cluster (the three alike)."""
    for seed in range(6):
        finals = iter(range(4))

        def script(phase, so_far, index, finals=finals):
            if phase == "steps":
                return f"step {index}\n", -0.3
            if phase == "foresight":
                return f"rollout {index} words here", -1.0
            if next(finals) == 0:  # the first completion requested: beam 0's
                return "zebra giraffe elephant okapi", -0.01
            return "so the total is 12 so the answer is 12", -0.4

        result, _ = await run(script, seed=seed, max_steps=1)
        final = result.info["final"]
        assert final["mode"] == "larger cluster" and final["pool"] == [0, 1, 2, 3]
        assert final["advantages"][0] == max(final["advantages"])
        assert final["members"] == [1, 2, 3] and result.chosen in (1, 2, 3)
        assert result.answer == "12" and result.confidence == pytest.approx(3 / 4)


# ----------------------------------------------------------------------------- in-depth pruning and early stopping


async def test_identical_steps_stop_after_min_depth():
    def script(phase, so_far, index):
        return ("same step\n", -0.4) if phase == "steps" else ("rest of it", -0.5)

    result, _ = await run(script)
    # advantages are 0 after the first step (same foresight value): no pool, no clustering; the identical
    # rule fires at t = 4, the fifth step
    assert result.info["stop_reason"] == "identical_steps" and result.info["steps_run"] == 5
    assert result.info["depth_pruned_steps"] == 3 and result.info["depth_pruned_share"] == pytest.approx(3 / 8)
    result, _ = await run(script, min_depth_steps=2)
    assert result.info["steps_run"] == 3
    result, _ = await run(script, depth_pruning=False)
    assert result.info["steps_run"] == 8 and result.info["stop_reason"] == "max_steps"


def rising(phase, so_far, index, agree=True):
    """Steps differ; foresight values rise with depth so advantages are positive from the second step."""
    d = depth(so_far)
    if phase == "steps":
        return f"step {d} option {index}\n", -0.3
    if phase == "foresight":
        text = "all rollouts say the same thing" if agree else ["alpha beta gamma", "delta epsilon zeta",
                                                                "kappa lambda sigma"][index % 3]
        return text, -1.0 + 0.1 * d
    return "and the answer is 3", -0.2


async def test_cluster_agreement_stops_after_min_depth():
    result, _ = await run(rising)
    records = result.info["steps"]
    assert records[0]["selection"]["mode"] == "advantage: small pool"  # A < 0 at the first step
    assert records[1]["selection"]["mode"] == "joint" and records[1]["selection"]["early_stop"]
    assert records[1]["selection"]["cluster_shares"] == pytest.approx([1.0])
    assert result.info["stop_reason"] == "cluster_agreement" and result.info["steps_run"] == 4  # t + 1 >= 4
    assert result.info["depth_pruned_steps"] == 4


async def test_no_stop_while_clusters_disagree():
    # Every rollout has its own text, so that three clusters hold about a third each; distinct prompts
    # keep the scripted index (hence the cluster) from repeating per beam.
    counter = iter(range(10**6))

    def script(phase, so_far, index):
        return rising(phase, so_far, next(counter), agree=False)

    result, _ = await run(script, max_steps=6)
    joint = [r for r in result.info["steps"] if r["selection"]["mode"] == "joint"]
    assert joint and all(max(r["selection"]["cluster_shares"]) <= 0.7 for r in joint)
    assert result.info["stop_reason"] == "max_steps" and result.info["steps_run"] == 6


async def test_all_beams_finished_stops_early_without_rollouts_or_completion():
    def script(phase, so_far, index):
        if phase == "steps":
            d = depth(so_far)
            return (f"step {d}.{index}\n", -0.3) if d < 2 else ("The answer is 42.", -0.1)
        return "carry on to the end", -0.6

    result, backend = await run(script)
    assert result.info["stop_reason"] == "all_finished" and result.info["steps_run"] == 3
    assert result.info["depth_pruned_steps"] == 0
    assert backend.phases == ["steps", "foresight", "steps", "foresight", "steps"]  # no rollout, no completion
    assert result.answer == "42"
    assert all(c.text.endswith("The answer is 42.") and c.info["finished_in_loop"] for c in result.candidates)
    last = result.info["steps"][-1]
    assert all(c["finished"] and c["foresight_tokens"] == 0 for c in last["candidates"])


async def test_empty_rollout_marks_the_step_as_the_end():
    """The model stops right after a step: that step finished the answer (its path is the step itself)."""

    def script(phase, so_far, index):
        if phase == "steps":
            return f"so it is {depth(so_far)}{index}\n", -0.3
        return ("", -0.1) if depth(so_far) >= 2 else ("keep going", -0.6)

    result, backend = await run(script)
    assert result.info["stop_reason"] == "all_finished" and result.info["steps_run"] == 2
    assert "final" not in backend.phases
    second = result.info["steps"][1]
    kept = [c for c in second["candidates"] if c["kept"]]
    assert all(c["finished"] and c["foresight_mlogp"] == pytest.approx(c["step_mlogp"]) for c in kept)


async def test_finished_beams_freeze_and_the_width_shrinks():
    """One candidate per step answers; once chosen its beam stops, and the open beams keep going."""

    def script(phase, so_far, index):
        if phase == "steps":
            d = depth(so_far)
            if index == 0 and d == 0:
                return "The answer is 7.", -0.05
            return f"step {d} option {index}\n", -0.3
        if phase == "foresight":
            return f"rollout at depth {depth(so_far)}", -1.0 + 0.1 * depth(so_far)
        return "so the answer is 7", -0.3

    for seed in range(8):
        result, backend = await run(script, seed=seed, max_steps=3, depth_pruning=False)
        records = result.info["steps"]
        finished_beams = [b for b in records[0]["beams"] if b["finished"]]
        if not finished_beams:
            continue
        assert records[1]["width"] == 4 - len(finished_beams)
        assert len(backend.calls[2]) == records[1]["width"]  # step requests only for open beams
        frozen = [c for c in result.candidates if c.info["finished_in_loop"]]
        assert frozen and all(c.text == PREFIX + "The answer is 7." for c in frozen)
        break
    else:
        pytest.fail("the answering candidate was never chosen")


# ----------------------------------------------------------------------------- engine calls, determinism, compute


async def test_one_engine_call_per_phase_and_batched_requests():
    result, backend = await run(rising, max_steps=3, depth_pruning=False)
    assert backend.phases == ["steps", "foresight"] * 3 + ["final"]
    assert result.usage.backend_calls == 7
    for call, phase in zip(backend.calls, backend.phases):
        if phase == "steps":
            assert len(call) == 4 and all(r.sampling.n == 4 and r.sampling.temperature == 0.6 for r in call)
        elif phase == "foresight":
            assert len(call) >= 4 and all(r.sampling.n == 1 and r.sampling.temperature == 1.0 for r in call)
        else:
            assert len(call) == 4 and all(r.sampling.max_tokens == FINAL_CAP for r in call)
    # rollouts continue from parent prefix + step + delimiter
    roll = backend.calls[1][0]
    assert roll.continuation.startswith(PREFIX + "step 0 option ") and roll.continuation.endswith("\n")


async def test_problems_in_flight_share_the_backend_without_mixing():
    task = ToyTask()
    backend = PhasedBackend(rising)
    problems = [item.problem for item in task.load(3)]
    ctxs = [StrategyContext(backend=backend, answers=task, rng=random.Random(i)) for i in range(3)]
    results = await asyncio.gather(*(PhiDecoding(**SMALL, max_steps=2).run(p, c) for p, c in zip(problems, ctxs)))
    assert [r.problem_id for r in results] == [p.id for p in problems]
    assert all(r.usage.backend_calls == 5 for r in results)
    assert len(backend.calls) == 15


async def test_deterministic_under_a_seed():
    def script(phase, so_far, index):  # scripted backend's hash log-probs: varied and reproducible
        d = depth(so_far)
        return {"steps": f"line {d} choice {index % 5}\n", "foresight": f"path {index % 3} from {d}",
                "final": f"the answer is {index % 2 + 3}"}[phase]

    a, _ = await run(script, seed=3)
    b, _ = await run(script, seed=3)

    def dump(r):
        return r.model_dump(exclude={"usage": {"wall_time"}})

    assert dump(a) == dump(b)
    others = [dump(r) for r in [(await run(script, seed=s))[0] for s in range(4, 8)]]
    assert any(o["info"]["steps"] != dump(a)["info"]["steps"] for o in others)


async def test_compute_accounting_and_flops():
    backend = PhasedBackend(rising, parameter_count=1000, cached_share=0.5)
    result, _ = await run(None, backend=backend, max_steps=2, depth_pruning=False)
    compute, usage = result.info["compute"], result.usage
    assert compute["generated_tokens"] == usage.completion_tokens > 0
    assert compute["prompt_tokens"] == usage.prompt_tokens
    assert compute["cached_prompt_tokens"] == usage.cached_tokens > 0
    assert compute["flops_with_prefix_cache"] == 2 * 1000 * (usage.prompt_tokens - usage.cached_tokens
                                                             + usage.completion_tokens)
    assert compute["flops_without_prefix_cache"] == 2 * 1000 * (usage.prompt_tokens + usage.completion_tokens)
    phases = compute["phases"]
    assert sum(p["completion_tokens"] for p in phases.values()) == usage.completion_tokens
    assert sum(p["prompt_tokens"] for p in phases.values()) == usage.prompt_tokens
    assert sum(p["backend_calls"] for p in phases.values()) == usage.backend_calls == 5
    # a candidate counts the tokens and log-probs of its beam's steps and its completion:
    # two steps "step d option i" (4 scripted tokens, -0.3 each) and "and the answer is 3" (5, -0.2)
    for c in result.candidates:
        assert c.completion_tokens == 13
        assert c.mean_logprob == pytest.approx((8 * -0.3 + 5 * -0.2) / 13)
        assert len(c.info["step_logprobs"]) == 2
    json.dumps(result.info, allow_nan=False)  # plain JSON, as the run folder stores it
    unknown, _ = await run(rising, max_steps=1)
    assert unknown.info["compute"]["flops_with_prefix_cache"] is None


# ----------------------------------------------------------------------------- options and clustering


def test_options_are_validated():
    assert PhiDecoding().config.beams == 4 and PhiDecoding().config.depth_threshold == 0.7
    for bad in [{"beams": 0}, {"tau": 0}, {"depth_threshold": 1.5}, {"bogus": 1}, {"answer_pattern": "("}]:
        with pytest.raises(ValueError):
            PhiDecoding(**bad)


def test_embedding_clustering_without_the_package_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match="sentence-transformers"):
        PhiDecoding(clustering="embedding")


def test_tfidf_kmeans_clusters_and_failures():
    texts = ["apples and pears", "pears and apples", "apples pears and plums",
             "trains and buses", "buses trains", "rockets to the moon"]
    labels = cluster_texts(texts, 3, seed=0)
    assert labels[0] == labels[1] == labels[2] and labels[3] == labels[4] and len(set(labels)) == 3
    assert list(cluster_texts(texts, 3, seed=0)) == list(labels)
    assert cluster_shares([0, 0, 1, 0]).tolist() == [0.75, 0.25]
    with pytest.raises(ClusteringError):
        cluster_texts(texts[:2], 3)
    with pytest.raises(ClusteringError):
        cluster_texts(["1", "2", "3"], 2)  # no word of two characters: empty vocabulary
    # fewer distinct texts than clusters: duplicates share a cluster
    dupes = cluster_texts(["same words"] * 3 + ["other text", "other text"], 3, seed=1)
    assert len(set(dupes[:3])) == 1 and dupes[3] == dupes[4] != dupes[0]


async def test_runs_through_the_runner_into_a_run_folder(tmp_path):
    from tts.runner import evaluate
    from tts.runs import RunFolder
    from tts.types import SamplingConfig

    task = ToyTask(size=2)
    config = {"task": "toy", "strategy": "phi-decoding", "strategy_options": {}, "model": "scripted",
              "backend": "scripted", "sampling": {}, "seed": 0, "task_options": {}}
    metrics = await evaluate(task, task.load(), PhiDecoding(**SMALL, max_steps=2), PhasedBackend(rising),
                             RunFolder(tmp_path), config, SamplingConfig(), progress=False)
    assert metrics["problems"] == 2
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(isinstance(r["info"]["final"]["probabilities"][0], float) for r in rows)
    samples = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 8  # the four final answers of each problem
