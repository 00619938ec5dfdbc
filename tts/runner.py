"""Evaluate a strategy on a task: many problems at once, graded by the oracle, appended to a run folder.

Problems run as concurrent coroutines (up to `concurrency`) so the backend sees large batches; each
finished problem is graded (oracle on every candidate, in a worker thread) and written immediately,
so an interrupted run loses only the problems in flight and resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from typing import Any

from tqdm.auto import tqdm

from tts.backends.base import Backend
from tts.metrics import coverage, k_grid
from tts.runs import RunFolder
from tts.strategy import Strategy, StrategyContext
from tts.task import Task
from tts.types import Result, SamplingConfig, TaskItem, Usage, Verdict


def problem_rng(seed: int, problem_id: str) -> random.Random:
    """A per-problem RNG that does not depend on scheduling order (so resumed runs match fresh ones)."""
    return random.Random(f"{seed}:{problem_id}")


def grade(task: Task, item: TaskItem, result: Result) -> tuple[list[Verdict], Verdict | None]:
    """Oracle verdicts for every candidate, and for the chosen one. Runs after the strategy has answered."""
    oracle = task.oracle(item.problem, item.reference)
    verdicts = [oracle.verify(item.problem, c) for c in result.candidates]
    chosen = verdicts[result.chosen] if result.chosen is not None else None
    return verdicts, chosen


def summarise(rows: list[dict[str, Any]], elapsed: float | None = None) -> dict[str, Any]:
    """metrics.json: accuracy, coverage@k (unbiased), usage totals."""
    usage = Usage()
    for row in rows:
        usage = usage + Usage(**row["usage"])
    counts = [(r["n_samples"], r["n_correct_samples"]) for r in rows if r["n_samples"] > 0]
    n_min = min((n for n, _ in counts), default=0)
    metrics: dict[str, Any] = {
        "problems": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows) if rows else None,
        "coverage": {f"pass@{k}": v for k, v in coverage(counts, k_grid(n_min)).items()} if n_min else {},
        "usage": usage.model_dump(),
        "mean_completion_tokens_per_problem": usage.completion_tokens / len(rows) if rows else None,
    }
    if elapsed:
        metrics["session_seconds"] = elapsed
    return metrics


def run_metrics(run: RunFolder, ids: set[str], elapsed: float | None = None) -> dict[str, Any]:
    """metrics.json for these problems of a run folder (a run may hold more than this --limit asks for)."""
    return summarise([r for r in run.results() if r["problem_id"] in ids], elapsed)


async def evaluate(
    task: Task,
    items: list[TaskItem],
    strategy: Strategy,
    backend: Backend,
    run: RunFolder,
    config: dict[str, Any],
    sampling: SamplingConfig,
    seed: int = 0,
    concurrency: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    finished = run.open(config)
    todo = [it for it in items if it.problem.id not in finished]
    verifiers = task.selection_verifiers()
    limit = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    bar = tqdm(total=len(items), initial=len(items) - len(todo), disable=not progress, unit="problem",
               desc=f"{task.name}/{strategy.name}", dynamic_ncols=True)
    ids = {it.problem.id for it in items}
    done = correct = tokens = 0
    engine_stats = getattr(backend, "stats", None)  # a snapshot, so concurrent evaluations do not reset it
    stats_before = copy.copy(engine_stats)

    async def one(item: TaskItem) -> None:
        nonlocal done, correct, tokens
        async with limit:
            ctx = StrategyContext(backend=backend, answers=task, sampling=sampling, verifiers=verifiers,
                                  rng=problem_rng(seed, item.problem.id))
            result = await strategy.run(item.problem, ctx)
            oracle, chosen = await asyncio.to_thread(grade, task, item, result)
        run.append(result, oracle, chosen)
        done += 1
        correct += bool(chosen and chosen.passed)
        tokens += result.usage.completion_tokens
        elapsed = time.perf_counter() - started
        bar.set_postfix(acc=f"{correct / done:.3f}",
                        tok_s=f"{tokens / elapsed:.1f}", refresh=False)
        bar.update(1)

    try:
        async with asyncio.TaskGroup() as group:  # the first failure cancels the rest; finished ones are on disk
            for it in todo:
                group.create_task(one(it))
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None
    finally:
        bar.close()
    metrics = run_metrics(run, ids, time.perf_counter() - started)
    metrics["generated_this_session"] = len(todo)
    metrics["completion_tokens_per_second_this_session"] = (
        tokens / metrics["session_seconds"] if todo and metrics["session_seconds"] else None
    )
    if engine_stats is not None and todo:  # how wide the engine's batches really were this session
        metrics["engine_this_session"] = engine_stats.since(stats_before).summary()
    run.write_metrics(metrics)
    return metrics
