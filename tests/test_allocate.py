"""`tts allocate` (OSCA; Zhang et al. 2024) and the `mixture` strategy: the objective, exhaustive and greedy
search, held-out coverage without replacement, the split, the study over run folders, mixture.json run by
the strategy, and the refusals. Run folders are written by RunFolder itself with hand-chosen correct flags."""

from __future__ import annotations

import asyncio
import itertools
import json
from math import comb

import numpy as np
import pytest

from tts.cli import main
from tts.errors import UserError
from tts.mixture import load_mixture
from tts.runs import RunFolder
from tts.strategies.mixture import Mixture
from tts.study.allocate import allocate, labels, split_problems
from tts.study.allocate_report import MIXTURE_NAME, write_allocation
from tts.study.allocation import (
    allocations,
    best_allocation,
    best_single,
    exhaustive,
    expected_coverage,
    greedy,
    heldout_coverage,
)
from tts.testing import ScriptedBackend, ToyTask, run_strategy
from tts.types import Candidate, Result, Usage, Verdict


def brute_force(p, budget):
    """Every composition of `budget` into len(p[0]) parts, scored one by one: (value, best allocations)."""
    C = len(p[0])
    scored = [(expected_coverage(np.asarray(p), n), n) for n in itertools.product(range(budget + 1), repeat=C)
              if sum(n) == budget]
    top = max(v for v, _ in scored)
    return top, {n for v, n in scored if v >= top - 1e-12}


# ================================================================================================ the objective


def test_expected_coverage_by_hand():
    p = np.array([[0.5, 0.0], [0.2, 1.0]])
    # problem 0: 1 - 0.5^2 * 1^1 = 0.75; problem 1: 1 - 0.8^2 * 0^1 = 1
    assert expected_coverage(p, [2, 1]) == pytest.approx((0.75 + 1.0) / 2)
    assert expected_coverage(p, [0, 0]) == 0.0
    # p = 1 with no sample of that configuration must not turn into 0 * -inf
    assert expected_coverage(p, [1, 0]) == pytest.approx((0.5 + 0.2) / 2)


@pytest.mark.parametrize("p,budget,expected", [
    # problems only config 0 / only config 1 solve surely, a third config 2 solves half the time:
    # one sample each for the sure ones, the rest on config 2 -> (1 + 1 + 0.75) / 3
    ([[1, 0, 0], [0, 1, 0], [0, 0, 0.5]], 4, (1, 1, 2)),
    # one problem: everything on the best configuration
    ([[0.5, 0.6, 0.3]], 4, (0, 4, 0)),
    # two kinds of problem, equally many: split the budget between their two specialists
    ([[0.5, 0.0, 0.1], [0.0, 0.5, 0.1], [0.5, 0.0, 0.1], [0.0, 0.5, 0.1]], 4, (2, 2, 0)),
    # a generalist beats the specialists when they are weak
    ([[0.1, 0.0, 0.4], [0.0, 0.1, 0.4]], 3, (0, 0, 3)),
])
def test_exhaustive_is_optimal_against_brute_force(p, budget, expected):
    found = exhaustive(np.asarray(p, dtype=float), [1] * 3, [budget] * 3, budget)
    assert found is not None and found.method == "exhaustive"
    top, best = brute_force(p, budget)
    assert best == {expected}, "the hand-worked optimum is the only one"
    assert found.counts == expected and found.value == pytest.approx(top)
    assert found.evaluated == comb(budget + 2, 2)  # every composition of the budget into 3 parts, no more


def test_greedy_matches_exhaustive_where_it_should():
    """Greedy marginal gains plus hill climbing reach the exhaustive optimum on the hand cases, on a single
    problem (log-concave: greedy is optimal) and on seeded random small instances; never above it."""
    rng = np.random.default_rng(7)
    cases = [np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.5]]), np.array([[0.5, 0.6, 0.3]])]
    cases += [rng.random((int(rng.integers(1, 7)), 3)) * (rng.random((1, 3)) < 0.8) for _ in range(20)]
    for p in cases:
        for budget in (1, 3, 5):
            ex = exhaustive(p, [1] * 3, [budget] * 3, budget)
            gr = greedy(p, [1] * 3, [budget] * 3, budget)
            assert ex is not None and sum(gr.counts) == budget
            assert gr.value == pytest.approx(ex.value, abs=1e-12), (p, budget, gr, ex)


def test_past_the_limit_the_search_is_greedy_and_says_so():
    p = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.5]])
    assert exhaustive(p, [1] * 3, [4] * 3, 4, limit=14) is None  # 15 compositions of 4 into 3 parts
    found = best_allocation(p, [1] * 3, [4] * 3, 4, limit=14)
    assert found.method == "greedy" and found.counts == (1, 1, 2)
    assert best_allocation(p, [1] * 3, [4] * 3, 4, limit=15).method == "exhaustive"


def test_token_costs_enumerate_exactly_the_maximal_allocations():
    costs, caps, budget = [1.0, 3.0, 2.0], [4, 2, 3], 7
    every = [n for n in itertools.product(*(range(c + 1) for c in caps)) if np.dot(n, costs) <= budget]
    maximal = {n for n in every
               if all(n[c] == caps[c] or np.dot(n, costs) + costs[c] > budget for c in range(3))}
    found = list(allocations(costs, caps, budget))
    assert set(found) == maximal and len(found) == len(maximal)
    # the search respects costs and caps: config 1 is the best but dear, capped at 2
    p = np.array([[0.1, 0.9, 0.2], [0.1, 0.9, 0.2]])
    best = exhaustive(p, costs, caps, budget)
    assert best is not None and best.counts[1] == 2 and np.dot(best.counts, costs) <= budget
    assert greedy(p, costs, caps, budget).value == pytest.approx(best.value)
    assert best_single(p, costs, caps, budget) == (1, 2)  # 7 tokens buy 2 of it (capped at 2 anyway)


def test_heldout_coverage_draws_without_replacement_by_hand():
    correct = np.array([[1, 2], [0, 4]])
    size = np.array([[4, 4], [4, 4]])
    # problem 0: C(3,2)/C(4,2) * C(2,1)/C(4,1) = 3/6 * 2/4 fail; problem 1: config 1 is all correct
    assert heldout_coverage(correct, size, [2, 1]) == pytest.approx((0.75 + 1.0) / 2)
    # all of a pool with one correct sample: that sample is surely drawn
    assert heldout_coverage(correct, size, [4, 0]) == pytest.approx(0.5)
    assert heldout_coverage(correct, size, [0, 0]) == 0.0


# ================================================================================================ the split


def test_split_is_deterministic_disjoint_and_seeded():
    ids = [f"q{i}" for i in range(20)]
    train, held = split_problems(ids, 0.5, 3)
    assert (train, held) == split_problems(list(reversed(ids)), 0.5, 3)  # the order given does not matter
    assert not set(train) & set(held) and set(train) | set(held) == set(ids)
    assert len(train) == 10 and train == sorted(train)
    assert split_problems(ids, 0.5, 4) != (train, held)
    assert len(split_problems(ids, 0.3, 3)[0]) == 6
    with pytest.raises(UserError, match="0.7 of the 1 problem every run finished leaves no held-out problem"):
        split_problems(ids[:1], 0.7, 0)
    with pytest.raises(UserError, match="leaves no training problem"):
        split_problems(ids[:3], 0.1, 0)


def test_labels_name_what_differs():
    base = {"model": "m", "temperature": 0.7, "top_p": 1.0, "perturb": None, "max_tokens": 512}
    assert labels([base, {**base, "temperature": 1.0}], ["a", "b"]) == ["T=0.7", "T=1"]
    assert labels([base, {**base, "perturb": "role"}], ["a", "b"]) == ["perturb=none", "perturb=role"]
    assert labels([base, dict(base)], ["a", "b"]) == ["a", "b"]  # nothing differs: the folder names


# ================================================================================================ run folders


def write_run(folder, hits, *, pool=8, temperature=0.7, task="gsm8k", strategy="repeated-sampling", tokens=50,
              model="toy-model", perturb=None, ids=None):
    """One problem per entry of `hits`: that many of its `pool` samples are correct (the first ones)."""
    run = RunFolder(folder)
    options = {"n": pool, **({"perturb": perturb} if perturb else {})}
    run.open({"task": task, "task_options": {}, "strategy": strategy, "strategy_options": options, "model": model,
              "backend": "scripted", "sampling": {"temperature": temperature, "top_p": 0.95, "max_tokens": 256},
              "seed": 0})
    for q, k in enumerate(hits):
        cands = [Candidate(text=f"q{q} s{i}", answer="10" if i < k else "3", completion_tokens=tokens)
                 for i in range(pool)]
        oracle = [Verdict(verifier="oracle", score=float(i < k), passed=i < k) for i in range(pool)]
        run.append(Result(problem_id=ids[q] if ids else f"q{q}", strategy=strategy, answer="10", chosen=0,
                          candidates=cands, usage=Usage()), oracle, oracle[0])
    run.release()
    return folder


# Even problems: the cold configuration solves half its samples, the hot one none; odd problems the reverse;
# the middle one solves 1 of 8 everywhere. With seed 1 the training and held-out halves have two of each kind.
COLD, MID, HOT = [4, 0] * 4, [1] * 8, [0, 4] * 4


def three_runs(tmp_path, **kwargs):
    return [write_run(tmp_path / "cold", COLD, temperature=0.2, **kwargs),
            write_run(tmp_path / "mid", MID, temperature=0.7, **kwargs),
            write_run(tmp_path / "hot", HOT, temperature=1.0, **kwargs)]


def quiet(*args, **kwargs):
    return allocate(*args, say=lambda line: None, **kwargs)


def test_the_study_allocates_on_training_and_reports_held_out(tmp_path):
    report = quiet(three_runs(tmp_path), 4, seed=1)
    assert report.train_problems == ["q0", "q1", "q4", "q5"] and report.heldout_problems == ["q2", "q3", "q6", "q7"]
    r = report.result
    assert r.allocation == {"T=0.2": 2, "T=0.7": 0, "T=1": 2} and r.method == "exhaustive"
    assert r.train == pytest.approx(0.75)  # 1 - 0.5^2 on every training problem
    # held out: 2 of the specialist's 8 samples, 4 correct: fail C(4,2)/C(8,2) = 6/28, the other pool all wrong
    assert r.heldout == pytest.approx(1 - 6 / 28)
    # best single on training: the cold one (1 - 0.5^4 on half the problems beats 1 - (7/8)^4); ties: first
    assert (r.best_single.label, r.best_single.samples) == ("T=0.2", 4)
    assert r.best_single.heldout == pytest.approx((1 - 1 / 70) / 2)  # C(4,4)/C(8,4) on the even half
    mid = next(s for s in r.singles if s.label == "T=0.7")
    assert mid.heldout == pytest.approx(1 - comb(7, 4) / comb(8, 4)) and mid.samples == 4
    assert [b.budget for b in report.curve] == [1, 2, 4, 8]  # 16 is more than the pools hold
    assert report.curve[2] == r
    cold = report.configs[0]
    assert (cold.temperature, cold.top_p, cold.pool, cold.tokens_per_sample) == (0.2, 0.95, 8, 50.0)
    assert cold.train_pass_at_1 == pytest.approx(0.25)


def test_another_split_gives_another_allocation(tmp_path):
    """Seed 0 puts three even problems in training: the cold specialist gets one sample more."""
    report = quiet(three_runs(tmp_path), 4, seed=0)
    assert sum(int(q[1:]) % 2 == 0 for q in report.train_problems) == 3
    assert report.result.allocation == {"T=0.2": 3, "T=0.7": 0, "T=1": 1}
    assert report.result.train == pytest.approx((3 * (1 - 0.5 ** 3) + 0.5) / 4)


def test_token_costs_change_the_allocation(tmp_path):
    """The hot specialist writes 6x longer samples: at 400 tokens per problem it gets one sample, where
    counting samples it would get half the budget."""
    runs = [write_run(tmp_path / "cold", COLD, temperature=0.2, tokens=50),
            write_run(tmp_path / "hot", HOT, temperature=1.0, tokens=300)]
    assert quiet(runs, 4, seed=1).result.allocation == {"T=0.2": 2, "T=1": 2}
    report = quiet(runs, 400, seed=1, cost="tokens", budgets=[300, 400])
    r = report.result
    assert report.configs[1].tokens_per_sample == 300.0
    # the maximal allocations are (2, 1): 0.75 and 0.5 on the two kinds, and (8, 0): 1 - 0.5^8 on half
    assert r.allocation == {"T=0.2": 2, "T=1": 1} and r.spent == 400
    assert r.train == pytest.approx(0.625) and r.method == "exhaustive" and r.evaluated == 2
    assert [s.samples for s in r.singles] == [8, 1]  # 400 tokens: 8 cold samples, or 1 hot one
    assert [b.budget for b in report.curve] == [300, 400]
    with pytest.raises(UserError, match="buys 10 samples of T=0.2"):
        quiet(runs, 500, seed=1, cost="tokens")
    with pytest.raises(UserError, match="40 tokens buys no sample of any configuration"):
        quiet(runs, 40, seed=1, cost="tokens")


def test_cli_writes_the_files_and_the_mixture_runs_in_one_engine_call(tmp_path, capsys):
    runs = three_runs(tmp_path)
    out = tmp_path / "alloc"
    assert main(["allocate", *map(str, runs), "--budget", "4", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exhaustive over 15 allocations" in printed and "-s mixture" in printed
    data = json.loads((out / "allocate.json").read_text())
    assert data["result"]["allocation"] == {"T=0.2": 2, "T=0.7": 0, "T=1": 2}
    assert (out / "allocate.md").read_text() == printed
    mixture = load_mixture(out / MIXTURE_NAME)
    assert [(c.label, c.n, c.temperature, c.top_p) for c in mixture.components] == [("T=0.2", 2, 0.2, 0.95),
                                                                                    ("T=1", 2, 1.0, 0.95)]
    backend = ScriptedBackend(["so 10", "so 7", "so 10"])
    result = asyncio.run(run_strategy(Mixture(n=4, mixture=str(out / MIXTURE_NAME)), ToyTask(), backend, problem=1))
    (call,) = backend.calls  # one engine call, one request per component
    assert [(r.sampling.n, r.sampling.temperature, r.sampling.top_p) for r in call] == [(2, 0.2, 0.95), (2, 1.0, 0.95)]
    assert [c.info["component"] for c in result.candidates] == ["T=0.2", "T=0.2", "T=1", "T=1"]
    assert result.answer == "10" and result.info["components"] == {"T=0.2": 2, "T=1": 2}


def test_a_perturbed_component_draws_perturbed_prompts_in_the_same_call():
    mixture = {"components": [{"label": "plain", "n": 1, "temperature": 0.3},
                              {"label": "role", "n": 2, "temperature": 0.9, "perturb": "role"}]}
    backend = ScriptedBackend(["so 10"])
    result = asyncio.run(run_strategy(Mixture(n=3, mixture=mixture), ToyTask(), backend, problem=1))
    (call,) = backend.calls
    assert [(r.sampling.n, r.sampling.temperature) for r in call] == [(1, 0.3), (1, 0.9), (1, 0.9)]
    assert call[0].prompt == ToyTask().load(2)[1].problem.prompt and call[1].prompt != call[0].prompt
    assert "perturbation" not in result.candidates[0].info
    assert [c.info["perturbation"]["spec"] for c in result.candidates[1:]] == ["role", "role"]


@pytest.mark.parametrize("options,message", [
    # n must be the file's total
    ({"n": 5}, "the mixture draws 4 samples per problem (2 a + 2 b) but n is 5; run it with -n 4"),
    # one backend, one model
    ({"models": ["m1", "m2"]}, "the mixture needs 2 models (m1, m2)"),
    # labels name the components
    ({"labels": ["a", "a"]}, "component label 'a' appears twice"),
    ({"perturb": "shout"}, "unknown perturber 'shout'"),
])
def test_the_strategy_refuses_a_bad_mixture(options, message):
    labels_ = options.get("labels", ["a", "b"])
    models = options.get("models", [None, None])
    components = [{"label": label, "n": 2, "temperature": 0.5, "model": m, "perturb": options.get("perturb")}
                  for label, m in zip(labels_, models)]
    with pytest.raises(UserError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        Mixture(n=options.get("n", 4), mixture={"components": components})


@pytest.mark.parametrize("content,message", [
    (None, "mixture file not found"),                          # no file
    ("{", "is not valid JSON"),                                 # not JSON
    ('{"components": []}', "is not a mixture file: components: List should have at least 1 item"),
    ('{"components": [{"label": "a", "n": 2}]}', "is not a mixture file: components.0.temperature: Field required"),
    ('{"components": [{"label": "a", "n": 2, "temperature": 1, "colour": 1}]}', "components.0.colour: Extra inputs"),
])
def test_a_bad_mixture_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "mixture.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        Mixture(n=2, mixture=str(path))
    assert "\n" not in str(err.value)


# ================================================================================================ refusals


@pytest.mark.parametrize("change,budget,message", [
    # runs of another task
    ({"task": "math500"}, 2, "runs of different tasks"),
    # not a pool of independent samples
    ({"strategy": "mcts"}, 2, "is a mcts run; allocation needs pools of independent samples"),
    # other problems entirely
    ({"ids": [f"x{i}" for i in range(8)]}, 2, "no finished problem with samples in common"),
    # a budget larger than a pool (without replacement)
    ({"pool": 4, "hits": [1] * 8}, 5, "--budget 5 is more than the 4 samples per problem that T=0.9 holds"),
])
def test_refusals(tmp_path, change, budget, message):
    first = write_run(tmp_path / "a", COLD, temperature=0.2)
    hits = change.pop("hits", COLD)
    second = write_run(tmp_path / "b", hits, temperature=0.9, **change)
    with pytest.raises(UserError, match=message):
        quiet([first, second], budget)


def test_refusals_of_the_run_list(tmp_path):
    first = write_run(tmp_path / "a", COLD, temperature=0.2)
    with pytest.raises(UserError, match="at least two runs"):
        quiet([first], 2)
    with pytest.raises(UserError, match="is given twice"):
        quiet([first, tmp_path / "a" / ".." / "a"], 2)
    zero = write_run(tmp_path / "z", HOT, temperature=1.0, tokens=0)
    with pytest.raises(UserError, match="--cost tokens: T=1 records no completion tokens"):
        quiet([first, zero], 100, cost="tokens")
    with pytest.raises(UserError, match="--budgets 9 is more than the 8 samples"):
        quiet([first, zero], 2, budgets=[2, 9])


def test_nothing_is_written_when_refused(tmp_path):
    runs = three_runs(tmp_path)
    out = tmp_path / "alloc"
    with pytest.raises(UserError):
        write_allocation(quiet(runs, 9), out)
    assert not out.exists()
    assert sorted(p.name for p in runs[0].iterdir()) == ["config.json", "results.jsonl", "samples.jsonl"]


def test_tts_eval_runs_a_mixture_file_and_records_its_components(tmp_path, capsys):
    """Through the real command: config.json holds the components (not the path), every sample its component,
    and a resume after the file changed is refused as another configuration."""
    from tests.fake_openai_server import FakeOpenAIServer

    path = tmp_path / "mixture.json"
    components = [{"label": "cold", "n": 1, "temperature": 0.2}, {"label": "hot", "n": 2, "temperature": 1.0}]
    path.write_text(json.dumps({"components": components}))
    out = tmp_path / "run"
    with FakeOpenAIServer(lifetime=120) as server:
        argv = ["eval", "--task", "gsm8k", "--limit", "1", "-n", "3", "-s", "mixture", "-o", f"mixture={path}",
                "--backend", "openai", "--base-url", server.url, "--no-progress", "--out", str(out)]
        assert main(argv) == 0
        config = json.loads((out / "config.json").read_text())
        recorded = config["strategy_options"]["mixture"]["components"]
        assert [(c["label"], c["n"], c["temperature"]) for c in recorded] == [("cold", 1, 0.2), ("hot", 2, 1.0)]
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert [s["info"]["component"] for s in samples] == ["cold", "hot", "hot"]
        path.write_text(json.dumps({"components": [{**components[0], "temperature": 0.3}, components[1]]}))
        capsys.readouterr()
        assert main(argv) == 2
    assert "holds a different run (differs in: strategy_options)" in capsys.readouterr().err
