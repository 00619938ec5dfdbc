"""The Python API for agents: `solve` / `asolve` one question.

Engines are expensive to start (about a minute on CPU), so backends are kept per (kind, model, options)
for the life of the process and reused by later calls (`tts.registry.build_backend`, re-exported here).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tts.backends.base import Backend
from tts.registry import build_backend, build_scorer, build_strategy, build_task
from tts.scorer import Scorer
from tts.strategy import Strategy, StrategyContext
from tts.task import Task
from tts.types import Result, SamplingConfig

# the builders live in tts.registry
__all__ = ["asolve", "solve", "build_backend", "build_scorer", "build_strategy", "build_task"]


async def asolve(
    question: str,
    strategy: str | Strategy = "self-consistency",
    n: int = 8,
    *,
    model: str | None = None,
    backend: str | Backend = "vllm",
    base_url: str | None = None,
    task: str | Task = "math500",
    task_options: dict[str, Any] | None = None,
    backend_options: dict[str, Any] | None = None,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_tokens: int = 512,
    seed: int = 0,
    scorers: list[str | Scorer] | None = None,
    **strategy_options: Any,
) -> Result:
    """Answer one question with a test-time-scaling strategy; the `Result` carries every candidate and the cost.

    The task decides the prompt and the answer format (default: MATH-style, answer in \\boxed{}).
    `task_options` / `backend_options` are the options a task or backend declares (see `tts list`).
    `scorers`: scorer names or objects (default: the task's default scorers, e.g. the judge for math).
    """
    task_obj = task if isinstance(task, Task) else build_task(task, **(task_options or {}))
    strat = strategy if isinstance(strategy, Strategy) else build_strategy(strategy, n=n, **strategy_options)
    chosen = task_obj.default_scorers() if scorers is None else [
        s if isinstance(s, Scorer) else build_scorer(s) for s in scorers]
    strat.check_scorers(chosen)
    be = build_backend(backend, model, base_url, **(backend_options or {}))
    problem = task_obj.make_problem(question)
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    ctx = StrategyContext(backend=be, answers=task_obj, sampling=sampling, scorers=chosen, rng=random.Random(seed))
    return await strat.run(problem, ctx)


def solve(question: str, strategy: str | Strategy = "self-consistency", n: int = 8, **kwargs: Any) -> Result:
    """Synchronous `asolve`. Inside a running event loop (Jupyter, async agents) use `await asolve(...)`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(asolve(question, strategy, n, **kwargs))
    raise RuntimeError("solve() was called inside a running event loop; use `await tts.asolve(...)` instead")
