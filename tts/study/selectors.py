"""Study selectors: how a study evaluates a selector, and the registry the study iterates.

A study selector answers one question: the expected accuracy of a selector on a uniformly random
k-subset of one problem's pool (ties credited 1/#tied), and whether that number is exact. The
contract (`StudySelector`) asks a plugin for little: a `name`, a `label` for plots, a one-line
`description`, what pool data it `needs`, and `select(pool) -> Selection` on one problem's pool;
the default `credits` runs `select` on every subset the study draws. The built-ins below compute the
same credits vectorised over all subsets at once (tts.study.credits; tests check both agree).

Every selector registered under the entry-point group `tts.selectors` (this package's pyproject.toml
registers the built-ins; a plugin distribution adds its own the same way), or at run time with
`register`, appears in `tts scale`: built-ins first in their usual order, then the rest by name,
then, for every scorer recorded in the run's verdicts, `best-of-n[<scorer>]` and
`weighted-vote[<scorer>]` (`scorer_selectors`: the built-in classes parameterised by the scorer).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import ClassVar, Literal

import numpy as np

from tts import selection
from tts.metrics import pass_at_k
from tts.selection import Selection
from tts.study.credits import _argmax_credit, _group_vote_credit, rpc_row_credit, rpc_settle
from tts.study.pool import ProblemPool, scorer_names
from tts.study.schema import StudySettings
from tts.study.subsets import Subsets

GROUP = "tts.selectors"
BUILT_IN_ORDER = ("majority", "rpc", "perplexity", "prob-weighted-vote", "best-of-n", "score-weighted-vote",
                  "first-passing")
Need = Literal["logprobs", "scores", "verdicts"]

# ================================================================================================ the contract


@dataclass
class SelectorContext:
    """What a study selector may use for one problem: its subsets, the settings, a seeded RNG, counters.

    `counters` are summed over problems into the study's `timings` (RPC counts its Weibull fits there).
    """

    subsets: Subsets
    settings: StudySettings
    rng: np.random.Generator
    counters: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def choice_credit(pool: ProblemPool, row: np.ndarray, pick: Selection) -> float:
    """Credit of a `Selection` made on the subset `row` of `pool` (its indices are positions in `row`).

    Ties count 1/#tied; a group-based choice (pick.group set) is credited with the share of its
    group's members the oracle accepts, as the vectorised built-ins do; abstaining scores 0.
    """
    if pick.chosen is None or not pick.tied:
        return 0.0
    tied = np.asarray(row)[np.asarray(pick.tied)]
    if pick.group is None:
        return float(pool.correct[tied].mean())
    ids = pool.groups.ids[tied]
    return float(np.where(ids >= 0, pool.group_correct[np.maximum(ids, 0)], pool.correct[tied]).mean())


class StudySelector(ABC):
    """One selector as a study evaluates it: a problem's expected accuracy at budget k, and whether exact."""

    # Class attributes; an instance may set its own (a parameterised selector such as `BestOfN("judge")`).
    name: str
    label: str
    description: str = ""
    needs: ClassVar[Need | None] = None  # pool data it cannot do without; absent from every pool: no curve

    @property
    def needs_verifier(self) -> bool:
        """Whether it needs a scorer's scores or pass flags in the run."""
        return self.needs in ("scores", "verdicts")

    def available(self, pools: Sequence[ProblemPool]) -> bool:
        if self.needs == "logprobs":
            return any(pool.has_p.any() for pool in pools)
        if self.needs == "scores":
            return any(pool.score is not None for pool in pools)
        if self.needs == "verdicts":
            return any(pool.passed is not None for pool in pools)
        return True

    @abstractmethod
    def select(self, pool: ProblemPool) -> Selection:
        """The choice on one problem's pool (in a study: one k-subset of it, from `ProblemPool.subset`)."""

    def credits(self, pool: ProblemPool, idx: np.ndarray) -> np.ndarray:
        """Credit of the selector on each subset (rows of idx), ties credited 1/#tied."""
        return np.array([choice_credit(pool, row, self.select(pool.subset(row))) for row in idx], dtype=float)

    def accuracy(self, pool: ProblemPool, k: int, ctx: SelectorContext) -> tuple[float, bool]:
        """Expected accuracy at budget k over the problem's subsets, and whether it is exact."""
        return float(self.credits(pool, ctx.subsets.take(k)).mean()), ctx.subsets.is_exact(k)

    def note(self, timings: dict[str, float], settings: StudySettings) -> str | None:
        """A line for the curve's `note` (how the number was obtained), or None."""
        return None


# ================================================================================================ registry

_runtime: dict[str, type[StudySelector]] = {}


def register(cls: type[StudySelector]) -> type[StudySelector]:
    """Add a selector for this process (a decorator too); the usual way is an entry point in `tts.selectors`."""
    _runtime[cls.name] = cls
    return cls


def registered() -> dict[str, type[StudySelector]]:
    """name -> class of every study selector: entry points of `tts.selectors`, then `register`ed ones."""
    found: dict[str, type[StudySelector]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except ImportError as exc:  # a plugin whose dependency is missing: the study goes on without it
            warnings.warn(f"study selector {ep.name!r} cannot be loaded: {exc}", stacklevel=2)
            continue
        found[cls.name] = cls
    found.update(_runtime)
    if not found:
        raise RuntimeError(f"no {GROUP} entry points found: install the package (pip install -e .) "
                           "so its study selectors register")
    return found


def study_selectors() -> list[StudySelector]:
    """One instance of every registered selector, built-ins first in their usual order, then by name."""
    classes = registered()
    rank = {name: i for i, name in enumerate(BUILT_IN_ORDER)}
    return [classes[name]() for name in sorted(classes, key=lambda n: (rank.get(n, len(rank)), n))]


# ================================================================================================ built-ins


def _scores(pool: ProblemPool, scorer: str | None = None) -> np.ndarray:
    """The combined score (scorer None) or one scorer's, NaN where missing."""
    score = pool.scorer_score(scorer)
    return np.full(pool.n, np.nan) if score is None else score


def _scored(pools: Sequence[ProblemPool], scorer: str) -> bool:
    return any(np.isfinite(pool.scores[scorer]).any() for pool in pools if scorer in pool.scores)


class Majority(StudySelector):
    name, label = "majority", "majority vote"
    description = "the largest answer group (self-consistency)"

    def select(self, pool):
        return selection.majority(pool.groups)

    def credits(self, pool, idx):
        return _group_vote_credit(pool, idx, None)


class ProbabilityWeightedVote(StudySelector):
    """The normalised weighted sum of self-consistency.md: PC without pruning or de-duplication."""

    name, label, needs = "prob-weighted-vote", "vote weighted by exp(mean logprob)", "logprobs"
    description = "answer groups weighted by exp(mean token log-prob) of their members"

    def select(self, pool):
        return selection.weighted_vote(pool.groups, pool.p)

    def credits(self, pool, idx):
        return _group_vote_credit(pool, idx, pool.p)


class Perplexity(StudySelector):
    name, label, needs = "perplexity", "perplexity (most probable path)", "logprobs"
    description = "the path with the highest mean token log-prob"

    def select(self, pool):
        return selection.perplexity(pool.mean_logprob)

    def credits(self, pool, idx):
        return _argmax_credit(pool.mean_logprob, pool.correct, idx)


class RPC(StudySelector):
    """RPC on the same subsets as the other selectors, with at most `rpc_fits` fits per problem and k.

    Subsets settled without a fit (`rpc_settle`) all count exactly. When more than `rpc_fits` stay
    unsettled, a random sample of `rpc_fits` of them runs through the selector and stands for all
    unsettled ones (stratified sampling: unbiased, and less noisy than running the selector on
    `rpc_fits` subsets drawn from all of them).
    """

    name, label, needs = "rpc", "RPC", "logprobs"
    description = "perplexity consistency with Weibull reasoning pruning"

    def select(self, pool):
        return selection.rpc(pool.groups, pool.mean_logprob, texts=pool.text_id.tolist())

    def accuracy(self, pool, k, ctx):
        idx = ctx.subsets.take(k)
        credits, settled = rpc_settle(pool, idx, ctx.settings.min_paths)
        unsettled = np.flatnonzero(~settled)
        exact = ctx.subsets.is_exact(k)
        if len(unsettled) == 0:
            return float(credits.mean()), exact
        sample = unsettled
        if len(unsettled) > ctx.settings.rpc_fits:
            sample = ctx.rng.choice(unsettled, ctx.settings.rpc_fits, replace=False)
            exact = False
        results = [rpc_row_credit(pool, idx[r], ctx.settings.min_paths) for r in sample]
        ctx.counters["weibull_fits"] += sum(fitted for _, fitted in results)
        ctx.counters["rpc_unsettled_subsets"] += len(unsettled)
        ctx.counters["rpc_evaluated_subsets"] += len(sample)
        open_mean = float(np.mean([credit for credit, _ in results]))
        return float((credits[settled].sum() + len(unsettled) * open_mean) / len(idx)), exact

    def note(self, timings, settings):
        unsettled = timings.get("rpc_unsettled_subsets", 0)
        if not unsettled:
            return None
        return (f"{int(unsettled)} subsets needed a Weibull fit to settle; "
                f"{int(timings['rpc_evaluated_subsets'])} of them were run (at most {settings.rpc_fits} "
                "per problem and k), standing for the rest")


class BestOfN(StudySelector):
    """Best-of-n on the combined score (mean of every verdict), or on one scorer's score.

    `BestOfN("judge")` is the curve `best-of-n[judge]`: the argmax of that scorer's score, ties by
    mean log-prob then sample order, samples without its verdict ranked lowest (`scorer_selectors`
    makes one per scorer recorded in the run).
    """

    name, label, needs = "best-of-n", "best-of-n (verifier score)", "scores"
    description = "the highest scorer score, ties by mean log-prob"

    def __init__(self, scorer: str | None = None):
        self.scorer = scorer
        if scorer is not None:
            self.name, self.label = f"best-of-n[{scorer}]", f"best-of-n ({scorer})"
            self.description = f"the highest {scorer} score, ties by mean log-prob"

    def available(self, pools):
        if self.scorer is None:
            return super().available(pools)
        return _scored(pools, self.scorer)

    def select(self, pool):
        return selection.best_of_n(_scores(pool, self.scorer), pool.mean_logprob)

    def credits(self, pool, idx):
        return _argmax_credit(pool.scorer_rank(self.scorer), pool.correct, idx)


class ScoreWeightedVote(StudySelector):
    """The weighted vote on the combined score, or on one scorer's score (search-and-learn's weighted best-of-N).

    `ScoreWeightedVote("judge")` is the curve `weighted-vote[judge]`: answer groups as majority vote
    groups them, a group's weight the sum of its members' judge scores (missing count 0).
    """

    name, label, needs = "score-weighted-vote", "vote weighted by verifier score", "scores"
    description = "answer groups weighted by their members' scorer scores"

    def __init__(self, scorer: str | None = None):
        self.scorer = scorer
        if scorer is not None:
            self.name, self.label = f"weighted-vote[{scorer}]", f"vote weighted by {scorer}"
            self.description = f"answer groups weighted by the sum of their members' {scorer} scores"

    def available(self, pools):
        if self.scorer is None:
            return super().available(pools)
        return _scored(pools, self.scorer)

    def select(self, pool):
        return selection.weighted_vote(pool.groups, _scores(pool, self.scorer))

    def credits(self, pool, idx):
        return _group_vote_credit(pool, idx, np.nan_to_num(_scores(pool, self.scorer), nan=0.0))


def scorer_selectors(pools: Sequence[ProblemPool]) -> list[StudySelector]:
    """`best-of-n[<scorer>]` and `weighted-vote[<scorer>]` for every scorer recorded in the pools."""
    return [cls(name) for name in scorer_names(pools) for cls in (BestOfN, ScoreWeightedVote)]


class FirstPassing(StudySelector):
    """Closed form, no draws: in a random order the first accepted sample is uniform over the accepted."""

    name, label, needs = "first-passing", "first passing the verifier", "verdicts"
    description = "resample until the scorers accept (fLaws)"

    def select(self, pool):
        return selection.first_passing([None] * pool.n if pool.passed is None else pool.passed.tolist())

    def accuracy(self, pool, k, ctx):
        if pool.passed is None or not pool.passed.any():
            return 0.0, True
        accepted = int(pool.passed.sum())
        right = int((pool.passed & pool.correct).sum())
        return pass_at_k(pool.n, accepted, k) * right / accepted, True
