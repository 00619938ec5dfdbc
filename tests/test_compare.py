"""`tts compare`: runs side by side at matched compute, and self-consistency / weighted-vote points derived from
a pool's first k samples. Run folders are written by RunFolder itself, with hand-made flags, usage and verdicts."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tts.cli import main
from tts.errors import UserError
from tts.runs import RunFolder
from tts.study.compare import compare, render_markdown, write_comparison
from tts.types import Candidate, Result, Usage, Verdict

USAGE = dict(prompt_tokens=100, cached_tokens=40, completion_tokens=100, backend_calls=1, scorer_prompt_tokens=400,
             scorer_cached_tokens=80, scorer_completion_tokens=8, scorer_calls=1, generator_flops=320_000.0,
             scorer_flops=1e6, wall_time=2.0)


def same(a, b):
    return a == b


def write_run(folder, correct, *, strategy="best-of-n", options=None, task="gsm8k", model="toy-model",
              answers=None, scores=None, tokens=None, usage=None, metrics=None, ids=None):
    """One problem per entry of `correct` (ids toy/0, toy/1, ... unless given); `answers[p]` are its samples
    (gold is "10"), `scores[p]` their judge scores, `usage[p]` overrides of USAGE."""
    run = RunFolder(folder)
    run.open({"task": task, "task_options": {"seed": 0}, "strategy": strategy,
              "strategy_options": {"n": len(answers[0]) if answers else 2, **(options or {})}, "model": model,
              "backend": "scripted", "sampling": {}, "seed": 0})
    for p, ok in enumerate(correct):
        row = answers[p] if answers else ["10" if ok else "3", "3"]
        cands = [Candidate(text=f"p{p} s{i}: {a}", answer=a, completion_tokens=tokens[i] if tokens else 50,
                           verdicts=[Verdict(verifier="judge", score=scores[p][i])] if scores else [])
                 for i, a in enumerate(row)]
        oracle = [Verdict(verifier="oracle", score=float(a == "10"), passed=a == "10") for a in row]
        chosen = Verdict(verifier="oracle", score=float(ok), passed=bool(ok))
        pid = ids[p] if ids else f"toy/{p}"
        run.append(Result(problem_id=pid, strategy=strategy, answer=row[0], chosen=0, candidates=cands,
                          usage=Usage(**{**USAGE, **((usage or {}).get(p) or {})})), oracle, chosen)
    if metrics is not None:
        run.write_metrics(metrics)
    run.release()
    return folder


def quiet(*args, **kwargs):
    return compare(*args, say=lambda line: None, equivalent=same, **kwargs)


# ================================================================================================ run points


def test_accuracy_and_bootstrap_interval_from_the_correct_flags(tmp_path):
    flags = [1, 1, 0, 1, 0, 1, 1, 1]
    data = quiet([write_run(tmp_path / "a", flags)], bootstrap=500, seed=3)
    (point,) = data.points
    assert point.accuracy == 0.75 and point.problems == 8
    picks = np.random.default_rng(3).integers(0, 8, size=(500, 8))
    lo, hi = np.percentile(np.array(flags, dtype=float)[picks].mean(axis=1), [2.5, 97.5])
    assert (point.accuracy_lo, point.accuracy_hi) == (pytest.approx(lo), pytest.approx(hi))
    assert point.accuracy_lo < 0.75 < point.accuracy_hi
    assert quiet([tmp_path / "a"], bootstrap=0).points[0].accuracy_lo is None


def test_costs_are_means_per_problem_and_session_figures_come_from_metrics(tmp_path):
    usage = {1: dict(completion_tokens=300, scorer_completion_tokens=28, cached_tokens=0, backend_calls=3,
                     generator_flops=120_000.0, wall_time=4.0)}
    metrics = {"problems": 2, "session_seconds": 10.0, "generated_this_session": 4,
               "engine_this_session": {"steps": 9, "mean_batch": 3.5}}
    (p,) = quiet([write_run(tmp_path / "a", [1, 0], usage=usage, metrics=metrics)], bootstrap=0).points
    assert (p.generated_tokens, p.scorer_tokens, p.cached_tokens) == (200, 418, 100)
    assert (p.generator_flops, p.scorer_flops, p.total_flops) == (220_000, 1e6, 1_220_000)
    assert p.scorer_flops_share == pytest.approx(1e6 / 1.22e6)
    assert (p.backend_calls, p.scorer_calls) == (2, 1)
    assert (p.wall_seconds, p.latency_seconds, p.mean_batch) == (2.5, 3.0, 3.5)
    # a partial run without metrics.json: the session figures are unknown
    (q,) = quiet([write_run(tmp_path / "b", [1, 0])], bootstrap=0).points
    assert (q.wall_seconds, q.mean_batch, q.latency_seconds) == (None, None, 2.0)


def _drop_usage_field(folder, field, problem=0):
    path = folder / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[problem]["usage"][field]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("change,generator,scorer,total", [
    (None, 320_000, 1e6, 1.32e6),
    ({"scorer_flops": None}, 320_000, None, None),                  # a judge of unknown size
    ({"generator_flops": None}, None, 1e6, None),                   # a server that does not say its size
    ("drop:generator_flops", None, 1e6, None),                      # a line written before FLOPs were counted
    ("drop:scorer_flops", 320_000, None, None),
])
def test_flops_are_unknown_when_any_part_is(tmp_path, change, generator, scorer, total):
    folder = write_run(tmp_path / "a", [1, 1], usage={1: change} if isinstance(change, dict) else None)
    if isinstance(change, str):
        _drop_usage_field(folder, change.split(":")[1])
    data = quiet([folder], bootstrap=0)
    (p,) = data.points
    assert (p.generator_flops, p.scorer_flops) == (generator, scorer)
    assert p.total_flops == (None if total is None else pytest.approx(total))
    if total is None:
        assert p.scorer_flops_share is None
        row = render_markdown(data).splitlines()[-1].split(" | ")
        assert row[6] == "?" and row[7] == "?"


@pytest.mark.parametrize("runs,labels", [
    # n alone tells runs of one strategy apart; options that differ are named
    ([("best-of-n", {"n": 2}), ("best-of-n", {"n": 4})], [("best-of-n", "best-of-n n=2"), ("best-of-n", "best-of-n n=4")]),
    ([("beam-search", {"n": 8, "beam_width": 4, "depth": 3}), ("beam-search", {"n": 8, "beam_width": 2, "depth": 3})],
     [("beam-search beam_width=4", "beam-search n=8 beam_width=4"),
      ("beam-search beam_width=2", "beam-search n=8 beam_width=2")]),
    # identical strategy and options: the folder names tell them apart
    ([("rpc", {"n": 4}), ("rpc", {"n": 4})], [("rpc (r0)", "rpc n=4 (r0)"), ("rpc (r1)", "rpc n=4 (r1)")]),
])
def test_labels_name_the_budget_and_the_options_that_differ(tmp_path, runs, labels):
    folders = [write_run(tmp_path / f"r{i}", [1, 0], strategy=s, options=o) for i, (s, o) in enumerate(runs)]
    assert [(p.family, p.label) for p in quiet(folders, bootstrap=0).points] == labels


def test_only_problems_finished_in_every_run_are_compared(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1, 1, 1, 0])
    b = write_run(tmp_path / "b", [0, 1, 1], ids=["toy/1", "toy/2", "toy/9"])
    data = compare([a, b], bootstrap=0)
    assert data.problems == 2
    assert [p.accuracy for p in data.points] == [1.0, 0.5]  # toy/1 and toy/2 only
    err = capsys.readouterr().err
    assert f"2 of 4 problems of {a} are not finished in every run" in err
    assert f"1 of 3 problems of {b} are not finished in every run" in err


@pytest.mark.parametrize("other,message", [
    (dict(task="math500"), "runs of different tasks"),
    (dict(model="other-model"), "runs of different models"),
    (dict(ids=["x/1", "x/2"]), "the runs have no finished problem in common"),
])
def test_runs_that_cannot_be_compared_are_refused_with_exit_2(tmp_path, capsys, other, message):
    a = write_run(tmp_path / "a", [1, 0])
    b = write_run(tmp_path / "b", [1, 0], **other)
    with pytest.raises(UserError, match=message):
        quiet([a, b])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


# ================================================================================================ pool points

# Gold "10"; four samples per problem with their judge scores. At k = 2 (samples 0 and 1 only):
POOL_ANSWERS = [["3", "10", "10", "3"], ["10", "10", "3", "3"], ["3", "10", "3", "3"], ["10", "3", "10", "10"]]
POOL_SCORES = [[0.9, 0.2, 0.2, 0.9],   # majority: 3 and 10 tie (1/2); weighted: 3 (0.9 > 0.2): 0
               [0.1, 0.1, 0.9, 0.9],   # majority: 10 (1); weighted: 10, the only answer: 1
               [0.1, 0.8, 0.9, 0.9],   # majority: tie (1/2); weighted: 10 (0.8 > 0.1): 1
               [0.3, 0.4, 0.9, 0.9]]   # majority: tie (1/2); weighted: 3 (0.4 > 0.3): 0
TOKENS = [10, 20, 30, 40]


@pytest.fixture
def pool(tmp_path):
    return write_run(tmp_path / "pool", [0, 1, 0, 1], strategy="repeated-sampling", answers=POOL_ANSWERS,
                     scores=POOL_SCORES, tokens=TOKENS)


def test_pool_points_vote_on_the_first_k_samples(tmp_path, pool):
    run = write_run(tmp_path / "run", [1, 1, 0, 1])
    data = quiet([run], pool, budgets=[2, 4], bootstrap=0)
    derived = {(p.strategy, p.budget): p for p in data.points if p.source == "pool"}
    assert set(derived) == {("self-consistency", 2), ("weighted-vote[judge]", 2), ("self-consistency", 4),
                            ("weighted-vote[judge]", 4)}
    assert derived["self-consistency", 2].accuracy == pytest.approx((0.5 + 1 + 0.5 + 0.5) / 4)
    assert derived["weighted-vote[judge]", 2].accuracy == pytest.approx((0 + 1 + 1 + 0) / 4)
    # k = 4: majority ties on problems 0 and 1, "3" wins problem 2, "10" problem 3
    assert derived["self-consistency", 4].accuracy == pytest.approx((0.5 + 0.5 + 0 + 1) / 4)
    assert derived["self-consistency", 2].label == "self-consistency n=2 (pool)"


def test_pool_points_are_costed_pro_rata(tmp_path, pool):
    run = write_run(tmp_path / "run", [1, 1, 0, 1])
    data = quiet([run], pool, budgets=[2], bootstrap=0)
    p = next(p for p in data.points if p.source == "pool" and p.strategy == "weighted-vote[judge]")
    assert p.generated_tokens == 30                      # the first two samples: 10 + 20
    # the prompt is prefilled once (100 - 40 cached), completions 30 of 100 tokens
    assert p.generator_flops == pytest.approx(320_000 * (60 + 30) / (60 + 100))
    assert p.scorer_tokens == pytest.approx(0.5 * 408) and p.scorer_flops == pytest.approx(5e5)
    assert p.cached_tokens == pytest.approx(40 + 0.5 * 80)
    assert (p.backend_calls, p.scorer_calls) == (1, 1)
    assert p.wall_seconds is None and p.latency_seconds is None and p.mean_batch is None
    assert p.total_flops == pytest.approx(p.generator_flops + 5e5)
    # self-consistency reads no score: no scorer cost
    sc = next(p for p in data.points if p.source == "pool" and p.strategy == "self-consistency")
    assert (sc.scorer_tokens, sc.scorer_flops, sc.scorer_calls, sc.cached_tokens) == (0.0, 0.0, 0.0, 40)
    assert sc.generator_flops == p.generator_flops and sc.total_flops == pytest.approx(sc.generator_flops)


def test_a_weighted_vote_on_a_confidence_scorer_costs_no_scoring(tmp_path, pool):
    """A scorer computed from the samples' own log-probabilities makes no model call: its vote is free."""
    config_path = pool / "config.json"
    config = json.loads(config_path.read_text())
    config["scorers"] = [{"name": "group-confidence", "options": {"label": "judge"}}]
    config_path.write_text(json.dumps(config))
    data = quiet([write_run(tmp_path / "run", [1, 1, 0, 1])], pool, budgets=[2], bootstrap=0)
    p = next(p for p in data.points if p.strategy == "weighted-vote[judge]")
    assert (p.scorer_tokens, p.scorer_flops, p.scorer_calls) == (0.0, 0.0, 0.0)


def test_default_budgets_are_the_runs_own_n(tmp_path, pool):
    runs = [write_run(tmp_path / f"r{n}", [1, 0, 0, 1], answers=[["10"] * n] * 4) for n in (2, 4, 8)]
    data = quiet(runs, pool, bootstrap=0)
    assert sorted({p.budget for p in data.points if p.source == "pool"}) == [2, 4]  # 8 is more than the pool has


@pytest.mark.parametrize("kwargs,setup,message", [
    (dict(budgets=[8]), {}, "--budgets asks for 8 samples, but the pool"),
    (dict(budgets=[2]), dict(strategy="mcts"), "is a mcts run; a pool needs independent samples"),
])
def test_bad_pools_are_refused_before_reading_samples(tmp_path, kwargs, setup, message):
    run = write_run(tmp_path / "run", [1, 1, 0, 1])
    pool = write_run(tmp_path / "pool", [0, 1, 0, 1], answers=POOL_ANSWERS, **{"strategy": "repeated-sampling",
                                                                              **setup})
    with pytest.raises(UserError, match=message):
        quiet([run], pool, **kwargs)
    assert not (pool / "groups.json").exists()


def test_a_pool_without_scorers_gives_self_consistency_only(tmp_path):
    pool = write_run(tmp_path / "pool", [0, 1, 0, 1], strategy="self-consistency", answers=POOL_ANSWERS)
    data = quiet([write_run(tmp_path / "run", [1, 1, 0, 1])], pool, budgets=[2], bootstrap=0)
    assert [p.strategy for p in data.points if p.source == "pool"] == ["self-consistency"]
    assert "no weighted-vote points" in data.notes[0]


# ================================================================================================ the command


def test_compare_writes_csv_markdown_and_plot(tmp_path, pool, capsys):
    runs = [write_run(tmp_path / f"r{n}", [1, 0, 1, 1], answers=[["10"] * n] * 4,
                      metrics={"problems": 4, "session_seconds": 8.0, "generated_this_session": 4}) for n in (2, 4)]
    out = tmp_path / "out"
    argv = ["compare", *map(str, runs), "--pool", str(pool), "--budgets", "2,4", "--bootstrap", "50", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (out / "compare.md").read_text() in captured.out  # the table on stdout
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert len(rows) == 2 + 2 * 2
    assert [(r["family"], r["budget"]) for r in rows][:2] == [("best-of-n", "2"), ("best-of-n", "4")]
    assert rows[0]["accuracy"] == "0.75" and rows[0]["wall_seconds"] == "2.0"
    assert {r["wall_seconds"] for r in rows if r["source"] == "pool"} == {""}  # unknown
    md = (out / "compare.md").read_text()
    assert "| best-of-n | 2 | 0.750 [" in md and "1.32e+06" in md and "| self-consistency (pool) | 2 |" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "voting on the first k" in captured.err


def test_write_comparison_reports_an_unwritable_folder(tmp_path):
    data = quiet([write_run(tmp_path / "a", [1, 0])], bootstrap=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write the comparison"):
        write_comparison(data, tmp_path / "file" / "out")
