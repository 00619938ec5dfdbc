"""Orchestration: a study of grouped pools (`study_pools`) or of a run folder (`study_run`)."""

from __future__ import annotations

import math
import multiprocessing
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tts.metrics import k_grid, pass_at_k
from tts.runs import RunFolder
from tts.selection import MIN_PATHS_TO_PRUNE
from tts.study.pool import ProblemPool, load_pools
from tts.study.schema import AdaptivePoint, Curve, Point, ProblemCoverage, ScalingStudy, StudySettings
from tts.study.selectors import SelectorContext, StudySelector, scorer_selectors, study_selectors
from tts.study.stats import bootstrap_interval, fit_power_law, verifier_study
from tts.study.subsets import Subsets

if TYPE_CHECKING:  # adaptive_study imports this module; it is imported where used
    from tts.study.adaptive_study import AdaptiveSettings, TraceLoader

DEFAULT_DRAWS = 200
# RPC: about this many Weibull fits per study at most (a few ms each), never fewer than MIN_RPC_FITS
# per problem and k (see auto_rpc_fits).
RPC_FIT_BUDGET = 10_000
MIN_RPC_FITS = 2
DEFAULT_BOOTSTRAP = 1000


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


def _evaluate(pools: list[ProblemPool], ks: list[int], chosen: list[StudySelector],
              settings: StudySettings) -> _Evaluation:
    acc = {s.name: np.zeros((len(pools), len(ks))) for s in chosen}
    exact = {s.name: True for s in chosen}
    counters: dict[str, float] = defaultdict(float)
    for i, pool in enumerate(pools):
        rng = _problem_rng(settings.seed, pool.problem_id)
        ctx = SelectorContext(Subsets(pool.n, settings.draws, rng), settings, rng)
        for s in chosen:
            started = time.perf_counter()
            for j, k in enumerate(ks):
                acc[s.name][i, j], is_exact = s.accuracy(pool, k, ctx)
                exact[s.name] &= is_exact
            counters[f"{s.name}_seconds"] += time.perf_counter() - started
        for key, value in ctx.counters.items():
            counters[key] += value
    return _Evaluation(acc, exact, dict(counters))


def _evaluate_in_workers(pools: list[ProblemPool], ks: list[int], chosen: list[StudySelector],
                         settings: StudySettings, workers: int) -> _Evaluation:
    """Problems split across worker processes (interleaved chunks, so slow problems spread out)."""
    if workers <= 1 or len(pools) < 2 * workers:
        return _evaluate(pools, ks, chosen, settings)
    chunks = [list(range(w, len(pools), workers)) for w in range(workers)]
    context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool_exec:
        parts = list(pool_exec.map(_evaluate, [[pools[i] for i in c] for c in chunks],
                                   [ks] * workers, [chosen] * workers, [settings] * workers))
    names = [s.name for s in chosen]
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
                min_paths: int = MIN_PATHS_TO_PRUNE, workers: int = 1, adaptive: AdaptiveSettings | None = None,
                traces: TraceLoader | None = None) -> ScalingStudy:
    """The study of already grouped pools (see tts.study's docstring for what is exact), every
    registered study selector whose data the pools carry (`tts.study.selectors.study_selectors`), then
    best-of-n and the weighted vote on each scorer's own score (`scorer_selectors`), and each scorer's
    quality in `verifier.scorers`.

    Bad arguments are ValueErrors (the CLI validates its flags before calling).

    rpc_fits: most Weibull fits per problem and k (None: `auto_rpc_fits`). workers: processes for the
    selectors; results do not depend on it. One is the default: 1319 x 64 takes about 17 s on one
    core, and on 2 shared cores two workers were slower (process start-up, contention) than one.

    adaptive: replay the adaptive methods with these settings (`tts.study.adaptive_study`; None: not at
    all); traces: reads the samples' token confidences, called only if a DeepConf replay runs.
    """
    if not pools:
        raise ValueError("no problems to study")
    if draws < 1 or (rpc_fits is not None and rpc_fits < 1) or (k_max is not None and k_max < 1) or workers < 1:
        raise ValueError("draws, rpc_fits, k_max and workers must be at least 1")
    if seed < 0 or bootstrap < 0:
        raise ValueError("seed and bootstrap must not be negative")
    n_min = min(pool.n for pool in pools)
    ks = k_grid(min(n_min, k_max) if k_max else n_min)
    if rpc_fits is None:
        rpc_fits = auto_rpc_fits(pools, ks, draws, min_paths)
    settings = StudySettings(draws=draws, rpc_fits=rpc_fits, seed=seed, bootstrap=bootstrap, k_max=k_max,
                             min_paths=min_paths)
    tokens = float(np.concatenate([pool.tokens for pool in pools]).mean())
    chosen = [s for s in [*study_selectors(), *scorer_selectors(pools)] if s.available(pools)]
    started = time.perf_counter()
    evaluation = _evaluate_in_workers(pools, ks, chosen, settings, workers)
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

    coverage = curve("coverage", "coverage (pass@k)", cover, True)
    curves = [curve(s.name, s.label, evaluation.accuracy[s.name], evaluation.exact[s.name], s.note(timings, settings))
              for s in chosen]
    adaptive_points: list[AdaptivePoint] = []
    adaptive_skipped: list[str] = []
    if adaptive is not None:
        from tts.study.adaptive_study import adaptive_study

        started = time.perf_counter()
        adaptive_points, adaptive_skipped = adaptive_study(
            pools, ks, curves, evaluation.accuracy, picks, draws=draws, seed=seed, settings=adaptive,
            traces=traces, timings=timings)
        timings["adaptive_seconds"] = time.perf_counter() - started
    return ScalingStudy(
        run=run, label=label, task=task, model=model, strategy=strategy,
        problems=len(pools), samples=int(sum(pool.n for pool in pools)),
        n_min=n_min, n_max=max(pool.n for pool in pools), ks=ks, mean_tokens_per_sample=tokens,
        coverage=coverage, selectors=curves,
        power_law=fit_power_law(ks, [pt.value for pt in coverage.points]),
        verifier=verifier_study(pools, list(verifiers), ks, tokens),
        per_problem=[ProblemCoverage(problem_id=pool.problem_id, n=pool.n, correct=int(pool.correct.sum()),
                                     pass_at_k=cover[i].tolist()) for i, pool in enumerate(pools)],
        settings=settings, timings=timings, adaptive=adaptive_points, adaptive_skipped=adaptive_skipped,
    )


def _model_name(config: dict[str, Any]) -> str | None:
    model = config.get("model") or (config.get("backend_info") or {}).get("model")
    return str(model) if model else None


def study_run(run_dir: str | Path, *, draws: int = DEFAULT_DRAWS, rpc_fits: int | None = None, seed: int = 0,
              k_max: int | None = None, bootstrap: int = DEFAULT_BOOTSTRAP, workers: int = 1,
              equivalent: Callable[[str, str], bool] | None = None, label: str | None = None,
              adaptive: AdaptiveSettings | None = None) -> ScalingStudy:
    """The scaling study of one run folder (answers grouped with the task's equivalence unless given);
    with `adaptive`, the adaptive replays too (token traces read from the folder only for DeepConf)."""
    run = RunFolder(run_dir)
    started = time.perf_counter()
    loaded = load_pools(run, equivalent)
    load_seconds = time.perf_counter() - started
    study = study_pools(loaded.pools, run=str(run.path), label=label or run.path.name,
                        task=str(loaded.config.get("task")), model=_model_name(loaded.config),
                        strategy=loaded.config.get("strategy"), verifiers=loaded.verifiers,
                        draws=draws, rpc_fits=rpc_fits, seed=seed, k_max=k_max, bootstrap=bootstrap,
                        workers=workers, adaptive=adaptive, traces=lambda: _traces(run))
    study.timings.update(loaded.timings)
    study.timings["load_seconds"] = load_seconds
    study.timings["total_seconds"] = time.perf_counter() - started
    return study


def _traces(run: RunFolder) -> dict[str, list[tuple[int, np.ndarray] | None]]:
    from tts.study.adaptive_study import load_traces

    return load_traces(run)
