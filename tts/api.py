"""The Python API for agents: `solve` / `asolve` one question, and the builders the CLI shares.

Engines are expensive to start (about a minute on CPU), so backends are kept per (kind, model, url)
for the life of the process and reused by later calls.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tts import registry
from tts.backends.base import Backend
from tts.errors import UserError
from tts.strategy import Strategy, StrategyContext
from tts.task import Task
from tts.types import Result, SamplingConfig

_BACKENDS: dict[tuple, Backend] = {}


def build_backend(backend: str | Backend = "vllm", model: str | None = None, base_url: str | None = None,
                  **options: Any) -> Backend:
    """A backend by name (cached per process), or the given instance unchanged."""
    if isinstance(backend, Backend):
        return backend
    key = (backend, model, base_url, tuple(sorted(options.items())))
    if key not in _BACKENDS:
        cls = registry.get("backends", backend)
        if backend == "openai":
            options = {**options, "base_url": base_url or "http://127.0.0.1:8000/v1"}
        elif base_url:
            raise UserError("--base-url is only for --backend openai")
        _BACKENDS[key] = cls(model, **options)
    return _BACKENDS[key]


def build_strategy(name: str, **options: Any) -> Strategy:
    cls = registry.get("strategies", name)
    try:
        return cls(**options)
    except ValueError as exc:  # pydantic validation: bad n, unknown option
        raise UserError(f"bad options for strategy {name!r}: {_first_error(exc)}") from None


def build_task(name: str, **options: Any) -> Task:
    cls = registry.get("tasks", name)
    return cls(**{k: v for k, v in options.items() if v is not None})


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return str(exc)


async def asolve(
    question: str,
    strategy: str | Strategy = "self-consistency",
    n: int = 8,
    *,
    model: str | None = None,
    backend: str | Backend = "vllm",
    base_url: str | None = None,
    task: str | Task = "math500",
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_tokens: int = 512,
    seed: int = 0,
    **strategy_options: Any,
) -> Result:
    """Answer one question with a test-time-scaling strategy; the `Result` carries every candidate and the cost.

    The task decides the prompt and the answer format (default: MATH-style, answer in \\boxed{}).
    """
    task_obj = task if isinstance(task, Task) else build_task(task)
    strat = strategy if isinstance(strategy, Strategy) else build_strategy(strategy, n=n, **strategy_options)
    be = build_backend(backend, model, base_url)
    problem = task_obj.make_problem(question)
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    ctx = StrategyContext(backend=be, answers=task_obj, sampling=sampling,
                          verifiers=task_obj.selection_verifiers(), rng=random.Random(seed))
    return await strat.run(problem, ctx)


def solve(question: str, strategy: str | Strategy = "self-consistency", n: int = 8, **kwargs: Any) -> Result:
    """Synchronous `asolve`. Inside a running event loop (Jupyter, async agents) use `await asolve(...)`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(asolve(question, strategy, n, **kwargs))
    raise RuntimeError("solve() was called inside a running event loop; use `await tts.asolve(...)` instead")
