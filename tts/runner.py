"""Evaluate a strategy on a task: many problems at once, graded by the oracle, appended to a run folder.

Problems run as concurrent coroutines (up to `concurrency`) so the backend sees large batches; each
finished problem is graded (oracle on every candidate, in a worker thread) and written immediately,
so an interrupted run loses only the problems in flight and resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from typing import Any

from tqdm.auto import tqdm

from tts.backends.base import AFFINITY, Backend
from tts.errors import BackendError, UserError
from tts.metrics import coverage, k_grid
from tts.runs import SERVED_KEY, RunFolder
from tts.scorer import Scorer
from tts.strategy import Strategy, StrategyContext
from tts.task import Task
from tts.types import Result, SamplingConfig, TaskItem, Usage, Verdict

log = logging.getLogger(__name__)


def problem_rng(seed: int, problem_id: str) -> random.Random:
    """A per-problem RNG that does not depend on scheduling order (so resumed runs match fresh ones)."""
    return random.Random(f"{seed}:{problem_id}")


def grade(task: Task, item: TaskItem, result: Result) -> tuple[list[Verdict], Verdict | None]:
    """Oracle verdicts for every candidate, and for the chosen one. Runs after the strategy has answered."""
    oracle = task.oracle(item.problem, item.reference)
    verdicts = [oracle.verify(item.problem, c) for c in result.candidates]
    chosen = verdicts[result.chosen] if result.chosen is not None else None
    return verdicts, chosen


FLOPS_FIELDS = ("generator_flops", "generator_flops_no_cache", "scorer_flops", "scorer_flops_no_cache")


def summarise(rows: list[dict[str, Any]], elapsed: float | None = None) -> dict[str, Any]:
    """metrics.json: accuracy, coverage@k (unbiased), usage totals."""
    usage = Usage()
    for row in rows:
        # rows written before FLOPs were counted: their FLOPs are unknown, not zero
        counted = {k: None for k in FLOPS_FIELDS if k not in row["usage"]}
        usage = usage + Usage(**{**row["usage"], **counted})
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


class ProblemsFailed(BackendError):
    """Some problems raised: they stay pending (nothing of theirs was written) and a rerun retries them."""


# A run stops early when this many problems in a row fail (a dead server fails every problem alike).
MAX_FAILURES_IN_A_ROW = 8


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    scorers: list[Scorer] | None = None,
) -> dict[str, Any]:
    """Generate, grade and append every pending problem; metrics.json of what is finished.

    `scorers` score candidates for the strategy (default: the task's `default_scorers()`).

    The run folder is locked for the whole call. A problem that raises is logged and stays pending
    (nothing of it is written); the others go on, unless MAX_FAILURES_IN_A_ROW fail in a row. At the
    end, failures raise one error that names them (`UserError` if every one was the user's to fix,
    `ProblemsFailed` otherwise) after metrics.json was written for the finished problems.
    """
    held = run.locked
    run.acquire()  # refuse a second writer before contacting the backend
    try:
        served = await backend.served_identity()
        return await _evaluate(task, items, strategy, backend, run, {**config, SERVED_KEY: served}, sampling,
                               seed, concurrency, progress, scorers)
    finally:
        if not held:
            run.release()


async def _evaluate(task: Task, items: list[TaskItem], strategy: Strategy, backend: Backend, run: RunFolder,
                    config: dict[str, Any], sampling: SamplingConfig, seed: int, concurrency: int,
                    progress: bool, scorers: list[Scorer] | None) -> dict[str, Any]:
    finished = run.open(config)
    todo = [it for it in items if it.problem.id not in finished]
    scorers = task.default_scorers() if scorers is None else scorers
    limit = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    bar = tqdm(total=len(items), initial=len(items) - len(todo), disable=not progress, unit="problem",
               desc=f"{task.name}/{strategy.name}", dynamic_ncols=True)
    ids = {it.problem.id for it in items}
    done = correct = tokens = 0
    failures: list[tuple[str, Exception]] = []
    in_a_row = 0
    engine_stats = backend.stats  # None for a backend without engine counters (Backend.stats)
    stats_before = copy.copy(engine_stats)  # a snapshot, so concurrent evaluations do not reset it

    class TooManyFailures(Exception):
        pass

    async def one(item: TaskItem) -> None:
        nonlocal done, correct, tokens, in_a_row
        async with limit:
            if in_a_row >= MAX_FAILURES_IN_A_ROW:  # the run is stopping: start nothing new
                return
            try:
                AFFINITY.set(item.problem.id)  # this task's own context: its requests go to one server
                ctx = StrategyContext(backend=backend, answers=task, sampling=sampling, scorers=scorers,
                                      rng=problem_rng(seed, item.problem.id))
                result = await strategy.run(item.problem, ctx)
                oracle, chosen = await asyncio.to_thread(grade, task, item, result)
            except Exception as exc:  # noqa: BLE001 - this problem stays pending; the others go on
                failures.append((item.problem.id, exc))
                in_a_row += 1
                log.warning("problem %s failed and stays pending: %s", item.problem.id, _one_line(exc))
                if in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise TooManyFailures from exc
                return
        in_a_row = 0
        run.append(result, oracle, chosen)  # a write that fails stops the run (the folder repairs on reopen)
        done += 1
        correct += bool(chosen and chosen.passed)
        tokens += result.usage.completion_tokens
        elapsed = time.perf_counter() - started
        bar.set_postfix(acc=f"{correct / done:.3f}",
                        tok_s=f"{tokens / elapsed:.1f}", refresh=False)
        bar.update(1)

    stopped = False
    try:
        async with asyncio.TaskGroup() as group:  # a failure cancels the rest; finished ones are on disk
            for it in todo:
                group.create_task(one(it))
    except BaseExceptionGroup as eg:
        first = eg.exceptions[0]
        if not isinstance(first, TooManyFailures):
            raise first from None
        stopped = True
    finally:
        bar.close()
    metrics = run_metrics(run, ids, time.perf_counter() - started)
    metrics["generated_this_session"] = done
    metrics["completion_tokens_per_second_this_session"] = (
        tokens / metrics["session_seconds"] if done and metrics["session_seconds"] else None
    )
    # how wide the engine's batches really were this session
    if engine_stats is not None and stats_before is not None and todo:
        metrics["engine_this_session"] = engine_stats.since(stats_before).summary()
    pending = len(ids) - metrics["problems"]
    if pending:
        metrics["pending"] = pending
    run.write_metrics(metrics)
    if failures:
        raise _failure_error(failures, pending, len(ids), stopped, run)
    return metrics


def _failure_error(failures: list[tuple[str, Exception]], pending: int, total: int, stopped: bool,
                   run: RunFolder) -> Exception:
    pid, first = failures[0]
    how = (f"stopped after {MAX_FAILURES_IN_A_ROW} problems in a row failed" if stopped
           else f"{len(failures)} problem(s) failed")
    message = (f"{how} (first: {pid}: {_one_line(first)}); {pending} of {total} problems stay pending, "
               f"finished ones are saved in {run.path}; rerun the same command to retry")
    if all(isinstance(exc, UserError) for _, exc in failures):
        error: Exception = UserError(message)
    else:
        error = ProblemsFailed(message)
    error.__cause__ = first
    return error
