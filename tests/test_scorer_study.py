"""Scorers in a scaling study: best-of-n[<scorer>] and weighted-vote[<scorer>] curves, and each scorer's quality
(AUROC, false-positive rate at its threshold, fLaws ceiling, per aggregation of a process scorer's step scores)."""

import itertools
import json
import re

import numpy as np
import pytest

from tests.test_scaling import random_pool, run_cli, toy_problems, write_run
from tts import study as study_pkg
from tts.runs import RunFolder
from tts.study import ScalingFile, report, study_run
from tts.study.pool import load_pools
from tts.study.selectors import BestOfN, ScoreWeightedVote, StudySelector, scorer_selectors
from tts.study.stats import auroc, flaws_ceiling
from tts.types import Candidate, Result, Verdict

# 4 problems x 6 samples, the gold answer of problem p is str(10 + p): 9 correct samples, 15 incorrect.
ANSWERS = [
    ["10", "10", "3", "17", "10", "3"],   # 3 correct; "17" (index 3) is the one incorrect sample `judge` passes
    ["27", "11", "3", "3", "17", "27"],   # 1 correct; majority vote ties "27" and "3" (both wrong)
    ["3", "3", "3", "17", "17", "27"],    # nothing correct
    ["13", "13", "13", "13", "13", "17"],  # 5 correct; index 0 has no group-confidence verdict
]
P = 9 / 24  # share of correct samples


def verdicts_of(p, i, answer, gold):
    ok = answer == gold
    out = []
    # judge: ranks perfectly (every correct sample above every incorrect one), threshold 0.5; one false positive
    fooled = (p, i) == (0, 3)
    out.append(Verdict(verifier="judge", score=0.9 if ok else 0.6 if fooled else 0.1, passed=ok or fooled))
    # group-confidence: inverted (correct samples score 0), no threshold (passed None)
    if (p, i) != (3, 0):
        out.append(Verdict(verifier="group-confidence", score=0.0 if ok else 1.0))
    # step-judge: a process scorer recording its last step; the last step is 0.7 for every sample, but an
    # incorrect sample has one bad middle step, so min/prod/mean separate and last does not
    steps = [0.9, 0.8, 0.7] if ok else [0.9, 0.2, 0.7]
    out.append(Verdict(verifier="step-judge", score=steps[-1], passed=steps[-1] >= 0.5, step_scores=steps))
    return out


def write_scored_run(folder, answers=ANSWERS, scored=True):
    """A run folder written by RunFolder itself, as tts/runs.py writes one, with three scorers' verdicts."""
    run = RunFolder(folder)
    run.open({"task": "gsm8k", "task_options": {"seed": 0}, "strategy": "repeated-sampling",
              "strategy_options": {"n": len(answers[0])}, "model": "toy-model", "backend": "scripted",
              "sampling": {}, "seed": 0})
    for p, row in enumerate(answers):
        gold = str(10 + p)
        cands = [Candidate(text=f"p{p} s{i}: {a}", answer=a, completion_tokens=40, mean_logprob=-0.1 * (i + 1),
                           verdicts=verdicts_of(p, i, a, gold) if scored else [])
                 for i, a in enumerate(row)]
        oracle = [Verdict(verifier="oracle", score=float(a == gold), passed=a == gold) for a in row]
        run.append(Result(problem_id=f"toy/{p}", strategy="repeated-sampling", answer=row[0], chosen=0,
                          candidates=cands), oracle, oracle[0])
    run.release()
    return folder


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = write_scored_run(tmp_path_factory.mktemp("scored") / "run")
    return folder, study_run(folder, bootstrap=0, equivalent=lambda a, b: a == b)


# ================================================================================================ scorer quality


@pytest.mark.parametrize("scorer,aggregation,expected", [
    # judge: AUROC 1.0; it passes 1 of the 15 incorrect samples, so FPR = 1/15 and the fLaws ceiling is
    # p / (p + (1-p) f) = 0.375 / (0.375 + 0.625 / 15) = 0.9; mean scores 0.9 and (14 x 0.1 + 0.6) / 15
    ("judge", None, dict(level="outcome", samples=24, correct=9, auroc=1.0, flagged=24, false_positive_rate=1 / 15,
                         true_positive_rate=1.0, ceiling=0.9, mean_score_correct=0.9,
                         mean_score_incorrect=2.0 / 15)),
    # group-confidence: inverted (AUROC 0.0), one correct sample unscored (23 samples, 8 correct), no pass flags:
    # no FPR and no ceiling
    ("group-confidence", None, dict(level="outcome", samples=23, correct=8, auroc=0.0, flagged=0,
                                    false_positive_rate=None, ceiling=None, mean_score_correct=0.0,
                                    mean_score_incorrect=1.0)),
    # step-judge as recorded (its last step): every sample scores 0.7, so AUROC 0.5; all pass the 0.5
    # threshold, so FPR = 1 and the ceiling is p itself
    ("step-judge", None, dict(level="process", samples=24, auroc=0.5, false_positive_rate=1.0, ceiling=P,
                              mean_score_correct=0.7, mean_score_incorrect=0.7)),
    # last: the recorded score, so its pass flags apply (same FPR and ceiling)
    ("step-judge", "last", dict(level="process", recorded=True, auroc=0.5, false_positive_rate=1.0, ceiling=P)),
    # min: 0.7 (correct) against 0.2 (incorrect) separates perfectly; not the recorded score: FPR n/a
    ("step-judge", "min", dict(recorded=False, auroc=1.0, flagged=0, false_positive_rate=None, ceiling=None,
                               mean_score_correct=0.7, mean_score_incorrect=0.2)),
    # prod: 0.9*0.8*0.7 = 0.504 against 0.9*0.2*0.7 = 0.126
    ("step-judge", "prod", dict(recorded=False, auroc=1.0, mean_score_correct=0.504, mean_score_incorrect=0.126)),
    # mean: 0.8 against 0.6
    ("step-judge", "mean", dict(recorded=False, auroc=1.0, mean_score_correct=0.8, mean_score_incorrect=0.6)),
])
def test_scorer_quality_rows(scored, scorer, aggregation, expected):
    row = scored[1].verifier.scorer(scorer, aggregation)
    assert row is not None
    for field, value in expected.items():
        got = getattr(row, field)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), field


def test_scorer_rows_are_listed_per_scorer_and_aggregation(scored):
    v = scored[1].verifier
    assert [q.key for q in v.scorers] == ["group-confidence", "judge", "step-judge", "step-judge:last",
                                          "step-judge:min", "step-judge:prod", "step-judge:mean"]
    # all flags together (judge and step-judge must both pass): judge's false positive is the only one
    assert v.samples == 24 and v.sample_accuracy == pytest.approx(P)
    assert v.false_positive_rate == pytest.approx(1 / 15) and v.ceiling == pytest.approx(0.9)


@pytest.mark.parametrize("p,f,ceiling", [
    (0.375, 1 / 15, 0.9),    # the judge above
    (0.5, 0.0, 1.0),         # no false positive: resampling reaches every problem
    (0.25, 1.0, 0.25),       # accepts everything: no better than one sample
    (0.0, 0.0, None),        # nothing correct, nothing accepted: undefined
    (0.5, None, None),       # no incorrect sample to measure f on
])
def test_flaws_ceiling_by_hand(p, f, ceiling):
    got = flaws_ceiling(p, f)
    assert got == (None if ceiling is None else pytest.approx(ceiling))


@pytest.mark.parametrize("correct,score,expected", [
    ([True, False, True, False], [0.9, 0.1, 0.8, 0.2], 1.0),  # perfect ranking
    ([True, False, True, False], [0.1, 0.9, 0.2, 0.8], 0.0),  # inverted
    ([True, False, True, False], [0.5, 0.5, 0.5, 0.5], 0.5),  # constant: ties count half
    ([True, True], [0.1, 0.9], None),                          # one class only
])
def test_auroc(correct, score, expected):
    got = auroc(np.array(correct), np.array(score))
    assert got == (None if expected is None else pytest.approx(expected))


# ================================================================================================ scorer selectors


def test_each_scorer_gets_its_own_curves(scored):
    names = [c.name for c in scored[1].selectors]
    assert names[names.index("first-passing") + 1:] == [
        "best-of-n[group-confidence]", "weighted-vote[group-confidence]", "best-of-n[judge]", "weighted-vote[judge]",
        "best-of-n[step-judge]", "weighted-vote[step-judge]"]
    assert "best-of-n" in names and "score-weighted-vote" in names  # the combined (mean of verdicts) ones stay


def test_a_perfect_scorer_reaches_coverage_and_an_inverted_one_nothing(scored):
    study = scored[1]
    cover = [p.value for p in study.coverage.points]
    assert [p.value for p in study.curve("best-of-n[judge]").points] == pytest.approx(cover, abs=1e-12)
    k = max(study.ks)
    assert study.curve("best-of-n[group-confidence]").at(k).value == 0.0  # every pool holds an incorrect sample
    # at k = 6: judge's weights pick the right group on problems 0, 1 and 3; majority ties on problem 1
    assert study.curve("weighted-vote[judge]").at(k).value == pytest.approx(0.75)
    assert study.curve("majority").at(k).value == pytest.approx(0.5)
    assert study.curve("weighted-vote[group-confidence]").at(k).value == pytest.approx(0.0)
    # the process scorer's last step is the same for all: ties broken by mean log-prob (the first sample)
    assert study.curve("best-of-n[step-judge]").at(k).value == pytest.approx(0.5)


@pytest.mark.parametrize("cls,scorer", [
    (BestOfN, "a"),              # argmax of scorer a, ties by mean log-prob
    (BestOfN, "b"),              # scorer b, missing on some samples (ranked lowest)
    (ScoreWeightedVote, "a"),    # groups weighted by scorer a
    (ScoreWeightedVote, "b"),    # missing scores weigh 0
    (BestOfN, None),             # the combined score, as before
])
def test_vectorised_scorer_credits_equal_the_selector_on_every_subset(cls, scorer):
    rng = np.random.default_rng(5)
    pool = random_pool(rng, 7, with_scores=True)
    pool.scores = {"a": rng.choice([0.0, 0.5, 1.0], pool.n),
                   "b": np.where(rng.random(pool.n) < 0.3, np.nan, rng.random(pool.n))}
    selector = cls(scorer)
    for k in (1, 3, 7):
        idx = np.array(list(itertools.combinations(range(pool.n), k)))
        assert selector.credits(pool, idx) == pytest.approx(StudySelector.credits(selector, pool, idx), abs=1e-12)


def test_scorer_selectors_are_named_after_their_scorer():
    pool = random_pool(np.random.default_rng(0), 4)
    assert scorer_selectors([pool]) == []  # no scorer: no extra curve
    pool.scores = {"judge": np.array([0.1, np.nan, 0.3, 0.2]), "silent": np.full(4, np.nan)}
    made = scorer_selectors([pool])
    assert [(s.name, s.label) for s in made] == [("best-of-n[judge]", "best-of-n (judge)"),
                                                 ("weighted-vote[judge]", "vote weighted by judge")]
    assert BestOfN().name == "best-of-n" and BestOfN.name == "best-of-n"  # the class keeps the registry's name


def test_pool_keeps_per_scorer_arrays_through_subsets(scored):
    pool = load_pools(RunFolder(scored[0]), equivalent=lambda a, b: a == b).pools[3]
    assert np.isnan(pool.scores["group-confidence"][0]) and pool.flags["judge"].tolist() == [1.0] * 5 + [0.0]
    assert np.isnan(pool.flags["group-confidence"]).all()
    assert pool.steps["step-judge"]["min"].tolist() == pytest.approx([0.7] * 5 + [0.2])
    sub = pool.subset([5, 0])
    assert sub.scores["judge"].tolist() == [0.1, 0.9] and sub.steps["step-judge"]["min"].tolist() == [0.2, 0.7]
    # the combined score is still the mean of every verdict
    assert pool.score[5] == pytest.approx((0.1 + 1.0 + 0.7) / 3)


# ================================================================================================ reports and CLI


def test_tts_scale_prints_a_line_per_scorer_and_report_tabulates_them(tmp_path, capsys):
    folder = write_scored_run(tmp_path / "run")
    assert run_cli(["scale", str(folder), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert ("  scorer judge (outcome): samples=24 correct=9 AUROC=1.000 FPR=0.067 fLaws-ceiling=0.900 "
            "mean-score correct=0.900 incorrect=0.133") in out
    assert ("  scorer group-confidence (outcome): samples=23 correct=8 AUROC=0.000 FPR=n/a fLaws-ceiling=n/a "
            "mean-score correct=0.000 incorrect=1.000") in out
    assert "  scorer step-judge:min (process): samples=24 correct=9 AUROC=1.000 FPR=n/a" in out
    assert "  scorer step-judge:last (process): samples=24 correct=9 AUROC=0.500 FPR=1.000" in out
    assert re.search(r"best-of-n\[judge\]=\d\.\d{3}", out) and "weighted-vote[step-judge]=" in out
    md = (folder / "report.md").read_text()
    assert "## Scorer quality" in md
    assert "| judge | outcome | 24 | 9 | 1.000 | 6.7% | 90.0% | 0.900 | 0.133 | 75.0% | 75.0% |" in md
    assert "| step-judge:min | process | 24 | 9 | 1.000 | n/a | n/a | 0.700 | 0.200 | – | – |" in md
    assert "judge separates correct from incorrect samples best (AUROC 1.000" in md
    data = json.loads((folder / "scaling.json").read_text())
    rows = data["studies"][0]["verifier"]["scorers"]
    assert {(r["scorer"], r["aggregation"]) for r in rows} >= {("judge", None), ("step-judge", "prod")}
    assert "best-of-n[judge]" in (folder / "scaling.csv").read_text()
    for png in ("scaling_k.png", "scaling_tokens.png"):
        assert (folder / png).stat().st_size > 10_000


def test_overlaid_runs_with_scorers_plot_and_render(tmp_path):
    a = write_scored_run(tmp_path / "a")
    b = write_run(tmp_path / "b", toy_problems(count=4, n=6), selection=True)  # one outcome scorer, "examples"
    assert run_cli(["scale", str(a), str(b), "--bootstrap", "0", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("### Scorer quality") == 2 and "| examples | outcome |" in md


# ================================================================================================ old run folders


def strip_scorer_fields(folder, drop_selection):
    """Rewrite samples.jsonl as an older toolkit wrote it: no step_scores (or no selection at all)."""
    path = folder / "samples.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if drop_selection:
            row.pop("selection", None)
        for v in row.get("selection") or []:
            v.pop("step_scores", None)
            v.pop("isolation", None)
        row.pop("trace", None)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("drop_selection", [
    True,   # a run folder from before selection verdicts were stored
    False,  # one with an outcome verifier's verdicts but no step_scores field
])
def test_old_run_folders_still_load(tmp_path, drop_selection):
    folder = write_run(tmp_path / "old", toy_problems(count=4, n=6), selection=True)
    strip_scorer_fields(folder, drop_selection)
    study = study_run(folder, bootstrap=0)
    names = [c.name for c in study.selectors]
    if drop_selection:
        assert study.verifier is None and not any("[" in n for n in names)
    else:
        assert [q.key for q in study.verifier.scorers] == ["examples"]
        assert study.verifier.scorers[0].level == "outcome"
        assert names[-2:] == ["best-of-n[examples]", "weighted-vote[examples]"]
        # one scorer: its own best-of-n is the combined one
        assert study.curve("best-of-n[examples]").points == study.curve("best-of-n").points
    report.render_markdown(ScalingFile(studies=[study]))


def test_a_scaling_json_without_scorer_rows_still_loads(scored, tmp_path):
    data = json.loads(ScalingFile(studies=[scored[1]]).model_dump_json())
    del data["studies"][0]["verifier"]["scorers"]
    (tmp_path / report.JSON_NAME).write_text(json.dumps(data))
    loaded = report.load_scaling(tmp_path)
    assert loaded.studies[0].verifier.scorers == []
    assert "Scorer quality" not in report.render_markdown(loaded)


def test_scores_without_pass_flags_give_a_verifier_study_with_scorer_rows_only():
    pool = random_pool(np.random.default_rng(1), 6)
    pool.scores = {"confidence": np.linspace(0, 1, pool.n)}
    study = study_pkg.study_pools([pool], bootstrap=0)
    v = study.verifier
    assert v.samples == 0 and v.sample_accuracy is None and v.ceiling is None and v.predicted == []
    assert [q.key for q in v.scorers] == ["confidence"] and v.scorers[0].flagged == 0
    md = report.render_markdown(ScalingFile(studies=[study]))
    assert "false-positive rate f" not in md and "| confidence | outcome | 6 |" in md


def test_scorer_selectors_run_in_worker_processes(scored):
    folder, one = scored
    two = study_run(folder, bootstrap=0, workers=2, equivalent=lambda a, b: a == b)
    assert two.selectors == one.selectors and two.verifier == one.verifier
