"""`tts scale`'s replay of the adaptive methods (tts.study.adaptive_replay, adaptive_study, adaptive_report):
stopping points, spend and credit against hand computations; equal-spend matching; the CLI and old files."""

import argparse
import json

import numpy as np
import pytest

from tts import study_cli
from tts.adaptive import majority_probability
from tts.cli import main
from tts.errors import UserError
from tts.runs import RunFolder
from tts.selection import Groups
from tts.study import ProblemPool, ScalingFile, Subsets, report, study_pools, study_run
from tts.study.adaptive_replay import AdaptiveConsistency, DeepConf, EarlyStop, ReplayPool, vote_credit
from tts.study.adaptive_study import (
    AdaptiveSettings,
    at_spend,
    bracket,
    load_traces,
    orders_per_problem,
)
from tts.study.schema import Curve, Point
from tts.study.study import _problem_rng
from tts.types import Candidate, Result, TokenTrace, Verdict, _pack

# ================================================================================================ helpers


def pool_of(answers, gold="A", tokens=None, scores=None, pid="p") -> ProblemPool:
    """A pool whose oracle accepts exactly the answers equal to `gold` (None: no answer)."""
    n = len(answers)
    return ProblemPool(
        problem_id=pid, groups=Groups.of_answers(answers, lambda a, b: a == b),
        correct=np.array([a == gold for a in answers]), mean_logprob=np.full(n, -0.5),
        text_id=np.arange(n), tokens=np.array(tokens if tokens is not None else [10 * (i + 1) for i in range(n)]),
        score=None, passed=None, scores={} if scores is None else {"judge": np.array(scores, dtype=float)})


def in_order(pool):
    return np.arange(pool.n)


# ================================================================================================ adaptive-consistency

# (answers, round, min_samples, samples used) with the Beta prior at 0.95. P(leader is the majority) for top t
# and second s is P(Binomial(t + s + 1, 1/2) <= t): (3,0) 0.9375, (4,0) 0.96875, (5,1) 0.9375, (6,1) 0.965,
# (7,2) 0.945, (8,2) 0.967.
AC_CASES = [
    (list("AAAAAAAA"), 1, 1, 4),                 # unanimous: stops at the 4th sample, not the 3rd
    (list("ABAAAAAA"), 1, 1, 7),                 # one dissent: needs 6 A's against 1 B
    (list("ABABAAAAAAAA"), 1, 1, 10),            # two dissents: needs 8 A's against 2 B's
    ([None, None, "A", "A", "A", "A"], 1, 1, 6),  # no answer is no vote: 4 A's come only at the 6th
    (list("ABABAB"), 1, 1, 6),                   # never sure: the whole budget
    (list("AAAAAAAA"), 4, 1, 4),                 # rounds of 4: the first look is after 4 (4, 0)
    (list("ABAAAAAA"), 4, 1, 8),                 # rounds of 4: (3,1) no, (7,1) yes at the second look
    (list("ABAAAA"), 4, 1, 6),                   # a budget that is no multiple of the round: ends at the budget
    (list("AAAAAAAA"), 1, 6, 6),                 # sure at 4, but min_samples 6
]


@pytest.mark.parametrize("answers,round_,min_samples,used", AC_CASES)
def test_adaptive_consistency_stops_where_the_beta_rule_says(answers, round_, min_samples, used):
    pool = pool_of(answers)
    out = AdaptiveConsistency(round=round_, min_samples=min_samples).run(ReplayPool(pool), in_order(pool))
    assert out.samples == used
    assert out.tokens == sum(10 * (i + 1) for i in range(used))


def test_adaptive_consistency_credits_the_majority_of_what_it_drew_ties_split():
    # A,B,A,B,A,B never stops; the final vote ties 3-3 and A is correct: 1/2
    pool = pool_of(list("ABABAB"))
    assert AdaptiveConsistency().run(ReplayPool(pool), in_order(pool)).credit == 0.5
    # B,B,B,B stops at 4 on B (wrong) although A is the pool's majority
    pool = pool_of(list("BBBBAAAAAAAA"))
    out = AdaptiveConsistency().run(ReplayPool(pool), in_order(pool))
    assert (out.samples, out.credit) == (4, 0.0)


@pytest.mark.parametrize("prior", ["beta", "dirichlet"])
def test_adaptive_consistency_matches_a_plain_loop_on_full_counts(prior):
    """The replay keys its cache on the 5 largest counts; a plain loop on every count decides the same."""
    rng = np.random.default_rng(3)
    for trial in range(25):
        answers = [None if rng.random() < 0.1 else str(rng.choice(8, p=[.4, .2, .1, .1, .05, .05, .05, .05]))
                   for _ in range(16)]
        pool = pool_of(answers, gold="0")
        order = rng.permutation(16)
        counts: dict[str, int] = {}
        used = 16
        for j, i in enumerate(order, start=1):
            if answers[i] is not None:
                counts[answers[i]] = counts.get(answers[i], 0) + 1
            if majority_probability(list(counts.values()), prior) >= 0.9:
                used = j
                break
        out = AdaptiveConsistency(threshold=0.9, prior=prior).run(ReplayPool(pool), order)
        assert out.samples == used, (trial, answers, order)
        assert out.credit == vote_credit(pool, order[:used])


# ================================================================================================ early-stop


# (answers, scores, round, samples used, credit); tokens are 10, 20, 30, ... and A is correct
EARLY_STOP_CASES = [
    # the first score >= 0.9 is the 3rd (exactly 0.9), answering B (wrong); the later 0.99 is never seen
    (list("AABA"), [0.5, 0.89, 0.9, 0.99], 1, 3, 0.0),
    # rounds of 3: the hit (2nd) is in the first round, whose 3rd sample is spent too; the pick is the hit
    (list("ABAA"), [0.5, 0.95, 0.99, 0.1], 3, 3, 0.0),
    # rounds of 2 and a hit in the second round: 4 samples
    (list("ABAB"), [0.1, 0.2, 0.95, 0.1], 2, 4, 1.0),
    # a sample without an answer never stops it: the 0.99 of None is skipped, the 0.95 of A stops
    ([None, "A", "B"], [0.99, 0.95, 0.1], 1, 2, 1.0),
    # nobody reaches tau: the most confident at the budget, 0.8 twice (B wrong, A right): 1/2
    (list("ABBA"), [0.7, 0.8, 0.2, 0.8], 1, 4, 0.5),
    # nobody reaches tau and nobody answered: the strategy abstains
    ([None, None], [0.5, 0.5], 1, 2, 0.0),
]


@pytest.mark.parametrize("answers,scores,round_,used,credit", EARLY_STOP_CASES)
def test_early_stop_picks_the_first_answered_sample_reaching_tau(answers, scores, round_, used, credit):
    pool = pool_of(answers, scores=scores)
    out = EarlyStop(scorer="judge", round=round_).run(ReplayPool(pool), in_order(pool))
    assert (out.samples, out.tokens, out.credit) == (used, sum(10 * (i + 1) for i in range(used)), credit)


# (answers, scores, tau, samples used, credit) for final=weighted-vote, rounds of 1, A correct
WEIGHTED_CASES = [
    # one sample always has the whole share: the rule is read from the 2nd on; A 0.5, B 0.9: 0.9/1.4 >= 0.6
    (list("ABBB"), [0.5, 0.9, 0.9, 0.9], 0.6, 2, 0.0),
    # the same at tau 0.7: B's share 0.9/1.4, then 1.8/2.3 = 0.78 at the 3rd
    (list("ABBB"), [0.5, 0.9, 0.9, 0.9], 0.7, 3, 0.0),
    # a zero score is no weight: A 0, B 0.9 -> share 1 at the 2nd
    (list("ABBA"), [0.0, 0.9, 0.9, 0.9], 0.6, 2, 0.0),
    # no weight at all: no leader, never stops; the final vote ties A and B: 1/2
    (list("AB"), [0.0, 0.0], 0.6, 2, 0.5),
]


@pytest.mark.parametrize("answers,scores,tau,used,credit", WEIGHTED_CASES)
def test_early_stop_weighted_vote_stops_on_the_weighted_share(answers, scores, tau, used, credit):
    pool = pool_of(answers, scores=scores)
    out = EarlyStop(scorer="judge", tau=tau, final="weighted-vote").run(ReplayPool(pool), in_order(pool))
    assert (out.samples, out.credit) == (used, credit)


# ================================================================================================ deepconf

# window 2, keep 50 (s = the median of the warm-up's lowest group confidences C), warm-up 2, rounds of 2.
# sample: (answer, token confidences); tokens = trace length
DEEPCONF_POOL = [
    ("A", [4, 4, 4, 4]),     # C 4
    ("B", [2, 2, 2, 2]),     # C 2
    ("B", [4, 2, 2, 4, 4]),  # windows 3, 2, 3, 4: C 2
    ("B", [1, 1, 9]),        # windows 1, 5: C 1
    ("B", [3, 3, 3]),        # C 3
    ("A", [2]),              # shorter than a window: C 2 (its mean)
]


def traced(samples, gold="B"):
    pool = pool_of([a for a, _ in samples], gold=gold, tokens=[len(c) for _, c in samples])
    return ReplayPool(pool, [(20, np.array(c, dtype=float)) for _, c in samples])


def online(**kw):
    return DeepConf(mode="online", window=2, keep_percent=50, warmup=2, round=2, **kw)


def test_deepconf_online_spends_tokens_up_to_the_stop_and_aborted_traces_never_vote():
    out = online().run(traced(DEEPCONF_POOL), np.arange(6))
    # warm-up C 4 (A) and 2 (B): s = 3, share 4/6 < 0.95. Round 1: [4,2,2,4,4] is stopped after 3 tokens
    # (window (4,2) has mean 3, not below s; (2,2) has mean 2 and ends at token 3), [1,1,9] after 2; the share
    # is unchanged. Round 2: [3,3,3] never falls below 3 (strictly), [2] is shorter than a window: both
    # finish, and the budget is spent. Voters (C >= 3): A 4 and B 3: A wins although B has 4 of 6 samples.
    assert out.samples == 6
    assert out.tokens == 4 + 4 + 3 + 2 + 3 + 1
    assert out.credit == 0.0


def test_deepconf_online_checks_the_consensus_right_after_the_warm_up():
    # warm-up: the two B traces (C 2 and 3, s = 2.5) agree: share 1, no online trace starts; B (C 3) votes
    out = online().run(traced(DEEPCONF_POOL), np.array([1, 4, 2, 3, 0, 5]))
    assert (out.samples, out.tokens, out.credit) == (2, 4 + 3, 1.0)


def test_deepconf_online_stops_on_consensus_after_a_round():
    samples = [("A", [4, 4]),        # C 4
               ("B", [0.5, 0.5]),    # C 0.5: s = 2.25; share 4/4.5 < 0.95
               ("A", [6, 6, 6]),     # finishes, C 6
               ("B", [3, 1, 1]),     # the first window (3, 1) has mean 2 < 2.25: stopped after 2 tokens
               ("B", [9, 9]), ("B", [9, 9])]  # never drawn: A 10 / 10.5 = 0.952 >= 0.95 after round 1
    out = online().run(traced(samples, gold="A"), np.arange(6))
    assert (out.samples, out.tokens, out.credit) == (4, 2 + 2 + 3 + 2, 1.0)


LAST_TOKEN_STOP = [("A", [4, 4]),      # C 4
                   ("B", [1, 1]),      # C 1: s = 2.5; share 4/5 = 0.8 < 0.85
                   ("A", [3, 3, 1]),   # its first window below s, (3, 1), ends on its last token: whole, C 2
                   ("B", [2, 2, 2, 9]),  # stopped after 2 tokens
                   ("B", [9, 9]), ("B", [9, 9])]


def test_deepconf_online_a_stop_on_the_last_token_leaves_the_trace_whole():
    # the whole A trace counts towards the consensus: A 4 + 2 = 6 of 7 = 0.857 >= 0.85 after round 1
    out = online(consensus=0.85).run(traced(LAST_TOKEN_STOP, gold="A"), np.arange(6))
    assert (out.samples, out.tokens, out.credit) == (4, 2 + 2 + 3 + 2, 1.0)


def test_deepconf_offline_keeps_the_top_share_and_votes_by_confidence():
    # C 4, 2, 2, 1, 3, 2; median 2 -> all but the 1 kept; A 4 + 2 = 6, B 2 + 2 + 3 = 7
    out = DeepConf(mode="offline", window=2, keep_percent=50).run(traced(DEEPCONF_POOL), np.arange(6))
    assert (out.samples, out.tokens, out.credit) == (6, 20.0, 1.0)
    # keep 20: s = 80th percentile = 3 -> only 4 (A) and 3 (B) vote: A wins
    assert DeepConf(mode="offline", window=2, keep_percent=20).run(traced(DEEPCONF_POOL), np.arange(6)).credit == 0.0


def test_deepconf_offline_takes_the_percentile_over_answered_traces_only():
    # answered C 3 (A) and 2 (B): median 2.5 keeps A. With the unanswered 10s counted the median would be 6.5
    # and nothing answered would be kept.
    samples = [("A", [3, 3]), (None, [10, 10]), (None, [10, 10]), ("B", [2, 2])]
    out = DeepConf(mode="offline", window=2, keep_percent=50).run(traced(samples, gold="A"), np.arange(4))
    assert out.credit == 1.0
    nobody = [(None, [1, 1]), (None, [2, 2])]
    assert DeepConf(mode="offline", window=2).run(traced(nobody, gold="A"), np.arange(2)).credit == 0.0


# ================================================================================================ matching


def curve(points):
    return Curve(name="majority", label="majority", points=[Point(k=k, tokens=t, value=v) for k, t, v in points])


# (spend, axis, expected accuracy): grid k 1, 2, 4 at 100, 200, 400 tokens with accuracy 0.2, 0.3, 0.5
MATCH_CASES = [
    (300.0, "tokens", 0.4),    # halfway between k=2 and k=4
    (150.0, "tokens", 0.25),   # halfway between k=1 and k=2
    (400.0, "tokens", 0.5),    # on the last point
    (100.0, "tokens", 0.2),    # on the first point
    (3.0, "samples", 0.4),     # 3 samples: halfway between k=2 and k=4
    (50.0, "tokens", None),    # below k=1: nothing to compare with
    (401.0, "tokens", None),   # beyond the largest k
]


@pytest.mark.parametrize("spend,axis,expected", MATCH_CASES)
def test_equal_spend_is_linear_between_the_bracketing_grid_points(spend, axis, expected):
    got = at_spend(curve([(1, 100, 0.2), (2, 200, 0.3), (4, 400, 0.5)]), spend, axis)
    assert got == pytest.approx(expected) if expected is not None else got is None
    assert bracket([1.0], 1.0) == (0, 0.0)


def study_with_adaptive(pools, **kw):
    return study_pools(pools, bootstrap=50, draws=30, adaptive=AdaptiveSettings(**kw))


def random_pools(count=6, n=8, seed=0, scored=True):
    rng = np.random.default_rng(seed)
    pools = []
    for p in range(count):
        answers = [str(rng.choice(3, p=[0.5, 0.3, 0.2])) for _ in range(n)]
        scores = rng.uniform(0, 1, n).round(2).tolist() if scored else None
        pools.append(pool_of(answers, gold="0", tokens=rng.integers(20, 200, n).tolist(), scores=scores, pid=f"q{p}"))
    return pools


def test_study_points_match_by_hand_and_replay_the_studys_own_orders():
    pools = random_pools()
    study = study_with_adaptive(pools)
    point = next(p for p in study.adaptive if p.name == "adaptive-consistency")
    # the study's orders: its seeded per-problem permutations, cut to the budget
    per_problem = []
    for pool in pools:
        perms = Subsets(pool.n, 30, _problem_rng(0, pool.problem_id)).perms
        per_problem.append([AdaptiveConsistency().run(ReplayPool(pool), row) for row in perms])
    assert point.accuracy == pytest.approx(np.mean([np.mean([o.credit for o in rows]) for rows in per_problem]))
    assert point.mean_samples == pytest.approx(np.mean([np.mean([o.samples for o in rows]) for rows in per_problem]))
    tokens = np.mean([np.mean([o.tokens for o in rows]) for rows in per_problem])
    assert point.mean_tokens == pytest.approx(tokens)
    # matching by hand on the study's majority curve
    majority = study.curve("majority")
    xs = [p.tokens for p in majority.points]
    j = int(np.searchsorted(xs, tokens)) - 1
    w = (tokens - xs[j]) / (xs[j + 1] - xs[j])
    expected = (1 - w) * majority.points[j].value + w * majority.points[j + 1].value
    assert point.majority_at_tokens == pytest.approx(expected)
    assert point.vs_majority == pytest.approx(point.accuracy - expected)  # interpolation commutes with the mean
    assert point.reference_tokens == pytest.approx(8 * study.mean_tokens_per_sample)
    assert point.saving == pytest.approx(1 - tokens / (8 * study.mean_tokens_per_sample))
    assert point.lo <= point.accuracy <= point.hi
    assert point.draws == 30 and point.budget == 8
    names = [p.name for p in study.adaptive]
    assert names == ["adaptive-consistency", "early-stop[judge]", "early-stop-vote[judge]"]
    assert study.adaptive_skipped == [f"deepconf-{mode}: no token traces to read (a study of pools without their "
                                      "run folder)" for mode in ("offline", "online")]


def test_k_max_cuts_the_budget_to_the_studys_random_subsets():
    pools = random_pools(n=8)
    study = study_pools(pools, bootstrap=0, draws=30, k_max=4, adaptive=AdaptiveSettings())
    point = study.adaptive[0]
    assert point.budget == 4 and point.reference_samples == 4 and point.mean_samples <= 4


def test_what_the_pool_lacks_is_skipped_with_the_reason():
    pools = random_pools(scored=False)
    pools[0].scores["judge"] = np.r_[np.full(7, 0.5), np.nan]  # one scorer scored 7 of 48 samples
    study = study_pools(pools, bootstrap=0, draws=5, adaptive=AdaptiveSettings(),
                        traces=lambda: {p.problem_id: [None] * p.n for p in pools})
    assert [p.name for p in study.adaptive] == ["adaptive-consistency"]
    assert any("scorer judge scored 7 of 48 samples" in why for why in study.adaptive_skipped)
    assert any("deepconf-online: 0 of 48 samples have a token trace with top-20" in why
               for why in study.adaptive_skipped)
    assert study_pools(random_pools(), bootstrap=0, draws=5).adaptive == []  # adaptive=None: not at all


def test_orders_per_problem_stays_within_the_replay_budget():
    assert orders_per_problem(50, 200) == 200     # small studies: every draw
    assert orders_per_problem(500, 200) == 20     # 10000 // 500
    assert orders_per_problem(1319, 200) == 10    # never fewer than MIN_ORDERS
    assert orders_per_problem(5, 7) == 7


# ================================================================================================ run folders, CLI, files


def write_traced_run(folder, problems=4, n=8, seed=0, k=20):
    """A run folder whose samples carry token traces (confidences drawn per sample, lengths 60-140)."""
    rng = np.random.default_rng(seed)
    run = RunFolder(folder)
    run.open({"task": "gsm8k", "task_options": {"seed": 0}, "strategy": "repeated-sampling",
              "strategy_options": {"n": n}, "model": "toy-model", "backend": "scripted", "sampling": {}, "seed": 0})
    for p in range(problems):
        cands, oracle = [], []
        for i in range(n):
            answer = str(rng.choice([7, 8, 9], p=[0.5, 0.3, 0.2]))
            length = int(rng.integers(60, 140))
            conf = rng.normal(12 if answer == "7" else 9, 2, length)
            cands.append(Candidate(text=f"p{p} s{i}: {answer}", answer=answer, completion_tokens=length,
                                   mean_logprob=-0.3, trace=TokenTrace(k=k, confidence=_pack(conf))))
            oracle.append(Verdict(verifier="oracle", score=float(answer == "7"), passed=answer == "7"))
        run.append(Result(problem_id=f"toy/{p}", strategy="repeated-sampling", answer=cands[0].answer, chosen=0,
                          candidates=cands), oracle, oracle[0])
    run.release()
    return folder


def test_deepconf_replays_read_the_traces_from_the_run_folder(tmp_path):
    folder = write_traced_run(tmp_path / "run")
    traces = load_traces(RunFolder(folder))
    assert sorted(traces) == [f"toy/{p}" for p in range(4)]
    assert all(len(t) == 8 and all(k == 20 for k, _ in t) for t in traces.values())
    study = study_run(folder, bootstrap=0, draws=10, equivalent=lambda a, b: a == b, adaptive=AdaptiveSettings())
    by_name = {p.name: p for p in study.adaptive}
    assert {"deepconf-offline", "deepconf-online"} <= set(by_name)
    online, offline = by_name["deepconf-online"], by_name["deepconf-offline"]
    assert offline.mean_samples == 8 and offline.saving == pytest.approx(0.0)
    assert online.mean_tokens < offline.mean_tokens  # stopped traces spend less than their length


def test_deepconf_refuses_traces_of_another_top_k(tmp_path):
    folder = write_traced_run(tmp_path / "run", problems=2, k=5)
    study = study_run(folder, bootstrap=0, draws=5, equivalent=lambda a, b: a == b, adaptive=AdaptiveSettings())
    assert "deepconf-offline: 0 of 16 samples have a token trace with top-20" in study.adaptive_skipped[1]


def test_tts_scale_options_reach_the_replays_and_the_report(tmp_path, monkeypatch):
    folder = write_traced_run(tmp_path / "run", problems=3)
    monkeypatch.setattr("tts.study.pool.task_equivalence", lambda config: (lambda a, b: a == b))
    assert main(["scale", str(folder), "--bootstrap", "0", "--draws", "5", "--ac-threshold", "0.8",
                 "--deepconf-keep", "50", "--out", str(tmp_path / "a")]) == 0
    data = report.load_scaling(tmp_path / "a")
    options = {p.name: p.options for p in data.studies[0].adaptive}
    assert options["adaptive-consistency"]["threshold"] == 0.8 and options["deepconf-online"]["keep_percent"] == 50
    text = (tmp_path / "a" / "report.md").read_text()
    assert "## Adaptive compute at equal spend" in text and "| `deepconf-online` |" in text

    def no_traces(run):
        raise AssertionError("traces read with --no-adaptive")

    monkeypatch.setattr("tts.study.adaptive_study.load_traces", no_traces)
    assert main(["scale", str(folder), "--bootstrap", "0", "--draws", "5", "--no-adaptive",
                 "--out", str(tmp_path / "b")]) == 0
    assert report.load_scaling(tmp_path / "b").studies[0].adaptive == []
    assert "Adaptive compute" not in (tmp_path / "b" / "report.md").read_text()


def test_several_thresholds_give_one_row_each_named_apart(tmp_path, monkeypatch, capsys):
    """`--ac-threshold 0.95,0.8 --deepconf-keep 10,90`: a row per value (sorted), each with its own options,
    the summary naming the swept value where a method repeats."""
    folder = write_traced_run(tmp_path / "run", problems=3)
    monkeypatch.setattr("tts.study.pool.task_equivalence", lambda config: (lambda a, b: a == b))
    assert main(["scale", str(folder), "--bootstrap", "0", "--draws", "5", "--ac-threshold", "0.95,0.8",
                 "--deepconf-keep", "10,90", "--out", str(tmp_path / "a")]) == 0
    rows = [(p.name, p.options) for p in report.load_scaling(tmp_path / "a").studies[0].adaptive]
    assert [o["threshold"] for n, o in rows if n == "adaptive-consistency"] == [0.8, 0.95]
    assert [o["keep_percent"] for n, o in rows if n == "deepconf-online"] == [10, 90]
    out = capsys.readouterr().out
    assert "adaptive adaptive-consistency threshold=0.8: accuracy=" in out
    assert "adaptive deepconf-online keep_percent=90: accuracy=" in out


def test_adaptive_options_with_no_adaptive_are_refused():
    args = argparse.Namespace(runs=["."], seed=0, adaptive=False, ac_threshold=0.8, early_stop_tau=None,
                                        deepconf_keep=None)
    with pytest.raises(UserError, match="--ac-threshold set the adaptive replays, which --no-adaptive turns off"):
        study_cli.cmd_scale(args)


def test_a_scaling_json_from_before_the_adaptive_section_still_loads(tmp_path):
    study = study_with_adaptive(random_pools())
    old = json.loads(ScalingFile(studies=[study]).model_dump_json())
    for s in old["studies"]:
        del s["adaptive"], s["adaptive_skipped"]
    (tmp_path / report.JSON_NAME).write_text(json.dumps(old))
    loaded = report.load_scaling(tmp_path)
    assert loaded.studies[0].adaptive == [] and loaded.studies[0].adaptive_skipped == []
    assert "Adaptive compute" not in report.render_markdown(loaded)
    assert loaded.studies[0].selectors == study.selectors
