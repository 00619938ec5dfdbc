"""One synchronous vLLM engine driven by one thread, fed by any number of coroutines.

Shared by the generation backend (`tts.backends.vllm`) and the reward-model scoring engine
(`tts.backends.vllm_pooling`). Why a thread around `LLMEngine` rather than vLLM's `AsyncLLM`: in vLLM
0.32 `AsyncLLM` always runs the engine core in a second process, which on a 2-core CPU spins one core
while the model gets the other and halves throughput (docs/cpu-engine.md). Here coroutines put
requests on a queue; before each `step()` the thread adds every queued request, so the requests of
all problems in flight share the engine's batches (continuous batching). A cancelled caller frees
its engine slots; a request the engine refuses fails alone; an engine that dies fails every waiter.

A request submitted with a `Stream` (vLLM's DELTA outputs) is fed every step's output on this thread;
when the stream says stop, the request is aborted in the engine and its caller gets what was generated.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tts.backends.base import EngineStats
from tts.errors import BackendError


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing or broken
        return False


def configure_cpu_environment(kv_cache_gb: int) -> None:
    """Engine settings measured to work on CPU (docs/cpu-engine.md); explicit user settings win."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def engine_arguments(model: str, *, on_gpu: bool, dtype: str | None, max_model_len: int, seed: int,
                     enable_prefix_caching: bool, kv_cache_gb: int, max_num_seqs: int | None,
                     gpu_memory_utilization: float, extra: dict[str, Any] | None = None,
                     **more: Any) -> dict[str, Any]:
    """`vllm.EngineArgs` keywords with the toolkit's defaults: float32 and eager mode on CPU (this CPU has
    no bf16 units; CUDA graphs do not exist there), the model's own dtype on GPU. Sets the CPU
    environment as a side effect. `more` (e.g. runner="pooling") and then `extra` are applied last."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep progress bars readable; env overrides
    if not on_gpu:
        configure_cpu_environment(kv_cache_gb)
    kwargs: dict[str, Any] = dict(model=model, dtype=dtype or ("auto" if on_gpu else "float32"),
                                  max_model_len=max_model_len, seed=seed,
                                  enable_prefix_caching=enable_prefix_caching, enforce_eager=not on_gpu,
                                  disable_log_stats=True, **more)
    if max_num_seqs:
        kwargs["max_num_seqs"] = max_num_seqs
    if on_gpu:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    kwargs.update(extra or {})
    return kwargs


class Stream(Protocol):
    """Consumes one request's outputs step by step (submitted with output_kind DELTA), on the engine thread."""

    def feed(self, output: Any) -> bool:
        """Take one step's output; True: abort the request now (ignored once the output is finished)."""

    def result(self) -> Any:
        """What the caller gets, once the request finished or was stopped."""


@dataclass
class _Pending:
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    convert: Callable[[Any], Any]  # the engine's finished output -> what the caller gets (runs on the thread)
    stream: Stream | None = None  # a watched request: fed every step's output instead


@dataclass
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: Any
    pending: _Pending


class EngineThread:
    """A started `LLMEngine` (`engine`, `tokenizer`) and the thread that steps it; `submit` queues a request."""

    def __init__(self, engine_kwargs: dict[str, Any], name: str):
        self.engine_kwargs = engine_kwargs
        self.stats = EngineStats()
        self.engine: Any = None
        self.tokenizer: Any = None
        self.error: BaseException | None = None
        self.closed = False
        self._queue: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._ids = itertools.count()
        start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        self.startup_seconds = time.perf_counter() - start

    def check_running(self, what: str) -> None:
        if self.closed or self.error is not None:
            raise BackendError(f"{what} is not running ({self.error or 'closed'})")

    def submit(self, prompt_ids: list[int], params: Any, convert: Callable[[Any], Any] = lambda out: out,
               stream: Stream | None = None) -> asyncio.Future:
        """Queue one request; the future gets `convert(output)` once the engine finishes it, or, with a
        `stream` (params with output_kind DELTA), `stream.result()` once it finishes or the stream stops it."""
        loop = asyncio.get_running_loop()
        rid = str(next(self._ids))
        future = loop.create_future()
        future.add_done_callback(functools.partial(self._free_if_cancelled, rid))
        self._queue.put(_Add(rid, list(prompt_ids), params, _Pending(future, loop, convert, stream)))
        return future

    def _free_if_cancelled(self, rid: str, future: asyncio.Future) -> None:
        if future.cancelled():  # a timeout, Ctrl-C or a failed sibling task: free its engine slots
            self._queue.put(rid)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ---- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            from vllm import EngineArgs, LLMEngine

            self.engine = LLMEngine.from_engine_args(EngineArgs(**self.engine_kwargs))
            self.tokenizer = self.engine.get_tokenizer()
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self.error = exc
            self._ready.set()
            return
        self._ready.set()

        engine = self.engine
        # The in-process scheduler, when reachable, tells how many sequences each step really ran.
        core = getattr(getattr(engine, "engine_core", None), "engine_core", None)
        scheduler = getattr(core, "scheduler", None)
        waiting: dict[str, _Pending] = {}
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
                    _fail_all(waiting, BackendError("vLLM engine closed"))
                    return
                if isinstance(item, str):  # abort a cancelled request
                    if waiting.pop(item, None) is not None:
                        engine.abort_request([item])
                    continue
                # Outputs and aborts use our own (external) id; vLLM appends a random suffix internally.
                try:
                    (engine_input,) = engine.renderer.render_cmpl([{"prompt_token_ids": item.prompt_ids}])
                    engine.add_request(item.request_id, engine_input, item.params)
                except Exception as exc:  # a request the engine refuses fails alone
                    item.pending.loop.call_soon_threadsafe(_reject, item.pending.future, BackendError(str(exc)))
                    continue
                waiting[item.request_id] = item.pending
            if not engine.has_unfinished_requests():
                continue
            try:
                t = time.perf_counter()
                outputs = engine.step()
                batch = len(getattr(scheduler, "running", ())) if scheduler is not None else 0
                self.stats.record(time.perf_counter() - t, batch)
            except BaseException as exc:  # noqa: BLE001 - the engine is dead; tell every waiter
                self.error = exc
                _fail_all(waiting, BackendError(f"vLLM engine died: {exc!r}"))
                return
            for out in outputs:
                streamed = waiting.get(out.request_id)
                if streamed is not None and streamed.stream is not None:
                    _feed(engine, waiting, out, streamed.stream)
                    continue
                if not out.finished:
                    continue
                pending = waiting.pop(out.request_id, None)
                if pending is None:
                    continue
                try:
                    value = pending.convert(out)
                except Exception as exc:  # noqa: BLE001 - an output that cannot be read fails its request
                    pending.loop.call_soon_threadsafe(_reject, pending.future, BackendError(repr(exc)))
                    continue
                pending.loop.call_soon_threadsafe(_resolve, pending.future, value)


def _feed(engine: Any, waiting: dict[str, _Pending], out: Any, stream: Stream) -> None:
    """One step's output of a streamed request: resolve it when finished, abort it when the stream stops it.
    A stream that fails (a watcher's error, an unreadable output) fails its request, which is aborted."""
    rid = out.request_id
    try:
        stop = stream.feed(out)
        if not (out.finished or stop):
            return
        value = stream.result()
    except Exception as exc:  # noqa: BLE001 - fails this request alone
        pending = waiting.pop(rid)
        if not out.finished:
            engine.abort_request([rid])
        pending.loop.call_soon_threadsafe(_reject, pending.future, BackendError(repr(exc)))
        return
    pending = waiting.pop(rid)
    if not out.finished:
        engine.abort_request([rid])
    pending.loop.call_soon_threadsafe(_resolve, pending.future, value)


def _fail_all(waiting: dict[str, _Pending], exc: BaseException) -> None:
    for pending in waiting.values():
        pending.loop.call_soon_threadsafe(_reject, pending.future, exc)
    waiting.clear()


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
