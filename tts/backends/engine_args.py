"""Extra vLLM engine arguments (`tts eval --engine-arg KEY=VALUE`, the vllm backend's `engine_kwargs`).

Why checked here: vLLM's `EngineArgs` takes some 250 keywords, and a misspelt one would only fail when
the engine starts, a minute later (or, on a Ray cluster, on another machine). So every key is checked
against the `EngineArgs` dataclass first (imported only when engine arguments are given), with the
close matches named; keys the toolkit sets itself from its own flags are refused with the flag to use.

Which of them are part of a run's identity (config.json `backend_options`, the run folder's name): those
that can change what is computed (quantization, kv_cache_dtype, tokenizer, revision, ...). Those that
only say where and how it runs are not, so a run started on one GPU resumes on four: the parallel
layouts (tensor, pipeline, data, expert), the executor (`distributed_executor_backend`, e.g. ray) and
its placement and timeouts, memory and offloading, batching limits, CUDA graphs and logging. Parallel
layouts can change the order of floating-point sums, so samples are not bit-identical across layouts;
they are draws of the same model all the same, as samples from two batch sizes are.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any

# Keys the toolkit sets from its own flags and options: (where to set it instead).
RESERVED = {
    "model": "--model",
    "dtype": "--dtype",
    "max_model_len": "--max-model-len",
    "seed": "--seed",
    "enable_prefix_caching": "--backend-option enable_prefix_caching=true|false",
    "max_num_seqs": "--backend-option max_num_seqs=N",
    "gpu_memory_utilization": "--backend-option gpu_memory_utilization=F",
    "runner": "the backend (vllm generates; reward models run on the pooling runner)",
}

# Engine arguments that say where and how the engine runs, not what it computes (outside the run identity).
OUTSIDE_IDENTITY = frozenset({
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "data_parallel_size_local",
    "data_parallel_rank", "data_parallel_start_rank", "data_parallel_address", "data_parallel_rpc_port",
    "data_parallel_backend", "data_parallel_hybrid_lb", "data_parallel_external_lb",
    "data_parallel_multi_port_external_lb", "enable_expert_parallel", "distributed_executor_backend",
    "distributed_timeout_seconds", "cpu_distributed_timeout_seconds", "nnodes", "node_rank", "master_addr",
    "master_port", "max_parallel_loading_workers", "disable_custom_all_reduce", "ray_workers_use_nsight",
    "kv_cache_memory_bytes", "cpu_offload_gb", "num_gpu_blocks_override", "max_num_batched_tokens",
    "enforce_eager", "disable_log_stats",
})


@functools.cache
def engine_arg_names() -> frozenset[str]:
    """The keywords vLLM's EngineArgs takes (importing vLLM's argument module: seconds, once)."""
    from vllm.engine.arg_utils import EngineArgs

    return frozenset(f.name for f in dataclasses.fields(EngineArgs) if f.init)


def engine_args_problem(args: dict[str, Any]) -> str | None:
    """What is wrong with these extra engine arguments (the first problem), or None."""
    for key in args:
        if key in RESERVED:
            return f"{key} is set by the toolkit: use {RESERVED[key]}"
    if not args:
        return None
    try:
        names = engine_arg_names()
    except ImportError as exc:
        return f"cannot check vLLM engine arguments: vllm is not importable ({exc})"
    for key in args:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=3, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            return f"{key!r} is not an argument of vLLM's EngineArgs{hint}"
    return _data_parallel_problem(args)


def _data_parallel_problem(args: dict[str, Any]) -> str | None:
    """vLLM refuses data_parallel_size > 1 in one process (its LLM class says it may hang; the in-process
    engine here is the same case) unless each rank is launched apart (distributed_executor_backend
    external_launcher). Data parallelism is several servers instead."""
    size = args.get("data_parallel_size", 1)
    if args.get("distributed_executor_backend") == "external_launcher":
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"data_parallel_size must be a positive integer, got {size!r}"
    if size > 1:
        return ("data_parallel_size > 1 does not work in the in-process engine (vLLM: single-process data "
                "parallelism may hang); run one `vllm serve` per replica (or `vllm serve --data-parallel-size "
                f"{size}`) and use --backend openai --base-url URL per server (docs/distributed.md)")
    return None


def identity_engine_args(args: dict[str, Any]) -> dict[str, Any]:
    """The engine arguments that belong in a run's identity (those that can change what is computed)."""
    return {k: v for k, v in args.items() if k not in OUTSIDE_IDENTITY}
