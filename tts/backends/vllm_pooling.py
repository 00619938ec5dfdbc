"""A scoring engine in-process: one vLLM engine for a reward model, one thread, fed by every scorer coroutine.

The same design as the generation backend (`tts.backends.vllm`): a synchronous `LLMEngine` driven by one
thread; coroutines put requests on a queue, and the thread adds every queued request before each
`step()`, so the requests of all problems in flight share the engine's batches. It takes raw vLLM
parameters: `PoolingParams` for reward models run by vLLM's pooling runner (`runner="pooling"`: the
reward, classify and token-classify APIs) and `SamplingParams` for reward models that are causal LMs read
through their next-token log-probabilities (`runner="generate"`). It returns vLLM's own outputs; the
scorer reads them (`scorers/reward_model.py`).

Engines are shared: `scoring_engine(model, runner, ...)` returns the one engine of that model in this
process, so two scorers (or two runs in one process) on the same reward model hold one copy of it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from tts.backends.vllm import _reject, _resolve, configure_cpu_environment, has_cuda
from tts.errors import BackendError, UserError

Runner = Literal["pooling", "generate"]


@dataclass
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


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
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if not self.on_gpu:
            configure_cpu_environment(kv_cache_gb)
        self.max_model_len = max_model_len
        self.engine_kwargs: dict[str, Any] = dict(
            model=model,
            runner=runner,
            dtype=dtype or ("auto" if self.on_gpu else "float32"),
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=not self.on_gpu,
            disable_log_stats=True,
        )
        if max_num_seqs:
            self.engine_kwargs["max_num_seqs"] = max_num_seqs
        if self.on_gpu:
            self.engine_kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.engine_kwargs.update(engine_kwargs or {})

        self.batches = 0  # run() calls: one per scored batch
        self.requests = 0
        self.supported_tasks: tuple[str, ...] = ()
        self._queue: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._ids = itertools.count()
        start = time.perf_counter()
        self._thread = threading.Thread(target=self._run_engine, name=f"tts-vllm-{runner}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise BackendError(f"vLLM {runner} engine failed to start for {model}: {self._error}") from self._error
        self.startup_seconds = time.perf_counter() - start

    # ---- engine thread -------------------------------------------------------------------
    def _run_engine(self) -> None:
        try:
            from vllm import EngineArgs, LLMEngine

            self._engine = LLMEngine.from_engine_args(EngineArgs(**self.engine_kwargs))
            tasks = getattr(self._engine, "get_supported_tasks", None)
            self.supported_tasks = tuple(tasks()) if tasks is not None else ()
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()

        engine = self._engine
        waiting: dict[str, _Add] = {}
        while True:
            block = not engine.has_unfinished_requests()
            items = []
            try:
                items.append(self._queue.get(block=block))
                while True:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for item in items:
                if item is None:
                    self._fail_all(waiting, BackendError("vLLM scoring engine closed"))
                    return
                if isinstance(item, str):  # abort a cancelled request
                    if waiting.pop(item, None) is not None:
                        engine.abort_request([item])
                    continue
                try:
                    (engine_input,) = engine.renderer.render_cmpl([{"prompt_token_ids": item.prompt_ids}])
                    engine.add_request(item.request_id, engine_input, item.params)
                except Exception as exc:  # a request the engine refuses fails alone
                    item.loop.call_soon_threadsafe(_reject, item.future, BackendError(str(exc)))
                    continue
                waiting[item.request_id] = item
            if not engine.has_unfinished_requests():
                continue
            try:
                outputs = engine.step()
            except BaseException as exc:  # noqa: BLE001 - the engine is dead; tell every waiter
                self._error = exc
                self._fail_all(waiting, BackendError(f"vLLM scoring engine died: {exc!r}"))
                return
            for out in outputs:
                if not out.finished:
                    continue
                done = waiting.pop(out.request_id, None)
                if done is not None:
                    done.loop.call_soon_threadsafe(_resolve, done.future, out)

    @staticmethod
    def _fail_all(waiting: dict[str, _Add], exc: BaseException) -> None:
        for item in waiting.values():
            item.loop.call_soon_threadsafe(_reject, item.future, exc)
        waiting.clear()

    # ---- caller side ---------------------------------------------------------------------
    async def run(self, requests: list[tuple[list[int], Any]]) -> list[Any]:
        """One batch: (prompt token ids, vLLM params) each; vLLM's finished outputs, in order.

        Every request is queued before any is awaited, so the batch (and those of other coroutines
        queued meanwhile) reaches the engine together."""
        if self._closed or self._error is not None:
            raise BackendError(f"vLLM scoring engine is not running ({self._error or 'closed'})")
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        futures = []
        for ids, params in requests:
            if len(ids) + 1 > self.max_model_len:
                raise UserError(f"reward-model prompt of {len(ids)} tokens does not fit max_model_len="
                                f"{self.max_model_len}")
            rid = str(next(self._ids))
            future = loop.create_future()
            future.add_done_callback(functools.partial(self._free_if_cancelled, rid))
            self._queue.put(_Add(rid, list(ids), params, future, loop))
            futures.append(future)
        self.batches += 1
        self.requests += len(requests)
        return list(await asyncio.gather(*futures))

    def _free_if_cancelled(self, rid: str, future: asyncio.Future) -> None:
        if future.cancelled():
            self._queue.put(rid)

    @property
    def hf_config(self) -> Any:
        return self._engine.vllm_config.model_config.hf_config

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)


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
