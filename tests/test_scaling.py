"""The scaling study (tts.study), its outputs (tts.study.report) and `tts scale` / `tts report` (tts.study_cli)."""

import argparse
import itertools
import json

import numpy as np
import pytest

from tts import selection, study_cli
from tts import study as study_pkg
from tts.errors import UserError
from tts.runs import RunFolder
from tts.selection import Groups, Selection
from tts.study import ProblemPool, ScalingFile, Subsets, report, study_pools, study_run
from tts.study.credits import rpc_credits, rpc_settle
from tts.study.stats import fit_power_law, flaws_accuracy
from tts.study.study import MIN_RPC_FITS, _problem_rng, auto_rpc_fits
from tts.types import Candidate, Result, Verdict

# ================================================================================================ helpers


def make_pool(answers, correct_answer, mean_logprobs, texts=None, scores=None, passed=None, pid="p",
              tokens=None) -> ProblemPool:
    """A pool whose oracle marks exactly the samples answering `correct_answer` (consistent with grouping)."""
    n = len(answers)
    return ProblemPool(
        problem_id=pid,
        groups=Groups.of_answers(answers, lambda a, b: a == b),
        correct=np.array([a == correct_answer for a in answers]),
        mean_logprob=np.array([np.nan if v is None else v for v in mean_logprobs], dtype=float),
        text_id=np.array(texts if texts is not None else range(n)),
        tokens=np.array(tokens if tokens is not None else [100] * n),
        score=None if scores is None else np.array([np.nan if s is None else s for s in scores], dtype=float),
        passed=None if passed is None else np.array(passed, dtype=bool),
    )


def random_pool(rng, n, pid="p", with_scores=False):
    """Few distinct answers (many duplicates), some missing, coarse log-probs (ties), repeated texts."""
    answers = [None if rng.random() < 0.1 else str(rng.choice(["1", "2", "3"], p=[0.45, 0.35, 0.2])) for _ in range(n)]
    lps = [None if rng.random() < 0.1 else float(np.round(rng.normal(-0.5, 0.25), 1)) for _ in range(n)]
    lps = [min(v, -0.05) if v is not None else None for v in lps]
    texts = [int(rng.integers(0, n)) if rng.random() < 0.2 else 100 + i for i in range(n)]
    for i, t in enumerate(texts):  # an identical text must carry the identical answer and log-prob
        first = texts.index(t)
        answers[i], lps[i] = answers[first], lps[first]
    scores = [None if rng.random() < 0.2 else float(rng.choice([0.0, 0.5, 1.0])) for _ in range(n)] if with_scores else None
    return make_pool(answers, "1", lps, texts=texts, scores=scores, pid=pid)


def scalar_credit(pool, row, name, min_paths=selection.MIN_PATHS_TO_PRUNE):
    """The credit of the scalar selector (tts.selection) on one subset: what the study must reproduce."""
    groups = pool.groups.subset(row)
    lp = pool.mean_logprob[row]
    picks = {
        "majority": lambda: selection.majority(groups),
        "prob-weighted-vote": lambda: selection.weighted_vote(groups, np.exp(lp)),
        "perplexity": lambda: selection.perplexity(lp),
        "best-of-n": lambda: selection.best_of_n(pool.score[row], lp),
        "score-weighted-vote": lambda: selection.weighted_vote(groups, pool.score[row]),
        "rpc": lambda: selection.rpc(groups, lp, texts=pool.text_id[row].tolist(), min_paths=min_paths),
    }
    return picks[name]().credit(pool.correct[row])


def write_run(folder, problems, task="gsm8k", selection=False):
    """A run folder written by RunFolder itself; problems = list of (gold, [(answer, mean_logprob), ...])."""
    run = RunFolder(folder)
    run.open({"task": task, "task_options": {"seed": 0}, "strategy": "repeated-sampling",
              "strategy_options": {"n": len(problems[0][1])}, "model": "toy-model", "backend": "scripted",
              "sampling": {}, "seed": 0})
    for p, (gold, samples) in enumerate(problems):
        cands, oracle = [], []
        for i, (answer, lp) in enumerate(samples):
            verdicts = []
            if selection:  # accepts every correct sample and the incorrect ones ending in 7
                ok = answer == gold or (answer or "").endswith("7")
                verdicts = [Verdict(verifier="examples", score=float(ok), passed=ok)]
            cands.append(Candidate(text=f"p{p} s{i}: {answer}", answer=answer, completion_tokens=50 + 10 * i,
                                   mean_logprob=lp, verdicts=verdicts))
            oracle.append(Verdict(verifier="oracle", score=float(answer == gold), passed=answer == gold))
        run.append(Result(problem_id=f"toy/{p}", strategy="repeated-sampling", answer=cands[0].answer, chosen=0,
                          candidates=cands), oracle, oracle[0])
    return folder


def toy_problems(count=6, n=8, seed=0):
    rng = np.random.default_rng(seed)
    problems = []
    for p in range(count):
        gold = str(10 + p)
        share = rng.uniform(0.1, 0.9)
        samples = []
        for _ in range(n):
            ok = rng.random() < share
            answer = gold if ok else str(rng.choice(["3", "17", "27"]))
            samples.append((None if rng.random() < 0.05 else answer, float(rng.normal(-0.3 if ok else -0.6, 0.1))))
        problems.append((gold, samples))
    return problems


# ================================================================================================ coverage


@pytest.mark.parametrize("n", [1, 3, 6])
def test_coverage_is_the_exact_share_of_subsets_holding_a_correct_sample(n):
    pools = [make_pool(["1"] * c + ["2"] * (n - c), "1", [-0.5] * n, pid=f"p{c}") for c in range(n + 1)]
    study = study_pools(pools, bootstrap=0)
    for i, pool in enumerate(pools):
        for j, k in enumerate(study.ks):
            subsets = list(itertools.combinations(range(n), k))
            exact = sum(pool.correct[list(s)].any() for s in subsets) / len(subsets)
            assert study.per_problem[i].pass_at_k[j] == pytest.approx(exact, abs=1e-12)
    for j in range(len(study.ks)):
        assert study.coverage.points[j].value == pytest.approx(np.mean([pp.pass_at_k[j] for pp in study.per_problem]))


def test_k_grid_stops_at_the_smallest_pool_and_k_max():
    pools = [make_pool(["1"] * 8, "1", [-0.1] * 8, pid="a"), make_pool(["1"] * 5, "1", [-0.1] * 5, pid="b")]
    assert study_pools(pools, bootstrap=0).ks == [1, 2, 4, 5]
    assert study_pools(pools, bootstrap=0, k_max=2).ks == [1, 2]


def test_tokens_are_k_times_the_mean_tokens_per_sample():
    pool = make_pool(["1"] * 4, "1", [-0.1] * 4, tokens=[10, 20, 30, 40])
    study = study_pools([pool], bootstrap=0)
    assert [p.tokens for p in study.coverage.points] == [25.0, 50.0, 100.0]


# ================================================================================================ selectors over subsets


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_credits_equal_the_scalar_selectors_on_every_subset(seed):
    rng = np.random.default_rng(seed)
    pool = random_pool(rng, 9, with_scores=True)
    study_selectors = {s.name: s for s in study_pkg.study_selectors()}
    for k in range(1, 10):
        idx = np.array(list(itertools.combinations(range(9), k)))
        for name in ("majority", "prob-weighted-vote", "perplexity", "best-of-n", "score-weighted-vote"):
            expected = [scalar_credit(pool, row, name) for row in idx]
            assert study_selectors[name].credits(pool, idx) == pytest.approx(expected, abs=1e-12), (name, k)
        expected = [scalar_credit(pool, row, "rpc") for row in idx]
        assert rpc_credits(pool, idx) == pytest.approx(expected, abs=1e-12), ("rpc", k)


def test_rpc_settles_most_subsets_without_a_fit_and_never_wrongly():
    rng = np.random.default_rng(11)
    pool = random_pool(rng, 12)
    idx = Subsets(12, 300, rng).take(7)
    credits, settled = rpc_settle(pool, idx, selection.MIN_PATHS_TO_PRUNE)
    assert settled.mean() > 0.5
    expected = np.array([scalar_credit(pool, row, "rpc") for row in idx[settled]])
    assert credits[settled] == pytest.approx(expected, abs=1e-12)


def test_rpc_study_counts_a_repeated_completion_once():
    # A: one text sampled three times (p=0.6); B: two distinct texts (p=0.55); three junk paths.
    answers = ["A", "A", "A", "B", "B", "C", "C", "C"]
    lps = np.log([0.6, 0.6, 0.6, 0.55, 0.55, 0.1, 0.12, 0.11]).tolist()
    pool = make_pool(answers, "B", lps, texts=[0, 0, 0, 1, 2, 3, 4, 5])
    idx = np.arange(8)[None, :]
    assert rpc_credits(pool, idx)[0] == 1.0  # B: 1.1 against A: 0.6, whatever is pruned
    assert scalar_credit(pool, idx[0], "rpc") == 1.0
    assert study_pools([pool], bootstrap=0).curve("rpc").at(8).value == 1.0


def test_study_accuracy_is_the_mean_over_all_subsets_when_they_can_be_enumerated():
    rng = np.random.default_rng(7)
    pools = [random_pool(rng, 7, pid=f"p{i}") for i in range(5)]
    study = study_pools(pools, draws=50, bootstrap=0)  # C(7, k) <= 35 <= 50: every subset
    for name in ("majority", "rpc", "perplexity", "prob-weighted-vote"):
        curve = study.curve(name)
        assert curve.draws is None  # exact
        for point in curve.points:
            per_problem = [np.mean([scalar_credit(pool, list(s), name)
                                    for s in itertools.combinations(range(7), point.k)]) for pool in pools]
            assert point.value == pytest.approx(np.mean(per_problem), abs=1e-12), (name, point.k)


def test_majority_tie_is_credited_half_at_study_level():
    pool = make_pool(["A", "B"], "A", [-0.2, -0.1])
    study = study_pools([pool], bootstrap=0)
    assert study.curve("majority").at(2).value == 0.5
    assert study.curve("perplexity").at(2).value == 0.0  # B is more probable


def test_rpc_fit_cap_is_reported_and_reproducible_and_exact_when_large():
    rng = np.random.default_rng(3)
    pools = [random_pool(rng, 12, pid=f"p{i}") for i in range(4)]
    capped = study_pools(pools, draws=60, rpc_fits=1, bootstrap=0, seed=5)
    again = study_pools(pools, draws=60, rpc_fits=1, bootstrap=0, seed=5)
    assert capped.curve("rpc") == again.curve("rpc")
    assert capped.timings["rpc_unsettled_subsets"] > capped.timings["rpc_evaluated_subsets"]
    assert "Weibull fit" in capped.curve("rpc").note and capped.curve("rpc").draws == 60
    full = study_pools(pools, draws=60, rpc_fits=60, bootstrap=0, seed=5)
    assert full.timings["rpc_unsettled_subsets"] == full.timings["rpc_evaluated_subsets"]
    for j, k in enumerate(full.ks):  # with every unsettled subset fitted: the exact mean over the same draws
        expected = np.mean([rpc_credits(pool, Subsets(12, 60, _problem_rng(5, pool.problem_id))
                                                .take(k)).mean() for pool in pools])
        assert full.curve("rpc").points[j].value == pytest.approx(expected, abs=1e-12)


def test_auto_rpc_fits_follows_the_budget():
    small = [make_pool(["1"] * 16, "1", [-0.1] * 16, pid=str(i)) for i in range(50)]
    assert auto_rpc_fits(small, [1, 2, 4, 8, 16], 200, 5) == 200
    big = [make_pool(["1"] * 64, "1", [-0.1] * 64, pid=str(i)) for i in range(1319)]
    assert auto_rpc_fits(big, [1, 2, 4, 8, 16, 32, 64], 200, 5) == MIN_RPC_FITS


def test_first_passing_closed_form_equals_enumeration_over_orders():
    answers = ["1", "2", "1", "3", "2"]
    passed = [True, True, False, False, True]  # sample 1 passes but is wrong: a false positive
    pool = make_pool(answers, "1", [-0.1] * 5, passed=passed)
    study = study_pools([pool], bootstrap=0)
    for point in study.curve("first-passing").points:
        orders = list(itertools.permutations(range(5), point.k))
        exact = np.mean([selection.first_passing([passed[i] for i in o]).credit([pool.correct[i] for i in o])
                         for o in orders])
        assert point.value == pytest.approx(exact, abs=1e-12)


def test_workers_do_not_change_the_results():
    rng = np.random.default_rng(9)
    pools = [random_pool(rng, 10, pid=f"p{i}") for i in range(6)]
    one = study_pools(pools, draws=40, bootstrap=50, workers=1)
    two = study_pools(pools, draws=40, bootstrap=50, workers=2)
    assert one.selectors == two.selectors and one.coverage == two.coverage


# ================================================================================================ fits and verifier


@pytest.mark.parametrize("a,b", [(-1.2, -0.4), (-3.0, -0.15), (-0.5, -0.9)])
def test_power_law_fit_recovers_known_parameters(a, b):
    ks = [1, 2, 4, 8, 16, 32, 64, 128]
    fit = fit_power_law(ks, [np.exp(a * k ** b) for k in ks])
    assert fit.a == pytest.approx(a, rel=1e-6) and fit.b == pytest.approx(b, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.predict(256) == pytest.approx(np.exp(a * 256 ** b), rel=1e-6)


def test_power_law_fit_drops_points_at_zero_and_one():
    assert fit_power_law([1, 2, 4], [0.0, 0.0, 1.0]) is None
    fit = fit_power_law([1, 2, 4, 8, 16], [0.0, np.exp(-1.0 * 2 ** -0.5), np.exp(-1.0 * 4 ** -0.5),
                                                    np.exp(-1.0 * 8 ** -0.5), 1.0])
    assert fit.ks == [2, 4, 8] and fit.a == pytest.approx(-1.0, rel=1e-6)


def test_flaws_accuracy_and_ceiling():
    p, f = 0.5, 0.2
    assert flaws_accuracy(p, f, 1) == pytest.approx(p)
    assert flaws_accuracy(p, f, 10_000) == pytest.approx(p / (p + (1 - p) * f))
    assert flaws_accuracy(p, 0.0, 50) == pytest.approx(1.0)


def test_verifier_study_measures_false_positives(tmp_path):
    problems = [("10", [("10", -0.2), ("17", -0.3), ("3", -0.4), ("3", -0.5)]),
                ("11", [("11", -0.2), ("27", -0.3), ("17", -0.4), ("3", -0.5)])]
    study = study_run(write_run(tmp_path / "he", problems, selection=True), bootstrap=0)
    v = study.verifier
    assert v.verifiers == ["examples"] and v.samples == 8
    assert v.sample_accuracy == 0.25
    assert v.false_positive_rate == pytest.approx(3 / 6) and v.true_positive_rate == 1.0
    assert v.ceiling == pytest.approx(0.25 / (0.25 + 0.75 * 0.5))
    assert study.curve("first-passing") is not None and study.curve("best-of-n") is not None


# ================================================================================================ run folders and outputs


def test_study_of_a_run_folder_groups_once_and_caches_groups(tmp_path):
    folder = write_run(tmp_path / "run", toy_problems())
    calls = []

    def counting(a, b):
        calls.append((a, b))
        return float(a) == float(b)

    first = study_run(folder, equivalent=counting, bootstrap=0)
    assert calls and (folder / study_pkg.GROUPS_FILE).exists()
    assert len(calls) == len(set(calls))  # each pair asked once
    calls.clear()
    second = study_run(folder, equivalent=counting, bootstrap=0)
    assert calls == [] and second.selectors == first.selectors
    assert first.task == "gsm8k" and first.model == "toy-model" and first.problems == 6 and first.n_min == 8


def test_bad_run_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        study_run(tmp_path)
    with pytest.raises(ValueError, match="at least 1"):  # flags are checked by the CLI; the library says which argument
        study_pools([make_pool(["1"], "1", [-0.1])], draws=0)


def test_report_files_from_a_run_folder(tmp_path):
    folder = write_run(tmp_path / "run", toy_problems(count=8, n=16))
    study = study_run(folder, bootstrap=200)
    written = report.write_report(ScalingFile(studies=[study]), folder)
    names = {p.name for p in written}
    assert names == {"scaling.json", "scaling.csv", "scaling_k.png", "scaling_tokens.png", "report.md"}
    for png in ("scaling_k.png", "scaling_tokens.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (folder / png).stat().st_size > 10_000
    loaded = report.load_scaling(folder)
    assert loaded.studies[0] == study
    rows = (folder / "scaling.csv").read_text().splitlines()
    assert rows[0] == "run,label,metric,k,tokens,value,lo,hi,draws"
    assert len(rows) == 1 + len(study.ks) * (1 + len(study.selectors))
    md = (folder / "report.md").read_text()
    cov1 = study.coverage.at(1).value
    assert "![" in md and "scaling_k.png" in md and "scaling_tokens.png" in md
    assert f"Coverage (unbiased pass@k) is {100 * cov1:.1f}%" in md
    assert "at k=1" in md and "at k=4" in md and "at k=16" in md
    assert "Majority vote accuracy:" in md and "RPC accuracy:" in md and "Perplexity accuracy:" in md
    if study.power_law:
        assert f"a = {study.power_law.a:.3f}" in md and "R² =" in md
    assert "majority@16's accuracy" in md


def test_report_mentions_the_verifier_and_flaws_ceiling(tmp_path):
    problems = [(str(10 + p), [(str(10 + p) if i % 3 == 0 else "17", -0.1 * i) for i in range(6)]) for p in range(4)]
    study = study_run(write_run(tmp_path / "he", problems, selection=True), bootstrap=0)
    md = report.render_markdown(ScalingFile(studies=[study]))
    assert "false-positive rate" in md and "fLaws ceiling" in md and "first-passing accuracy" in md


# ================================================================================================ the commands


def parser():
    p = argparse.ArgumentParser(prog="tts")
    study_cli.register(p.add_subparsers(dest="command", required=True))
    return p


def run_cli(argv):
    args = parser().parse_args(argv)
    return args.func(args)


def test_scale_overlays_several_runs_into_out(tmp_path, capsys):
    a = write_run(tmp_path / "a" / "run", toy_problems(seed=1))
    b = write_run(tmp_path / "b" / "run", toy_problems(seed=2))
    out = tmp_path / "both"
    assert run_cli(["scale", str(a), str(b), "--draws", "30", "--bootstrap", "50", "--out", str(out)]) == 0
    data = report.load_scaling(out)
    assert [s.label for s in data.studies] == ["a/run", "b/run"]  # same folder name: parent added
    assert data.studies[0].settings.draws == 30
    assert not (a / "scaling.json").exists()
    assert "coverage @1=" in capsys.readouterr().out
    csv_runs = {line.split(",")[1] for line in (out / "scaling.csv").read_text().splitlines()[1:]}
    assert csv_runs == {"a/run", "b/run"}


def test_report_rerenders_from_scaling_json_without_recomputing(tmp_path, monkeypatch):
    folder = write_run(tmp_path / "run", toy_problems())
    assert run_cli(["scale", str(folder), "--bootstrap", "20"]) == 0
    (folder / "report.md").unlink()
    (folder / "scaling_k.png").unlink()
    before = (folder / "scaling.json").read_text()

    def refuse(*a, **kw):
        raise AssertionError("recomputed")

    monkeypatch.setattr(study_pkg, "study_run", refuse)
    assert run_cli(["report", str(folder)]) == 0
    assert (folder / "report.md").exists() and (folder / "scaling_k.png").exists()
    assert (folder / "scaling.json").read_text() == before


def test_report_without_scaling_json_runs_the_study(tmp_path):
    folder = write_run(tmp_path / "run", toy_problems())
    assert run_cli(["report", str(folder)]) == 0
    assert json.loads((folder / "scaling.json").read_text())["studies"][0]["problems"] == 6


@pytest.mark.parametrize("argv,message", [
    (["scale", "/no/such/run"], "run folder not found"),
    (["report", "/no/such/run"], "folder not found"),
    (["scale", "{tmp}", "--seed", "-1"], "--seed must not be negative"),
])
def test_command_errors_are_user_errors(argv, message, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(UserError, match=message):
        run_cli(argv)


# ================================================================================================ plugin selectors


class FirstSample(study_pkg.StudySelector):
    """A plugin-style selector: only `select` (the study runs it on every subset), no vectorised credits."""

    name, label, description = "first-sample", "the first sample", "the first sample, whatever it says"

    def select(self, pool):
        return Selection(chosen=0, tied=[0])


def test_a_selector_registered_as_an_entry_point_appears_in_tts_scale(tmp_path, monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    real = study_pkg.selectors.entry_points
    plugin = EntryPoint(name="first-sample", value="tests.test_scaling:FirstSample", group="tts.selectors")
    monkeypatch.setattr(study_pkg.selectors, "entry_points",
                        lambda group: [*real(group=group), *([plugin] if group == "tts.selectors" else [])])
    folder = write_run(tmp_path / "run", toy_problems())
    assert run_cli(["scale", str(folder), "--bootstrap", "0"]) == 0
    assert "first-sample=" in capsys.readouterr().out
    studied = report.load_scaling(folder).studies[0]
    assert [c.name for c in studied.selectors][:2] == ["majority", "rpc"]  # built-ins first, then plugins
    curve = studied.curve("first-sample")
    assert curve.label == "the first sample" and curve.draws is None  # 8 samples: every subset enumerated
    pools = study_pkg.load_pools(RunFolder(folder)).pools
    for point in curve.points:  # the subsets are enumerated in sorted order: the first is the smallest index
        expected = np.mean([np.mean([pool.correct[s[0]] for s in itertools.combinations(range(pool.n), point.k)])
                            for pool in pools])
        assert point.value == pytest.approx(expected, abs=1e-12)
    assert "first-sample" in (folder / "scaling.csv").read_text()
    assert "the first sample" in (folder / "report.md").read_text()


def test_register_adds_a_selector_for_this_process_and_select_matches_the_vectorised_credits(monkeypatch):
    monkeypatch.setitem(study_pkg.selectors._runtime, "first-sample", FirstSample)
    names = [s.name for s in study_pkg.study_selectors()]
    assert names[-1] == "first-sample" and names[0] == "majority"
    rng = np.random.default_rng(2)
    pool = random_pool(rng, 7, with_scores=True)
    idx = np.array(list(itertools.combinations(range(7), 3)))
    for s in study_pkg.study_selectors():  # the default credits (select per subset) agree with the built-ins'
        if s.name not in ("rpc", "first-passing", "first-sample"):
            generic = study_pkg.StudySelector.credits(s, pool, idx)
            assert s.credits(pool, idx) == pytest.approx(generic, abs=1e-12), s.name
