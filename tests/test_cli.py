"""Bad input gets one clear line on stderr and exit code 2, never a traceback."""

import subprocess
import sys

import pytest

from tts.cli import main

# The bad-input table (one line, exit 2, nothing changed) is tests/test_bad_inputs.py.


def test_request_timeout_and_retries_reach_the_openai_backend():
    from tts.cli import _backend_options, build_parser
    from tts.registry import build_backend

    args = build_parser().parse_args(["eval", "--task", "gsm8k", "--backend", "openai", "--base-url",
                                      "http://127.0.0.1:8000/v1", "--request-timeout", "7.5", "--max-retries", "1"])
    backend = build_backend(args.backend, args.model, **_backend_options(args))
    assert backend.request_timeout == 7.5 and backend.max_retries == 1
    assert backend._timeout.read == 7.5 and backend._timeout.connect == 7.5
    default = build_backend("openai", None, "http://127.0.0.1:8000/v1")
    assert default.request_timeout == 300.0 and default._timeout.connect == 30.0


def test_help_lists_the_request_timeout(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--request-timeout SECONDS" in capsys.readouterr().out


def test_no_traceback_from_the_real_command():
    proc = subprocess.run([sys.executable, "-m", "tts.cli", "eval", "--task", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tts: error: unknown task") and "Traceback" not in proc.stderr


def test_list_shows_every_plugin_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("self-consistency", "repeated-sampling", "gsm8k", "math500", "humaneval", "vllm", "openai",
                 "docstring-examples", "unit-tests", "math-answer"):
        assert name in out
    assert "unavailable" not in out


def test_strategy_options_are_parsed_as_json_else_strings():
    from tts.cli import build_parser

    args = build_parser().parse_args(["eval", "--task", "gsm8k", "-o", "beams=4", "-o", "sampler=gibbs",
                                      "-o", "temperatures=[0.6, 1.0]", "-o", "max-depth=3"])
    assert dict(args.option) == {"beams": 4, "sampler": "gibbs", "temperatures": [0.6, 1.0], "max_depth": 3}


def test_dtype_is_part_of_the_run_identity():
    from tts.cli import _run_folder_name

    base = {"task": "gsm8k", "task_options": {}, "strategy": "self-consistency", "strategy_options": {"n": 4},
            "model": None, "backend": "vllm", "sampling": {}, "seed": 0, "dtype": None}
    assert _run_folder_name(base) != _run_folder_name({**base, "dtype": "bfloat16"})
    # runs made before --dtype existed keep their folder name (no dtype key in the identity)
    assert _run_folder_name(base) == _run_folder_name({k: v for k, v in base.items() if k != "dtype"})


def test_task_and_backend_options_come_generically_and_through_the_shortcut_flags():
    from tts.cli import _backend_options, _task_options, build_parser

    parse = build_parser().parse_args
    short = parse(["eval", "--task", "gsm8k", "--few-shot", "2", "--seed", "3"])
    generic = parse(["eval", "--task", "gsm8k", "--task-option", "few-shot=2", "--seed", "3"])
    assert _task_options(short) == _task_options(generic) == {"few_shot": 2, "seed": 3}
    jsonl = parse(["eval", "--task", "jsonl", "--data-file", "qa.jsonl", "--task-option", "answer_field=solution"])
    assert _task_options(jsonl) == {"data_file": "qa.jsonl", "answer_field": "solution", "seed": 0}
    openai = parse(["eval", "--task", "gsm8k", "--backend", "openai", "--base-url", "http://h:1/v1",
                    "--backend-option", "concurrency=8", "--max-retries", "2"])
    assert _backend_options(openai) == {"base_url": "http://h:1/v1", "concurrency": 8, "max_retries": 2}
    vllm = parse(["eval", "--task", "gsm8k", "--dtype", "bfloat16",
                  "--backend-option", 'engine_kwargs={"max_num_batched_tokens": 1024}'])  # a real EngineArgs key
    assert _backend_options(vllm) == {"dtype": "bfloat16", "engine_kwargs": {"max_num_batched_tokens": 1024},
                                      "seed": 0}


def test_backend_options_that_change_the_answers_are_part_of_the_run_identity():
    from tts.cli import _backend_identity, _run_folder_name

    # timeouts, retries, memory do not change what is generated; dtype and seed are identity keys already
    assert _backend_identity("openai", {"base_url": "http://h/v1", "request_timeout": 5, "max_retries": 0}) == {}
    assert _backend_identity("vllm", {"dtype": "float16", "seed": 1, "kv_cache_gb": 8}) == {}
    assert _backend_identity("openai", {"send_seed": False}) == {"send_seed": False}
    assert _backend_identity("vllm", {"engine_kwargs": {"quantization": "fp8"}}) == {
        "engine_kwargs": {"quantization": "fp8"}}
    base = {"task": "gsm8k", "task_options": {"seed": 0}, "strategy": "self-consistency",
            "strategy_options": {"n": 4}, "model": None, "backend": "openai", "sampling": {}, "seed": 0, "dtype": None}
    assert _run_folder_name(base) != _run_folder_name({**base, "backend_options": {"send_seed": False}})
    assert _run_folder_name(base) == _run_folder_name({**base, "backend_options": {}})  # older runs keep their name
    from tts.runs import IDENTITY_KEYS

    assert {"task_options", "backend_options"} <= set(IDENTITY_KEYS)


def test_list_shows_the_declared_options_of_tasks_and_backends(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "options (--task-option KEY=VALUE): data_dir=None, seed=0, few_shot=0" in out
    assert "data_file=None, question_field='question'" in out
    assert "options (--backend-option KEY=VALUE): base_url='http://127.0.0.1:8000/v1'" in out
    assert "kv_cache_gb=2" in out


def test_lower_layers_never_import_the_api():
    """The builders live in tts.registry; only the package's front door, the API and the CLI use tts.api."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    allowed = {"tts/__init__.py", "tts/api.py", "tts/cli.py"}
    offenders = []
    for folder in ("tts", "strategies", "tasks", "verifiers"):
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            lines = path.read_text().splitlines()
            if rel not in allowed and any(line.lstrip().startswith(("from tts.api ", "import tts.api",
                                                                    "from tts import api")) for line in lines):
                offenders.append(rel)
    assert not offenders, f"these modules import tts.api (use tts.registry): {offenders}"


def test_a_late_strategy_option_left_unset_keeps_old_run_folders_resumable(tmp_path):
    """`perturb` came after run folders existed: unset, it changes neither the folder name nor the identity
    a resume compares; set, it does."""
    from tts.cli import _run_folder_name
    from tts.errors import UserError
    from tts.runs import RunFolder

    old = {"task": "gsm8k", "task_options": {}, "strategy": "self-consistency", "strategy_options": {"n": 4},
           "model": None, "backend": "vllm", "sampling": {}, "seed": 0}
    new = {**old, "strategy_options": {"n": 4, "perturb": None}}
    assert _run_folder_name(old) == _run_folder_name(new)
    assert _run_folder_name(old) != _run_folder_name({**old, "strategy_options": {"n": 4, "perturb": "role"}})
    run = RunFolder(tmp_path / "run")
    run.open(old)
    run.release()
    run.open(new)  # resumes
    run.release()
    with pytest.raises(UserError, match="differs in: strategy_options"):
        run.open({**old, "strategy_options": {"n": 4, "perturb": "role"}})
