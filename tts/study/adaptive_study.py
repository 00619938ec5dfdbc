"""`tts scale`'s adaptive section: each adaptive method replayed on random orders of every problem's pool,
set against majority vote and RPC at the same average spend (docs/adaptive-replay.md).

The orders are the study's own random permutations (`Subsets.perms`, seeded per problem), cut to the
budget (the study's largest k), so a replay with budget k < n draws from the same random k-subset as the
curves at k. Token traces (DeepConf) are read from the run folder only when a DeepConf replay runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts.errors import UserError
from tts.runs import RunFolder
from tts.study.adaptive_replay import AdaptiveConsistency, DeepConf, EarlyStop, Replay, ReplayPool, Trace
from tts.study.pool import ProblemPool, scorer_names
from tts.study.schema import AdaptivePoint, Curve
from tts.study.stats import bootstrap_interval
from tts.study.study import _problem_rng
from tts.study.subsets import Subsets
from tts.types import TokenTrace

TraceLoader = Callable[[], dict[str, list[Trace | None]]]
# Replays of one method per study: about this many orders in all (a replay costs up to about 1 ms with a
# budget of 64), never fewer than MIN_ORDERS per problem. 50 problems get 200 orders each; 1319 get 10,
# and there the spread over problems, not over orders, sets the interval.
ORDER_BUDGET = 10_000
MIN_ORDERS = 10


Probability = Annotated[float, Field(gt=0.0, le=1.0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Percent = Annotated[float, Field(ge=1.0, le=100.0)]


class AdaptiveSettings(BaseModel):
    """The knobs `tts scale` exposes; every other option is the strategy's default (its `-o` option)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ac_threshold: tuple[Probability, ...] = Field((0.95,), min_length=1,
                                                  description="Adaptive-Consistency's stopping probabilities")
    early_stop_tau: tuple[Share, ...] = Field((0.9,), min_length=1,
                                              description="early-stop's confidences (or vote shares) to stop at")
    deepconf_keep: tuple[Percent, ...] = Field((10.0,), min_length=1, description="DeepConf: percents of traces kept")


def orders_per_problem(problems: int, draws: int) -> int:
    """Random orders replayed per problem: `draws`, cut so a study runs about ORDER_BUDGET replays a method."""
    return int(min(draws, max(MIN_ORDERS, ORDER_BUDGET // max(problems, 1))))


def replays(settings: AdaptiveSettings, pools: Sequence[ProblemPool]) -> list[Replay]:
    """Every method to replay: Adaptive-Consistency, early-stop (both variants) per recorded scorer, DeepConf."""
    out: list[Replay] = [AdaptiveConsistency(threshold=t) for t in settings.ac_threshold]
    for scorer in scorer_names(pools):
        out += [EarlyStop(scorer=scorer, tau=tau) for tau in settings.early_stop_tau]
        out += [EarlyStop(scorer=scorer, tau=tau, final="weighted-vote") for tau in settings.early_stop_tau]
    out += [DeepConf(mode=mode, keep_percent=keep) for mode in ("offline", "online") for keep in settings.deepconf_keep]
    return out


def load_traces(run: RunFolder) -> dict[str, list[Trace | None]]:
    """Each finished problem's token confidences (with their top-k), in sample-index order as the pools."""
    finished = {r["problem_id"] for r in run.results()}
    rows: dict[str, list[tuple[int, Trace | None]]] = defaultdict(list)
    for row in run.samples():
        pid = row["problem_id"]
        if pid not in finished:
            continue
        trace: Trace | None = None
        if row.get("trace"):
            try:
                parsed = TokenTrace.model_validate(row["trace"])
                trace = (parsed.k, parsed.token_confidence())
            except (ValidationError, ValueError):
                raise UserError(f"{run.samples_path}: sample {row['index']} of {pid} has an unreadable token "
                                "trace") from None
        rows[pid].append((row["index"], trace))
    return {pid: [t for _, t in sorted(items, key=lambda item: item[0])] for pid, items in rows.items()}


# ------------------------------------------------------------------------------------------------ matching


def bracket(xs: Sequence[float], x: float) -> tuple[int, float] | None:
    """(j, w) with x = (1 - w) xs[j] + w xs[j+1] for increasing xs; None when x lies outside them."""
    tol = 1e-9 * max(abs(xs[-1]), 1.0)
    if x < xs[0] - tol or x > xs[-1] + tol:
        return None
    if len(xs) == 1:
        return 0, 0.0
    x = min(max(x, xs[0]), xs[-1])
    j = min(max(int(np.searchsorted(xs, x, side="right")) - 1, 0), len(xs) - 2)
    return j, float((x - xs[j]) / (xs[j + 1] - xs[j]))


def at_spend(curve: Curve | None, x: float, axis: str) -> float | None:
    """A curve's accuracy at spend x, linear between the grid points bracketing it (axis: tokens or samples)."""
    if curve is None:
        return None
    xs = [p.tokens if axis == "tokens" else float(p.k) for p in curve.points]
    found = bracket(xs, x)
    if found is None:
        return None
    j, w = found
    values = [p.value for p in curve.points]
    return values[j] if w == 0.0 else (1 - w) * values[j] + w * values[j + 1]


# ------------------------------------------------------------------------------------------------ the study


def replay_pools(replay: Replay, pools: Sequence[ReplayPool], orders: Sequence[np.ndarray]) -> np.ndarray:
    """(problems, 3) means over each problem's orders (rows of orders[i]) of samples, tokens and credit."""
    out = np.zeros((len(pools), 3))
    for i, (rp, rows) in enumerate(zip(pools, orders)):
        outcomes = [replay.run(rp, row) for row in rows]
        out[i] = [np.mean([o.samples for o in outcomes]), np.mean([o.tokens for o in outcomes]),
                  np.mean([o.credit for o in outcomes])]
    return out


def adaptive_study(pools: Sequence[ProblemPool], ks: Sequence[int], curves: Sequence[Curve],
                   per_problem: dict[str, np.ndarray], picks: np.ndarray, *, draws: int, seed: int,
                   settings: AdaptiveSettings, traces: TraceLoader | None = None,
                   timings: dict[str, float] | None = None) -> tuple[list[AdaptivePoint], list[str]]:
    """The adaptive points, and a line per method that could not be replayed (why).

    per_problem: (problems, ks) accuracies of the curves by name (majority's pairs the difference).
    picks: the study's bootstrap resamples of problems, so the intervals pair with the curves'.
    """
    budget = max(ks)
    count = orders_per_problem(len(pools), draws)
    orders = [Subsets(pool.n, draws, _problem_rng(seed, pool.problem_id)).perms[:count, :budget] for pool in pools]
    by_name = {c.name: c for c in curves}
    majority = by_name.get("majority")
    loaded: dict[str, list[Trace | None]] | None = None
    tried = False
    points: list[AdaptivePoint] = []
    skipped: list[str] = [] if scorer_names(pools) else [
        "early-stop: no scorer's score in the run to stop on (add one with `tts rescore`)"]
    for replay in replays(settings, pools):
        if replay.needs_traces and not tried:
            tried, loaded = True, (traces() if traces is not None else None)
        why = replay.missing(pools, loaded if replay.needs_traces else None, budget)
        if why is not None:
            skipped.append(why)
            continue
        started = time.perf_counter()
        rps = [ReplayPool(pool, loaded.get(pool.problem_id) if loaded and replay.needs_traces else None)
               for pool in pools]
        means = replay_pools(replay, rps, orders)
        if timings is not None:
            timings[f"adaptive:{replay.name}_seconds"] = time.perf_counter() - started
        points.append(_point(replay, means, budget, count, majority, by_name.get("rpc"),
                             per_problem.get("majority"), picks))
    return points, skipped


def _interval(values: np.ndarray, picks: np.ndarray) -> tuple[float | None, float | None]:
    lo, hi = bootstrap_interval(values[:, None], picks)
    return (None, None) if np.isnan(lo[0]) else (float(lo[0]), float(hi[0]))


def _point(replay: Replay, means: np.ndarray, budget: int, draws: int, majority: Curve | None,
           rpc: Curve | None, majority_values: np.ndarray | None, picks: np.ndarray) -> AdaptivePoint:
    samples, tokens, credit = means[:, 0], means[:, 1], means[:, 2]
    mean_samples, mean_tokens = float(samples.mean()), float(tokens.mean())
    lo, hi = _interval(credit, picks)
    reference = majority.at(budget) if majority is not None else None
    diff = diff_lo = diff_hi = None
    found = bracket([p.tokens for p in majority.points], mean_tokens) if majority is not None else None
    if found is not None and majority_values is not None:
        j, w = found
        matched = majority_values[:, j] if w == 0.0 else (1 - w) * majority_values[:, j] + w * majority_values[:, j + 1]
        diff = float((credit - matched).mean())
        diff_lo, diff_hi = _interval(credit - matched, picks)
    return AdaptivePoint(
        name=replay.name, method=replay.method, options=replay.options(), budget=budget, draws=draws,
        accuracy=float(credit.mean()), lo=lo, hi=hi, mean_samples=mean_samples, mean_tokens=mean_tokens,
        majority_at_tokens=at_spend(majority, mean_tokens, "tokens"),
        rpc_at_tokens=at_spend(rpc, mean_tokens, "tokens"),
        majority_at_samples=at_spend(majority, mean_samples, "samples"),
        rpc_at_samples=at_spend(rpc, mean_samples, "samples"),
        vs_majority=diff, vs_majority_lo=diff_lo, vs_majority_hi=diff_hi,
        reference_samples=budget, reference_tokens=reference.tokens if reference else None,
        reference_accuracy=reference.value if reference else None,
        saving=None if reference is None or reference.tokens <= 0 else 1.0 - mean_tokens / reference.tokens)
