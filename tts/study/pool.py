"""A run folder's samples as per-problem pools: read once, answers grouped once (cached in groups.json).

Each scorer recorded in the samples' `selection` verdicts keeps its own arrays (`scores`, `flags`,
and for a process scorer the `last`/`min`/`prod`/`mean` aggregations of its step scores in `steps`),
NaN where a sample has no verdict of it; `score`/`passed` stay the combined view (mean of every
verdict, all flags passed) the scorer-agnostic selectors use.

Answers are grouped with the task's equivalence (the task named in config.json), each distinct pair
compared at most once, and the groups are cached in the run folder (`groups.json`, keyed by task
and answers), so a second study of the same run does no comparison (delete the file to regroup,
e.g. after the task's equivalence changed).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tts.errors import UserError
from tts.runs import RunFolder, read_config
from tts.scorer import Aggregation, aggregate
from tts.selection import Groups, verdict_passed, verdict_score
from tts.types import Verdict

GROUPS_FILE = "groups.json"
# How a process scorer's step scores are aggregated in a study (tts.scorer.aggregate).
AGGREGATIONS: tuple[Aggregation, ...] = ("last", "min", "prod", "mean")


def dense_rank(score: np.ndarray, mean_logprob: np.ndarray) -> np.ndarray:
    """Best-of-n key: dense rank of (score, mean log-prob), NaN lowest, so an argmax breaks ties as best_of_n."""
    keys = np.stack([np.nan_to_num(mean_logprob, nan=-np.inf), np.nan_to_num(score, nan=-np.inf)])
    order = np.lexsort(keys)  # last key most significant: score, then mean log-prob
    sorted_keys = keys[:, order]
    step = np.r_[0, np.any(sorted_keys[:, 1:] != sorted_keys[:, :-1], axis=0).cumsum()]
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = step
    return rank


@dataclass
class ProblemPool:
    """One problem's samples as arrays, grouped once."""

    problem_id: str
    groups: Groups
    correct: np.ndarray          # bool per sample (oracle)
    mean_logprob: np.ndarray     # float, NaN where missing
    text_id: np.ndarray          # int: identical completion texts share an id (RPC's distinct paths)
    tokens: np.ndarray           # completion tokens per sample
    score: np.ndarray | None     # mean score of all scorers' verdicts (NaN where none); None: no sample has one
    passed: np.ndarray | None    # bool: every pass flag passed; None: no sample has a flag
    # Per scorer (the verdicts' `verifier`): its score, NaN where a sample has no verdict of it
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    # Per scorer: its pass flag as 1.0/0.0, NaN where missing or None (a scorer without a threshold)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    # Process scorers only: aggregation ("last", "min", "prod", "mean") -> aggregated step scores, NaN where none
    steps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
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
        self.rank = dense_rank(self.score if self.score is not None else np.full(self.n, np.nan), self.mean_logprob)
        self._ranks: dict[str, np.ndarray] = {}

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def has_p(self) -> np.ndarray:
        return np.isfinite(self.mean_logprob)

    def scorer_score(self, scorer: str | None, aggregation: str | None = None) -> np.ndarray | None:
        """One scorer's scores (an aggregation of its step scores if given); None: absent from this pool.

        scorer None: the combined score (mean of every verdict), as the scorer-agnostic selectors use.
        """
        if scorer is None:
            return self.score
        if aggregation is None:
            return self.scores.get(scorer)
        return self.steps.get(scorer, {}).get(aggregation)

    def scorer_rank(self, scorer: str | None) -> np.ndarray:
        """Best-of-n key of one scorer (`dense_rank` of its score and the mean log-prob), cached."""
        if scorer is None:
            return self.rank
        if scorer not in self._ranks:
            score = self.scores.get(scorer)
            self._ranks[scorer] = dense_rank(np.full(self.n, np.nan) if score is None else score, self.mean_logprob)
        return self._ranks[scorer]

    def subset(self, row: Sequence[int] | np.ndarray) -> ProblemPool:
        """The pool of the samples `row` only (answers regrouped from the ids, no equivalence call)."""
        row = np.asarray(row, dtype=np.int64)
        return ProblemPool(
            problem_id=self.problem_id, groups=self.groups.subset(row), correct=self.correct[row],
            mean_logprob=self.mean_logprob[row], text_id=self.text_id[row], tokens=self.tokens[row],
            score=None if self.score is None else self.score[row],
            passed=None if self.passed is None else self.passed[row],
            scores={k: v[row] for k, v in self.scores.items()}, flags={k: v[row] for k, v in self.flags.items()},
            steps={k: {a: v[row] for a, v in aggs.items()} for k, aggs in self.steps.items()})


def scorer_names(pools: Sequence[ProblemPool]) -> list[str]:
    """Every scorer with a score in some pool, sorted."""
    return sorted({name for pool in pools for name, s in pool.scores.items() if np.isfinite(s).any()})


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
    config = read_config(run.config_path) if run.samples_path.exists() else None
    if config is None:
        raise UserError(f"{run.path} is not a run folder with samples (needs config.json and samples.jsonl)")
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
    pools: list[ProblemPool] = []
    verifiers: set[str] = set()
    for pid, rows in by_problem.items():
        answers = [r.get("answer") for r in rows]
        key = _answers_key(task_key, answers)
        if key in cache and len(cache[key]) == len(rows):
            groups = Groups(np.asarray(cache[key], dtype=np.int64))
        else:
            started = time.perf_counter()
            groups = Groups.of_answers(answers, eq)
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


def _per_scorer(verdicts: list[list[Verdict]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                         dict[str, dict[str, np.ndarray]]]:
    """Scores, flags and step-score aggregations per scorer (a sample's first verdict of each scorer)."""
    n = len(verdicts)
    names = sorted({v.verifier for vs in verdicts for v in vs})
    scores = {name: np.full(n, np.nan) for name in names}
    flags = {name: np.full(n, np.nan) for name in names}
    steps: dict[str, dict[str, np.ndarray]] = {}
    for i, vs in enumerate(verdicts):
        seen: set[str] = set()
        for v in vs:
            if v.verifier in seen:
                continue
            seen.add(v.verifier)
            scores[v.verifier][i] = v.score
            if v.passed is not None:
                flags[v.verifier][i] = float(v.passed)
            if v.step_scores is not None:
                aggs = steps.setdefault(v.verifier, {a: np.full(n, np.nan) for a in AGGREGATIONS})
                for a in AGGREGATIONS:
                    aggs[a][i] = aggregate(v.step_scores, a)
    return scores, flags, steps


def _pool(pid: str, rows: list[dict[str, Any]], verdicts: list[list[Verdict]], groups: Groups) -> ProblemPool:
    texts: dict[str, int] = {}
    scores = [verdict_score(v) for v in verdicts]
    flags = [verdict_passed(v) for v in verdicts]
    per_scorer, per_flags, steps = _per_scorer(verdicts)
    return ProblemPool(
        problem_id=pid,
        groups=groups,
        correct=np.array([bool(r.get("correct")) for r in rows]),
        mean_logprob=np.array([np.nan if r.get("mean_logprob") is None else float(r["mean_logprob"]) for r in rows]),
        text_id=np.array([texts.setdefault(r.get("text", ""), len(texts)) for r in rows], dtype=np.int64),
        tokens=np.array([int(r.get("completion_tokens") or 0) for r in rows]),
        score=np.array([np.nan if s is None else s for s in scores]) if any(s is not None for s in scores) else None,
        passed=np.array([f is True for f in flags]) if any(f is not None for f in flags) else None,
        scores=per_scorer, flags=per_flags, steps=steps,
    )

