"""report.md makes no claim the data cannot carry: nothing solved, everything solved, unresolved intervals."""

from tests.test_scaling import make_pool
from tts.study import Curve, Point, ScalingFile, report, study_pools


def markdown(pools, bootstrap=200):
    study = study_pools(pools, bootstrap=bootstrap, draws=50)
    return report.render_markdown(ScalingFile(studies=[study]))


def pools_of(answers, gold, logprobs, count):
    return [make_pool(answers, gold, logprobs, pid=f"p{i}") for i in range(count)]


def test_nothing_solved_makes_no_comparison():
    md = markdown(pools_of(["2", "3", "2", "4", "5", "2", "3", "6"], "1", [-0.5] * 8, count=12))
    assert "Nothing was solved: every selector scores 0.0% (coverage is 0.0% at every k ≤ 8)" in md
    assert "no comparison between selectors" in md
    assert "fewer samples" not in md and "first reaches" not in md


def test_no_selector_right_although_coverage_is_not_zero():
    # the correct answer once, with a low log-probability, and never the most frequent answer
    md = markdown(pools_of(["1", "2", "2", "2", "3", "3", "3", "2"], "1", [-30.0] + [-0.1] * 7, count=12))
    assert "fewer samples" not in md and "first reaches" not in md
    assert ("although coverage reaches" in md or  # every selector at 0%
            "Majority vote scores 0.0% at k=8, so there is nothing for RPC to reach" in md)


def test_everything_solved_makes_no_comparison():
    md = markdown(pools_of(["1"] * 8, "1", [-0.2] * 8, count=10))
    assert "Every selector scores 100.0% at every k, so nothing separates them" in md
    assert "fewer samples" not in md and "first reaches" not in md


def test_overlapping_intervals_say_the_difference_is_not_resolved():
    answers = ["1", "2", "1", "3", "2", "1", "4", "2"]
    pools = [make_pool(answers, "1", [-0.3 - 0.05 * ((i + j) % 5) for j in range(8)], pid=f"p{i}") for i in range(5)]
    md = markdown(pools)
    assert "RPC against majority@8's accuracy" in md and "the difference is not resolved" in md
    assert "overlap at every k" in md and "fewer samples" not in md


TRAP = (["1", "1", "2", "2", "2", "3", "4", "5"], [-0.05, -0.05, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0])
EASY = (["1", "1", "1", "1", "1", "3", "4", "5"], [-0.05] * 5 + [-3.0] * 3)


def mixed(i):
    answers, lps = TRAP if i % 2 else EASY
    return answers, "1", lps


def test_a_resolved_difference_is_stated():
    # trap problems: the right answer twice with high probability, a wrong one three times with low
    # (majority vote falls for it, RPC does not); easy problems: both are right
    pools = [make_pool(*mixed(i), pid=f"p{i}") for i in range(30)]
    md = markdown(pools)
    assert "not resolved" not in md and "no comparison" not in md
    assert "RPC first reaches majority@8's accuracy (50.0%, point estimates) at k = " in md and "x fewer samples." in md


def test_without_intervals_the_claim_says_so():
    pools = [make_pool(*mixed(i), pid=f"p{i}") for i in range(4)]
    md = markdown(pools, bootstrap=0)
    assert "no bootstrap intervals were computed" in md


def test_interval_overlap_rule():
    def curve(*points):
        return Curve(name="c", label="c", points=[Point(k=k, tokens=k, value=v, lo=lo, hi=hi) for k, v, lo, hi in points])

    a = curve((1, 0.5, 0.4, 0.6), (2, 0.6, 0.5, 0.7))
    assert report._intervals_overlap_everywhere(a, curve((1, 0.5, 0.45, 0.55), (2, 0.65, 0.6, 0.8))) is True
    assert report._intervals_overlap_everywhere(a, curve((1, 0.5, 0.45, 0.55), (2, 0.8, 0.75, 0.9))) is False
    assert report._intervals_overlap_everywhere(a, curve((1, 0.5, None, None), (2, 0.8, None, None))) is None
