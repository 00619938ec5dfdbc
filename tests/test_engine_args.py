"""`--engine-arg KEY=VALUE` for the vllm backend: checked against vLLM's EngineArgs, passed through to the
engine's keywords, and split between the run identity and where the engine runs. No engine starts."""

from __future__ import annotations

import os

import pytest

from tts.backends.engine_args import OUTSIDE_IDENTITY, RESERVED, engine_arg_names, engine_args_problem
from tts.backends.engine_thread import engine_arguments
from tts.cli import _backend_identity, _backend_options, build_parser
from tts.errors import UserError


def options(*argv: str) -> dict:
    return _backend_options(build_parser().parse_args(["eval", "--task", "gsm8k", *argv]))


def test_engine_args_reach_the_engine_keywords_and_vllm_accepts_them(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # engine_arguments sets defaults in the environment
    given = options("--engine-arg", "tensor_parallel_size=2", "--engine-arg", "pipeline-parallel-size=2",
                    "--engine-arg", "distributed_executor_backend=ray", "--engine-arg", 'quantization="fp8"')
    extra = {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray",
             "quantization": "fp8"}  # JSON values (2, "fp8"), else strings (ray); dashes become underscores
    assert given == {"engine_kwargs": extra, "seed": 0}
    # a local model folder: EngineArgs resolves its model when built, and the hub is unreachable (offline)
    from tts.models import resolve_model

    model = resolve_model(None)
    kwargs = engine_arguments(model, on_gpu=True, dtype=None, max_model_len=2048, seed=0,
                              enable_prefix_caching=True, kv_cache_gb=2, max_num_seqs=None,
                              gpu_memory_utilization=0.85, extra=given["engine_kwargs"])
    assert {k: kwargs[k] for k in extra} == extra
    assert (kwargs["model"], kwargs["max_model_len"], kwargs["seed"]) == (model, 2048, 0)  # the toolkit's own
    from vllm.engine.arg_utils import EngineArgs

    built = EngineArgs(**kwargs)  # the dataclass only: no engine, no GPU
    assert (built.tensor_parallel_size, built.pipeline_parallel_size) == (2, 2)
    assert built.distributed_executor_backend == "ray" and built.quantization == "fp8"


@pytest.mark.parametrize("engine_kwargs, identity", [
    ({"tensor_parallel_size": 4}, {}),                               # a layout: resumes on other hardware
    ({"pipeline_parallel_size": 2, "distributed_executor_backend": "ray"}, {}),
    ({"max_num_batched_tokens": 8192, "enforce_eager": True}, {}),   # scheduling and CUDA graphs only
    ({"quantization": "fp8"}, {"engine_kwargs": {"quantization": "fp8"}}),  # changes the computation
    ({"tensor_parallel_size": 2, "kv_cache_dtype": "fp8"}, {"engine_kwargs": {"kv_cache_dtype": "fp8"}}),
])
def test_which_engine_args_are_part_of_the_run_identity(engine_kwargs, identity):
    assert _backend_identity("vllm", {"engine_kwargs": engine_kwargs}) == identity


def test_every_key_outside_the_identity_is_a_real_engine_argument():
    assert OUTSIDE_IDENTITY <= engine_arg_names()
    assert set(RESERVED) <= engine_arg_names()  # refused because the toolkit sets them, not because unknown


@pytest.mark.parametrize("args, fragment", [
    ({"tensor_paralel_size": 2}, "'tensor_paralel_size' is not an argument of vLLM's EngineArgs; close matches: "
                                 "tensor_parallel_size"),   # a typo: the close match named
    ({"no_such_thing_at_all": 1}, "'no_such_thing_at_all' is not an argument of vLLM's EngineArgs"),
    ({"model": "x"}, "model is set by the toolkit: use --model"),
    ({"dtype": "half"}, "dtype is set by the toolkit: use --dtype"),
    ({"max_model_len": 8192}, "max_model_len is set by the toolkit: use --max-model-len"),
    ({"seed": 1}, "seed is set by the toolkit: use --seed"),
    ({"gpu_memory_utilization": 0.5}, "use --backend-option gpu_memory_utilization=F"),
    ({"data_parallel_size": 2}, "data_parallel_size > 1 does not work in the in-process engine"),  # vLLM: may hang
    ({"data_parallel_size": "two"}, "data_parallel_size must be a positive integer, got 'two'"),
    ({"data_parallel_size": 2, "distributed_executor_backend": "external_launcher"}, None),  # one rank of a group
    ({"data_parallel_size": 1, "tensor_parallel_size": 2}, None),
    ({}, None),
])
def test_engine_args_problems(args, fragment):
    problem = engine_args_problem(args)
    assert problem == fragment if fragment is None else fragment in (problem or ""), problem


def test_cli_errors_name_the_flag():
    with pytest.raises(UserError, match="--engine-arg: 'tensor_paralel_size' is not an argument"):
        options("--engine-arg", "tensor_paralel_size=2")
    with pytest.raises(UserError, match=r"--engine-arg tensor_parallel_size given twice \(2 and 4\)"):
        options("--engine-arg", "tensor_parallel_size=2", "--engine-arg", "tensor_parallel_size=4")
    with pytest.raises(UserError, match="--engine-arg is only for --backend vllm"):
        options("--backend", "openai", "--engine-arg", "tensor_parallel_size=2")
    with pytest.raises(UserError, match="bad options for backend 'vllm': engine_kwargs: .*close matches"):
        options("--backend-option", 'engine_kwargs={"pipeline_paralel_size": 2}')  # the generic route is checked too
