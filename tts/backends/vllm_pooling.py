"""A scoring engine in-process: one vLLM engine for a reward model, one thread, fed by every scorer coroutine.

The same engine thread as the generation backend (`tts.backends.engine_thread`): coroutines put requests
on a queue, and the thread adds every queued request before each `step()`, so the requests of all
problems in flight share the engine's batches. It takes raw vLLM
parameters: `PoolingParams` for reward models run by vLLM's pooling runner (`runner="pooling"`: the
reward, classify and token-classify APIs) and `SamplingParams` for reward models that are causal LMs read
through their next-token log-probabilities (`runner="generate"`). It returns vLLM's own outputs; the
scorer reads them (`scorers/reward_model.py`).

Engines are shared: `scoring_engine(model, runner, ...)` returns the one engine of that model in this
process, so two scorers (or two runs in one process) on the same reward model hold one copy of it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

from tts.backends.engine_thread import EngineThread, engine_arguments, has_cuda
from tts.errors import BackendError, UserError

Runner = Literal["pooling", "generate"]


class ScoringEngine:
    """One vLLM engine (pooling or generate runner) behind a queue; `run()` sends a batch, returns outputs."""

    def __init__(
        self,
        model: str,
        *,
        runner: Runner,
        dtype: str | None = None,
        max_model_len: int = 4096,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        kv_cache_gb: int = 1,
        max_num_seqs: int | None = None,
        gpu_memory_utilization: float = 0.3,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        from tts.models import count_parameters

        self.model = model
        self.runner = runner
        self.parameter_count = count_parameters(model)
        self.on_gpu = has_cuda()
        self.max_model_len = max_model_len
        self.engine_kwargs = engine_arguments(
            model, on_gpu=self.on_gpu, dtype=dtype, max_model_len=max_model_len, seed=seed,
            enable_prefix_caching=enable_prefix_caching, kv_cache_gb=kv_cache_gb, max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization, extra=engine_kwargs, runner=runner)
        self.batches = 0  # run() calls: one per scored batch
        self.requests = 0
        self._thread = EngineThread(self.engine_kwargs, name=f"tts-vllm-{runner}")
        if self._thread.error is not None:
            error = self._thread.error
            raise BackendError(f"vLLM {runner} engine failed to start for {model}: {error}") from error
        tasks = getattr(self._thread.engine, "get_supported_tasks", None)
        self.supported_tasks: tuple[str, ...] = tuple(tasks()) if tasks is not None else ()
        self.startup_seconds = self._thread.startup_seconds

    async def run(self, requests: list[tuple[list[int], Any]]) -> list[Any]:
        """One batch: (prompt token ids, vLLM params) each; vLLM's finished outputs, in order.

        Every request is queued before any is awaited, so the batch (and those of other coroutines
        queued meanwhile) reaches the engine together."""
        self._thread.check_running("vLLM scoring engine")
        if not requests:
            return []
        for ids, _ in requests:
            if len(ids) + 1 > self.max_model_len:
                raise UserError(f"reward-model prompt of {len(ids)} tokens does not fit max_model_len="
                                f"{self.max_model_len}")
        futures = [self._thread.submit(ids, params) for ids, params in requests]
        self.batches += 1
        self.requests += len(requests)
        return list(await asyncio.gather(*futures))

    @property
    def _closed(self) -> bool:
        return self._thread.closed

    @property
    def _error(self) -> BaseException | None:
        return self._thread.error

    @property
    def hf_config(self) -> Any:
        return self._thread.engine.vllm_config.model_config.hf_config

    def close(self) -> None:
        self._thread.close()


_ENGINES: dict[tuple[str, str], ScoringEngine] = {}
_LOCK = threading.Lock()


def scoring_engine(model: str, runner: Runner, **kwargs: Any) -> ScoringEngine:
    """The process's one engine for `model` under `runner`, started on first use (settings of the first call)."""
    key = (model, runner)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None or engine._closed or engine._error is not None:
            engine = _ENGINES[key] = ScoringEngine(model, runner=runner, **kwargs)
        return engine


def close_scoring_engines() -> None:
    """Stop every scoring engine of this process (tests; a long-lived process switching models)."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.close()
