"""Scaling study of a stored sample pool: coverage and selector accuracy at every budget k <= n.

Everything comes from a run folder's `samples.jsonl` (DESIGN.md, "Sample once, evaluate many");
nothing is generated again. ALGORITHMS.md sections: 1 (pass@k, coverage, subsampled selector curves,
exponentiated power-law fit), 2 (majority vote), 3 (RPC, perplexity), 7 (best-of-N, weighted vote),
9 (fLaws ceiling of resampling with an imperfect verifier).

How each number is computed, and what is exact:
- coverage@k: the unbiased estimator per problem (exact), averaged over problems.
- selector accuracy@k: the expected accuracy of the selector on a uniformly random k-subset of the
  problem's pool, ties credited 1/#tied (ALGORITHMS.md 2 (c)). Exact where the subsets can be
  enumerated (C(n, k) <= draws, always for k = n and for k = 1 with n <= draws); otherwise the mean
  over `draws` random subsets (seeded per problem; the same subsets for every selector and nested
  across k, so differences between selectors and between budgets are paired). A vote's winning
  group is credited with the share of its members the oracle accepts (0 or 1 whenever the oracle
  agrees with the task's equivalence, as it does for math answers).
- first-passing@k: exact in closed form (no draws): for a random order, the first accepted sample is
  uniform over the accepted ones, so Acc = pass@k(n, #accepted) * #accepted-and-correct / #accepted.
- RPC@k: the Weibull fit depends on the subset, so RPC is run per subset exactly as the selector
  runs it, on the same subsets as the other selectors. Two things keep that affordable. (1) A
  group's mass after pruning lies between the mass of its never-prunable paths (not below the
  mean) and the mass of all its paths, so the groups that could win whatever the fit decides are
  known without fitting; when they are all equally correct the subset's credit is exact without a
  fit (the common case: a dominant answer, or no correct answer in the subset). (2) Of the subsets
  still unsettled, at most `rpc_fits` per problem and k run through the selector, a random sample
  standing for all of them (stratified: unbiased; each fit costs milliseconds). By default
  `rpc_fits` is sized so a study runs about RPC_FIT_BUDGET fits (every unsettled subset for a
  50-problem pool; 2 per problem and k for 1319 x 64: on a synthetic 300 x 64 pool, 2 instead of
  200 moved RPC@k by at most 0.005 against bootstrap intervals 0.09 wide, at 1/20 of the time). The curve's `note` and `timings` say how many subsets
  needed a fit and how many were run; with `rpc_fits >= draws` RPC is as exact as the others.
- `workers` > 1 spreads problems over processes (results do not depend on the count).
- intervals: percentile bootstrap over problems (95%), on per-problem values.
- tokens at k: k x mean completion tokens per sample (pooled), so curves can be drawn against tokens.
- the power law log C(k) = a k^b: non-linear least squares on log C over the grid points with
  0 < C < 1, started at a = log C(1), b = -0.5; R^2 on log C.

Answers are grouped once per problem with the task's equivalence (the task named in config.json),
each distinct pair compared at most once, and the groups are cached in the run folder
(`groups.json`, keyed by task and answers), so a second study of the same run does no comparison
(delete the file to regroup, e.g. after the task's equivalence changed).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import time
import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import OptimizeWarning, curve_fit

from tts import selectors
from tts.errors import UserError
from tts.metrics import k_grid, pass_at_k
from tts.runs import RunFolder, read_config
from tts.types import Verdict

GROUPS_FILE = "groups.json"
DEFAULT_DRAWS = 200
# RPC: about this many Weibull fits per study at most (a few ms each), never fewer than MIN_RPC_FITS
# per problem and k (see auto_rpc_fits).
RPC_FIT_BUDGET = 10_000
MIN_RPC_FITS = 2
DEFAULT_BOOTSTRAP = 1000

# ================================================================================================ output models


class Point(BaseModel):
    k: int
    tokens: float = Field(description="mean completion tokens spent per problem at this k")
    value: float
    lo: float | None = Field(None, description="bootstrap 2.5% quantile over problems")
    hi: float | None = Field(None, description="bootstrap 97.5% quantile over problems")


class Curve(BaseModel):
    name: str
    label: str
    draws: int | None = Field(None, description="random subsets per problem and k; None when exact")
    note: str | None = None
    points: list[Point]

    def at(self, k: int) -> Point | None:
        return next((p for p in self.points if p.k == k), None)


class PowerLawFit(BaseModel):
    """log C(k) = a * k**b (ALGORITHMS.md 1), fitted on the grid points with 0 < C(k) < 1."""

    a: float
    b: float
    r2: float | None
    ks: list[int]
    method: str

    def predict(self, k: float | np.ndarray) -> float | np.ndarray:
        return np.exp(self.a * np.power(k, self.b))


class VerifierStudy(BaseModel):
    """The selection verifier against the oracle, and the fLaws ceiling (ALGORITHMS.md 9)."""

    verifiers: list[str]
    samples: int = Field(description="samples with a pass flag from the selection verifiers")
    sample_accuracy: float = Field(description="p: share of those samples the oracle marks correct")
    false_positive_rate: float | None = Field(description="f: share of incorrect samples the verifier accepts")
    true_positive_rate: float | None = Field(description="share of correct samples it accepts (fLaws assumes 1)")
    ceiling: float | None = Field(description="p / (p + (1 - p) f): accuracy of resampling as k grows without bound")
    predicted: list[Point] = Field(description="fLaws Acc(k) = p/(p+q) [1 - (1-p-q)^k], q = (1-p) f")


class ProblemCoverage(BaseModel):
    problem_id: str
    n: int
    correct: int
    pass_at_k: list[float] = Field(description="aligned with the study's ks")


class StudySettings(BaseModel):
    draws: int
    rpc_fits: int
    seed: int
    bootstrap: int
    k_max: int | None
    min_paths: int = selectors.MIN_PATHS_TO_PRUNE


class ScalingStudy(BaseModel):
    run: str
    label: str
    task: str
    model: str | None
    strategy: str | None
    problems: int
    samples: int
    n_min: int
    n_max: int
    ks: list[int]
    mean_tokens_per_sample: float
    coverage: Curve
    selectors: list[Curve]
    power_law: PowerLawFit | None
    verifier: VerifierStudy | None
    per_problem: list[ProblemCoverage]
    settings: StudySettings
    timings: dict[str, float] = Field(default_factory=dict)

    def curve(self, name: str) -> Curve | None:
        if name == "coverage":
            return self.coverage
        return next((c for c in self.selectors if c.name == name), None)

    def smallest_k_reaching(self, name: str, target: float) -> int | None:
        """Smallest grid k at which a curve's point estimate reaches `target` (None if it never does)."""
        curve = self.curve(name)
        if curve is None:
            return None
        return next((p.k for p in curve.points if p.value >= target - 1e-12), None)


class ScalingFile(BaseModel):
    """scaling.json: one study per run folder analysed together."""

    version: int = 1
    studies: list[ScalingStudy]


# ================================================================================================ pools


@dataclass
class ProblemPool:
    """One problem's samples as arrays, grouped once."""

    problem_id: str
    groups: selectors.Groups
    correct: np.ndarray          # bool per sample (oracle)
    mean_logprob: np.ndarray     # float, NaN where missing
    text_id: np.ndarray          # int: identical completion texts share an id (RPC's distinct paths)
    tokens: np.ndarray           # completion tokens per sample
    score: np.ndarray | None     # selection-verifier score (NaN where none); None: no sample has one
    passed: np.ndarray | None    # bool: accepted by the selection verifiers; None: no sample has a flag
    group_correct: np.ndarray = field(init=False)  # per group: share of its members the oracle accepts
    p: np.ndarray = field(init=False)               # exp(mean log-prob), 0 where missing
    rank: np.ndarray = field(init=False)            # best-of-n key: dense rank of (score, mean log-prob)

    def __post_init__(self) -> None:
        ids = self.groups.ids
        G = self.groups.count
        valid = ids >= 0
        sizes = np.bincount(ids[valid], minlength=G)
        hits = np.bincount(ids[valid], weights=self.correct[valid].astype(float), minlength=G)
        self.group_correct = hits / np.maximum(sizes, 1)
        has_p = np.isfinite(self.mean_logprob)
        self.p = np.where(has_p, np.exp(np.where(has_p, self.mean_logprob, 0.0)), 0.0)
        score = self.score if self.score is not None else np.full(self.n, np.nan)
        keys = np.stack([np.nan_to_num(self.mean_logprob, nan=-np.inf), np.nan_to_num(score, nan=-np.inf)])
        order = np.lexsort(keys)  # last key most significant: score, then mean log-prob
        sorted_keys = keys[:, order]
        step = np.r_[0, np.any(sorted_keys[:, 1:] != sorted_keys[:, :-1], axis=0).cumsum()]
        self.rank = np.empty(self.n, dtype=np.int64)
        self.rank[order] = step

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def has_p(self) -> np.ndarray:
        return np.isfinite(self.mean_logprob)


class _CachedEquivalence:
    """The task's `equivalent`, each ordered pair asked once per process (it may call SymPy)."""

    def __init__(self, equivalent: Callable[[str, str], bool]):
        self.equivalent = equivalent
        self.cache: dict[tuple[str, str], bool] = {}
        self.calls = 0

    def __call__(self, a: str, b: str) -> bool:
        key = (a, b)
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = bool(self.equivalent(a, b))
        return self.cache[key]


def _answers_key(task_key: str, answers: Sequence[str | None]) -> str:
    return hashlib.sha256(json.dumps([task_key, list(answers)]).encode()).hexdigest()[:16]


def _selection_verdicts(row: dict[str, Any]) -> list[Verdict]:
    return [Verdict(**v) for v in row.get("selection") or []]


def read_run(run: RunFolder) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """config.json and the samples of every finished problem, in index order."""
    if not run.config_path.exists() or not run.samples_path.exists():
        raise UserError(f"{run.path} is not a run folder with samples (needs config.json and samples.jsonl)")
    config = read_config(run.config_path)
    finished = {r["problem_id"] for r in run.results()}
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in run.samples():
        if row["problem_id"] in finished:
            by_problem[row["problem_id"]].append(row)
    if not by_problem:
        raise UserError(f"{run.path} has no finished problem with samples")
    for rows in by_problem.values():
        rows.sort(key=lambda r: r["index"])
    return config, dict(by_problem)


def task_equivalence(config: dict[str, Any]) -> Callable[[str, str], bool]:
    """The answer equivalence of the task named in config.json (built through the registry)."""
    from tts.registry import build_task

    name = config.get("task")
    if not name:
        raise UserError("config.json names no task, so answers cannot be grouped")
    return build_task(name, **(config.get("task_options") or {})).equivalent


@dataclass
class LoadedRun:
    config: dict[str, Any]
    pools: list[ProblemPool]
    verifiers: list[str]
    timings: dict[str, float]


def load_pools(run: RunFolder, equivalent: Callable[[str, str], bool] | None = None,
               use_cache: bool = True) -> LoadedRun:
    """The run's problems as `ProblemPool`s, answers grouped once per problem (cached in groups.json)."""
    config, by_problem = read_run(run)
    eq = _CachedEquivalence(equivalent or task_equivalence(config))
    grouping = 0.0
    task_key = json.dumps([config.get("task"), config.get("task_options")], sort_keys=True)
    cache_path = run.path / GROUPS_FILE
    cache: dict[str, list[int]] = {}
    if use_cache and cache_path.exists():
        try:
            cache = json.loads(cache_path.read_text()).get("groups", {})
        except (json.JSONDecodeError, AttributeError):
            cache = {}
    fresh: dict[str, list[int]] = {}
    pools, verifiers = [], set()
    for pid, rows in by_problem.items():
        answers = [r.get("answer") for r in rows]
        key = _answers_key(task_key, answers)
        if key in cache and len(cache[key]) == len(rows):
            groups = selectors.Groups(np.asarray(cache[key], dtype=np.int64))
        else:
            started = time.perf_counter()
            groups = selectors.Groups.of_answers(answers, eq)
            grouping += time.perf_counter() - started
        fresh[key] = groups.ids.tolist()
        verdicts = [_selection_verdicts(r) for r in rows]
        verifiers.update(v.verifier for vs in verdicts for v in vs)
        pools.append(_pool(pid, rows, verdicts, groups))
    if use_cache and set(fresh) != set(cache):
        try:
            cache_path.write_text(json.dumps({"note": "answer groups per problem, keyed by task and answers",
                                              "groups": fresh}) + "\n")
        except OSError:
            pass  # a read-only run folder: the study still works, the next one groups again
    return LoadedRun(config, pools, sorted(verifiers),
                     {"grouping_seconds": grouping, "equivalence_calls": float(eq.calls)})


def _pool(pid: str, rows: list[dict[str, Any]], verdicts: list[list[Verdict]], groups: selectors.Groups) -> ProblemPool:
    texts: dict[str, int] = {}
    scores = [selectors.verdict_score(v) for v in verdicts]
    flags = [selectors.verdict_passed(v) for v in verdicts]
    return ProblemPool(
        problem_id=pid,
        groups=groups,
        correct=np.array([bool(r.get("correct")) for r in rows]),
        mean_logprob=np.array([np.nan if r.get("mean_logprob") is None else float(r["mean_logprob"]) for r in rows]),
        text_id=np.array([texts.setdefault(r.get("text", ""), len(texts)) for r in rows], dtype=np.int64),
        tokens=np.array([int(r.get("completion_tokens") or 0) for r in rows]),
        score=np.array([np.nan if s is None else s for s in scores]) if any(s is not None for s in scores) else None,
        passed=np.array([f is True for f in flags]) if any(f is not None for f in flags) else None,
    )


# ================================================================================================ subsets


class Subsets:
    """The k-subsets a problem is evaluated on: all of them when few enough, else seeded random draws.

    Random draws are prefixes of one set of random permutations, so subsets are nested across k and
    shared by every selector.
    """

    def __init__(self, n: int, draws: int, rng: np.random.Generator):
        self.n = n
        self.draws = draws
        self.perms = rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1)

    def take(self, k: int) -> np.ndarray:
        """(rows, k) sample indices: all C(n, k) subsets when that is at most `draws` (exact), else `draws` draws."""
        if k >= self.n:
            return np.arange(self.n)[None, :]
        if math.comb(self.n, k) <= self.draws:
            return np.array(list(itertools.combinations(range(self.n), k)), dtype=np.int64)
        return self.perms[:, :k]

    def is_exact(self, k: int) -> bool:
        return k >= self.n or math.comb(self.n, k) <= self.draws


def _group_sums(ids: np.ndarray, weights: np.ndarray | None, mask: np.ndarray, n_groups: int) -> np.ndarray:
    """(rows, groups) sums of `weights` (or counts) over the masked entries of each row."""
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    keys = (rows * n_groups + ids)[mask]
    w = None if weights is None else weights[mask]
    return np.bincount(keys, weights=w, minlength=ids.shape[0] * n_groups).reshape(ids.shape[0], n_groups)


def _tie_credit(scores: np.ndarray, present: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row: mean `value` over the present options whose score ties the best (0 if none present)."""
    s = np.where(present, scores, -np.inf)
    best = s.max(axis=1, keepdims=True)
    tied = present & (s >= best - selectors.TIE_RTOL * np.abs(best))
    n_tied = tied.sum(axis=1)
    credit = (tied * value).sum(axis=1) / np.maximum(n_tied, 1)
    return np.where(n_tied > 0, credit, 0.0)


def _group_vote_credit(pool: ProblemPool, idx: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    G = pool.groups.count
    if G == 0:
        return np.zeros(len(idx))
    ids = pool.groups.ids[idx]
    valid = ids >= 0
    counts = _group_sums(ids, None, valid, G)
    scores = counts if weights is None else _group_sums(ids, weights[idx], valid, G)
    return _tie_credit(scores, counts > 0, pool.group_correct[None, :])


def _argmax_credit(key: np.ndarray, correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Credit of picking the sample with the largest key (NaN never picked; all NaN: abstain)."""
    keys = np.nan_to_num(key[idx], nan=-np.inf)
    valid = np.isfinite(keys) if np.issubdtype(keys.dtype, np.floating) else np.ones(keys.shape, dtype=bool)
    return _tie_credit(keys, valid, correct[idx])


def _distinct_texts(text_id: np.ndarray) -> np.ndarray:
    """Per row, True at the first occurrence of each completion text (RPC counts a text once)."""
    order = np.argsort(text_id, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(text_id, order, axis=1)
    first = np.ones_like(sorted_ids, dtype=bool)
    first[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    out = np.empty_like(first)
    np.put_along_axis(out, order, first, axis=1)
    return out


def rpc_row_credit(pool: ProblemPool, row: np.ndarray, min_paths: int) -> tuple[float, bool]:
    """RPC on one subset through the selector itself: (credit, whether a Weibull fit ran)."""
    pick = selectors.rpc(pool.groups.subset(row), pool.mean_logprob[row], texts=pool.text_id[row].tolist(),
                         min_paths=min_paths)
    if pick.chosen is None:
        return 0.0, pick.info.get("fit") is not None
    gids = pool.groups.ids[row[np.asarray(pick.tied)]]
    return float(pool.group_correct[gids].mean()), pick.info.get("fit") is not None


def rpc_settle(pool: ProblemPool, idx: np.ndarray, min_paths: int) -> tuple[np.ndarray, np.ndarray]:
    """RPC credit of every subset (rows of idx) that can be settled without a Weibull fit.

    A group's mass after pruning lies between the mass of its paths that can never be pruned (not
    below the mean, or too few paths to prune at all) and the mass of all its paths. Every group
    whose upper bound reaches the largest lower bound could win; when all of those are equally
    correct, the credit is known whatever the fit decides. Bounds are widened by a relative 1e-9, so
    float summation order can only leave more rows unsettled, never settle one wrongly.
    Returns (credits, settled); credits of unsettled rows are 0 and must come from `rpc_row_credit`.
    """
    G = pool.groups.count
    if G == 0:
        return np.zeros(len(idx)), np.ones(len(idx), dtype=bool)
    ids, p, has_p = pool.groups.ids[idx], pool.p[idx], pool.has_p[idx]
    n_fit = has_p.sum(axis=1)
    mean_p = (p * has_p).sum(axis=1) / np.maximum(n_fit, 1)
    maybe_pruned = has_p & (p <= mean_p[:, None] * (1 + 1e-9)) & (n_fit >= min_paths)[:, None]
    live = _distinct_texts(pool.text_id[idx]) & has_p & (ids >= 0)
    most = _group_sums(ids, p, live, G) * (1 + 1e-9)
    least = _group_sums(ids, p, live & ~maybe_pruned, G)
    present = _group_sums(ids, None, ids >= 0, G) > 0
    contenders = present & (most >= least.max(axis=1, keepdims=True))
    gc = np.broadcast_to(pool.group_correct, contenders.shape)
    hi = np.where(contenders, gc, -np.inf).max(axis=1)
    lo = np.where(contenders, gc, np.inf).min(axis=1)
    answered = present.any(axis=1)
    settled = (hi == lo) | ~answered
    return np.where(settled & answered, hi, 0.0), settled


def rpc_credits(pool: ProblemPool, idx: np.ndarray, min_paths: int = selectors.MIN_PATHS_TO_PRUNE) -> np.ndarray:
    """Exact RPC credit of every subset: settled ones without a fit, the rest through `selectors.rpc`."""
    credits, settled = rpc_settle(pool, idx, min_paths)
    for r in np.flatnonzero(~settled):
        credits[r] = rpc_row_credit(pool, idx[r], min_paths)[0]
    return credits


# ================================================================================================ selectors of a study


@dataclass
class _Context:
    """What a study selector may use for one problem: its subsets, the settings, a seeded RNG, counters."""

    subsets: Subsets
    settings: StudySettings
    rng: np.random.Generator
    weibull_fits: int = 0
    rpc_unsettled: int = 0
    rpc_evaluated: int = 0


class StudySelector:
    """One selector as a study evaluates it: a problem's expected accuracy at budget k, and whether exact."""

    name: ClassVar[str]
    label: ClassVar[str]
    needs: ClassVar[str] = ""  # "logprobs" | "scores" | "verdicts": the pool data it cannot do without

    def available(self, pools: list[ProblemPool]) -> bool:
        if self.needs == "logprobs":
            return any(pool.has_p.any() for pool in pools)
        if self.needs == "scores":
            return any(pool.score is not None for pool in pools)
        if self.needs == "verdicts":
            return any(pool.passed is not None for pool in pools)
        return True

    def accuracy(self, pool: ProblemPool, k: int, ctx: _Context) -> tuple[float, bool]:
        return float(self.credits(pool, ctx.subsets.take(k)).mean()), ctx.subsets.is_exact(k)

    def credits(self, pool: ProblemPool, idx: np.ndarray) -> np.ndarray:
        """Credit of the selector on each subset (rows of idx), ties credited 1/#tied."""
        raise NotImplementedError


class Majority(StudySelector):
    name, label = "majority", "majority vote"

    def credits(self, pool, idx):
        return _group_vote_credit(pool, idx, None)


class ProbabilityWeightedVote(StudySelector):
    """ALGORITHMS.md 2's normalised weighted sum: PC without pruning or de-duplication."""

    name, label, needs = "prob-weighted-vote", "vote weighted by exp(mean logprob)", "logprobs"

    def credits(self, pool, idx):
        return _group_vote_credit(pool, idx, pool.p)


class Perplexity(StudySelector):
    name, label, needs = "perplexity", "perplexity (most probable path)", "logprobs"

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
        ctx.weibull_fits += sum(fitted for _, fitted in results)
        ctx.rpc_unsettled += len(unsettled)
        ctx.rpc_evaluated += len(sample)
        open_mean = float(np.mean([credit for credit, _ in results]))
        return float((credits[settled].sum() + len(unsettled) * open_mean) / len(idx)), exact


class BestOfN(StudySelector):
    name, label, needs = "best-of-n", "best-of-n (verifier score)", "scores"

    def credits(self, pool, idx):
        return _argmax_credit(pool.rank, pool.correct, idx)


class ScoreWeightedVote(StudySelector):
    name, label, needs = "score-weighted-vote", "vote weighted by verifier score", "scores"

    def credits(self, pool, idx):
        weights = np.zeros(pool.n) if pool.score is None else np.nan_to_num(pool.score, nan=0.0)
        return _group_vote_credit(pool, idx, weights)


class FirstPassing(StudySelector):
    """Closed form, no draws: in a random order the first accepted sample is uniform over the accepted."""

    name, label, needs = "first-passing", "first passing the verifier", "verdicts"

    def accuracy(self, pool, k, ctx):
        if pool.passed is None or not pool.passed.any():
            return 0.0, True
        accepted = int(pool.passed.sum())
        right = int((pool.passed & pool.correct).sum())
        return pass_at_k(pool.n, accepted, k) * right / accepted, True


STUDY_SELECTORS: tuple[StudySelector, ...] = (
    Majority(), RPC(), Perplexity(), ProbabilityWeightedVote(), BestOfN(), ScoreWeightedVote(), FirstPassing(),
)


# ================================================================================================ statistics


def bootstrap_interval(values: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile intervals of the mean over problems; values is (problems, ks), picks (resamples, problems)."""
    if len(picks) == 0 or len(values) < 2:
        return np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    means = values[picks].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    return lo, hi


def fit_power_law(ks: Sequence[int], coverage: Sequence[float]) -> PowerLawFit | None:
    """Exponentiated power law log C(k) = a k^b (ALGORITHMS.md 1); None with fewer than two usable points."""
    k = np.asarray(ks, dtype=float)
    c = np.asarray(coverage, dtype=float)
    use = (c > 0) & (c < 1)
    if use.sum() < 2:
        return None
    k, y = k[use], np.log(c[use])
    slope, intercept = np.polyfit(np.log(k), np.log(-y), 1)  # log(-log C) = log(-a) + b log k
    a, b, method = -float(np.exp(intercept)), float(slope), "log-log least squares"
    start = (float(y[0]) if k[0] == 1 else a, -0.5)
    try:
        with warnings.catch_warnings():  # two points: no covariance estimate, which is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            (a_fit, b_fit), _ = curve_fit(lambda x, a_, b_: a_ * np.power(x, b_), k, y, p0=start,
                                          bounds=([-np.inf, -np.inf], [0.0, 0.0]), maxfev=10000)
        a, b, method = float(a_fit), float(b_fit), "non-linear least squares on log C"
    except (RuntimeError, ValueError):
        pass
    residual = y - a * np.power(k, b)
    total = ((y - y.mean()) ** 2).sum()
    r2 = float(1 - (residual ** 2).sum() / total) if total > 0 else None
    return PowerLawFit(a=a, b=b, r2=r2, ks=[int(x) for x in k], method=method)


def flaws_accuracy(p: float, f: float, k: np.ndarray | int) -> np.ndarray:
    """fLaws Acc(k) = p/(p+q) [1 - (1-p-q)^k], q = (1-p) f (ALGORITHMS.md 9)."""
    q = (1 - p) * f
    if p + q <= 0:
        return np.zeros_like(np.asarray(k, dtype=float))
    return p / (p + q) * (1 - np.power(1 - p - q, np.asarray(k, dtype=float)))


def verifier_study(pools: list[ProblemPool], verifiers: list[str], ks: list[int], tokens: float) -> VerifierStudy | None:
    flagged = [pool for pool in pools if pool.passed is not None]
    if not flagged:
        return None
    passed = np.concatenate([pool.passed for pool in flagged])
    correct = np.concatenate([pool.correct for pool in flagged])
    p = float(correct.mean())
    f = float(passed[~correct].mean()) if (~correct).any() else None
    tpr = float(passed[correct].mean()) if correct.any() else None
    ceiling = p / (p + (1 - p) * f) if f is not None and p + (1 - p) * f > 0 else None
    predicted = [] if f is None else [
        Point(k=k, tokens=k * tokens, value=float(flaws_accuracy(p, f, k))) for k in ks]
    return VerifierStudy(verifiers=verifiers, samples=len(passed), sample_accuracy=p, false_positive_rate=f,
                         true_positive_rate=tpr, ceiling=ceiling, predicted=predicted)


# ================================================================================================ the study


def _problem_rng(seed: int, problem_id: str) -> np.random.Generator:
    """Per-problem stream: the draws of a problem depend neither on the other problems nor on workers."""
    return np.random.default_rng([seed, zlib.crc32(problem_id.encode())])


def auto_rpc_fits(pools: list[ProblemPool], ks: Sequence[int], draws: int, min_paths: int) -> int:
    """Fits allowed per problem and k so that a study runs at most about RPC_FIT_BUDGET Weibull fits.

    Only budgets with random subsets and room to prune (min_paths <= k < n) can need many fits. Small
    studies get every unsettled subset fitted (as exact as the other selectors); 1319 x 64 gets 2.
    """
    n = min(pool.n for pool in pools)
    costly = sum(1 for k in ks if min_paths <= k < n and math.comb(n, k) > draws)
    if costly == 0:
        return draws
    return int(min(draws, max(MIN_RPC_FITS, RPC_FIT_BUDGET // (len(pools) * costly))))


@dataclass
class _Evaluation:
    """Per-problem accuracies of a chunk of problems (what a worker process sends back)."""

    accuracy: dict[str, np.ndarray]
    exact: dict[str, bool]
    counters: dict[str, float]


def _evaluate(pools: list[ProblemPool], ks: list[int], names: list[str], settings: StudySettings) -> _Evaluation:
    chosen = [s for s in STUDY_SELECTORS if s.name in names]
    acc = {s.name: np.zeros((len(pools), len(ks))) for s in chosen}
    exact = {s.name: True for s in chosen}
    counters: dict[str, float] = defaultdict(float)
    for i, pool in enumerate(pools):
        rng = _problem_rng(settings.seed, pool.problem_id)
        ctx = _Context(Subsets(pool.n, settings.draws, rng), settings, rng)
        for s in chosen:
            started = time.perf_counter()
            for j, k in enumerate(ks):
                acc[s.name][i, j], is_exact = s.accuracy(pool, k, ctx)
                exact[s.name] &= is_exact
            counters[f"{s.name}_seconds"] += time.perf_counter() - started
        counters["weibull_fits"] += ctx.weibull_fits
        counters["rpc_unsettled_subsets"] += ctx.rpc_unsettled
        counters["rpc_evaluated_subsets"] += ctx.rpc_evaluated
    return _Evaluation(acc, exact, dict(counters))


def _evaluate_in_workers(pools: list[ProblemPool], ks: list[int], names: list[str], settings: StudySettings,
                         workers: int) -> _Evaluation:
    """Problems split across worker processes (interleaved chunks, so slow problems spread out)."""
    if workers <= 1 or len(pools) < 2 * workers:
        return _evaluate(pools, ks, names, settings)
    chunks = [list(range(w, len(pools), workers)) for w in range(workers)]
    context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool_exec:
        parts = list(pool_exec.map(_evaluate, [[pools[i] for i in c] for c in chunks],
                                   [ks] * workers, [names] * workers, [settings] * workers))
    acc = {name: np.zeros((len(pools), len(ks))) for name in names}
    counters: dict[str, float] = defaultdict(float)
    for chunk, part in zip(chunks, parts):
        for name in names:
            acc[name][chunk] = part.accuracy[name]
        for key, value in part.counters.items():
            counters[key] += value  # seconds summed over workers: CPU time, not wall time
    exact = {name: all(part.exact[name] for part in parts) for name in names}
    return _Evaluation(acc, exact, dict(counters))


def study_pools(pools: list[ProblemPool], *, run: str = "", label: str = "", task: str = "",
                model: str | None = None, strategy: str | None = None, verifiers: Sequence[str] = (),
                draws: int = DEFAULT_DRAWS, rpc_fits: int | None = None, seed: int = 0,
                k_max: int | None = None, bootstrap: int = DEFAULT_BOOTSTRAP,
                min_paths: int = selectors.MIN_PATHS_TO_PRUNE, workers: int = 1) -> ScalingStudy:
    """The study of already grouped pools (see the module docstring for what is exact).

    rpc_fits: most Weibull fits per problem and k (None: `auto_rpc_fits`). workers: processes for the
    selectors; results do not depend on it. One is the default: 1319 x 64 takes about 17 s on one
    core, and on 2 shared cores two workers were slower (process start-up, contention) than one.
    """
    if not pools:
        raise UserError("no problems to study")
    if draws < 1 or (rpc_fits is not None and rpc_fits < 1):
        raise UserError("--draws and --rpc-fits must be at least 1")
    if k_max is not None and k_max < 1:
        raise UserError("--k-max must be at least 1")
    if seed < 0 or bootstrap < 0:
        raise UserError("--seed and --bootstrap must not be negative")
    n_min = min(pool.n for pool in pools)
    ks = k_grid(min(n_min, k_max) if k_max else n_min)
    if rpc_fits is None:
        rpc_fits = auto_rpc_fits(pools, ks, draws, min_paths)
    settings = StudySettings(draws=draws, rpc_fits=rpc_fits, seed=seed, bootstrap=bootstrap, k_max=k_max,
                             min_paths=min_paths)
    tokens = float(np.concatenate([pool.tokens for pool in pools]).mean())
    names = [s.name for s in STUDY_SELECTORS if s.available(pools)]
    if workers < 1:
        raise UserError("--workers must be at least 1")
    started = time.perf_counter()
    evaluation = _evaluate_in_workers(pools, ks, names, settings, workers)
    timings: dict[str, float] = {**evaluation.counters, "selectors_wall_seconds": time.perf_counter() - started,
                                 "workers": float(workers)}

    cover = np.array([[pass_at_k(pool.n, int(pool.correct.sum()), k) for k in ks] for pool in pools])
    # One set of problem resamples for every curve, so their intervals are paired.
    picks = np.random.default_rng([seed, 2**31 - 1]).integers(0, len(pools), size=(bootstrap, len(pools)))

    def curve(name: str, label_: str, values: np.ndarray, is_exact: bool, note: str | None = None) -> Curve:
        lo, hi = bootstrap_interval(values, picks)
        means = values.mean(axis=0)
        return Curve(name=name, label=label_, draws=None if is_exact else draws, note=note, points=[
            Point(k=k, tokens=k * tokens, value=float(means[j]),
                  lo=None if np.isnan(lo[j]) else float(lo[j]), hi=None if np.isnan(hi[j]) else float(hi[j]))
            for j, k in enumerate(ks)])

    def note(name: str) -> str | None:
        unsettled = timings.get("rpc_unsettled_subsets", 0)
        if name != "rpc" or not unsettled:
            return None
        return (f"{int(unsettled)} subsets needed a Weibull fit to settle; "
                f"{int(timings['rpc_evaluated_subsets'])} of them were run (at most {rpc_fits} per problem and k), "
                "standing for the rest")

    coverage = curve("coverage", "coverage (pass@k)", cover, True)
    curves = [curve(s.name, s.label, evaluation.accuracy[s.name], evaluation.exact[s.name], note(s.name))
              for s in STUDY_SELECTORS if s.name in names]
    return ScalingStudy(
        run=run, label=label, task=task, model=model, strategy=strategy,
        problems=len(pools), samples=int(sum(pool.n for pool in pools)),
        n_min=n_min, n_max=max(pool.n for pool in pools), ks=ks, mean_tokens_per_sample=tokens,
        coverage=coverage, selectors=curves,
        power_law=fit_power_law(ks, [pt.value for pt in coverage.points]),
        verifier=verifier_study(pools, list(verifiers), ks, tokens),
        per_problem=[ProblemCoverage(problem_id=pool.problem_id, n=pool.n, correct=int(pool.correct.sum()),
                                     pass_at_k=cover[i].tolist()) for i, pool in enumerate(pools)],
        settings=settings, timings=timings,
    )


def _model_name(config: dict[str, Any]) -> str | None:
    model = config.get("model") or (config.get("backend_info") or {}).get("model")
    return str(model) if model else None


def study_run(run_dir: str | Path, *, draws: int = DEFAULT_DRAWS, rpc_fits: int | None = None, seed: int = 0,
              k_max: int | None = None, bootstrap: int = DEFAULT_BOOTSTRAP, workers: int = 1,
              equivalent: Callable[[str, str], bool] | None = None, label: str | None = None) -> ScalingStudy:
    """The scaling study of one run folder (answers grouped with the task's equivalence unless given)."""
    run = RunFolder(run_dir)
    started = time.perf_counter()
    loaded = load_pools(run, equivalent)
    load_seconds = time.perf_counter() - started
    study = study_pools(loaded.pools, run=str(run.path), label=label or run.path.name,
                        task=str(loaded.config.get("task")), model=_model_name(loaded.config),
                        strategy=loaded.config.get("strategy"), verifiers=loaded.verifiers,
                        draws=draws, rpc_fits=rpc_fits, seed=seed, k_max=k_max, bootstrap=bootstrap,
                        workers=workers)
    study.timings.update(loaded.timings)
    study.timings["load_seconds"] = load_seconds
    study.timings["total_seconds"] = time.perf_counter() - started
    return study
