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
