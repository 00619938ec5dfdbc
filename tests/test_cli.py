"""Bad input gets one clear line on stderr and exit code 2, never a traceback."""

import subprocess
import sys

import pytest

from tts.cli import main


def run(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "args,expected",
    [
        (["eval", "--task", "nope", "-n", "2"], "unknown task 'nope'; choose one of: gsm8k, humaneval, jsonl, math500"),
        (["eval", "--task", "gsm8k", "--strategy", "nope"], "unknown strategy 'nope'; choose one of: ab-mcts-a, ab-mcts-m, best-of-n, mcts, perplexity"),
        (["eval", "--task", "gsm8k", "-o", "beams"], "--option/-o: expected KEY=VALUE, got 'beams'"),
        (["eval", "--task", "gsm8k", "-o", "beams=4", "--limit", "1"],
         "bad options for strategy 'self-consistency': beams: Extra inputs are not permitted"),
        (["models", "import", "/no/such.gguf"], "GGUF file not found: /no/such.gguf"),
        (["eval", "--task", "gsm8k", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["eval", "--task", "gsm8k", "-n", "0"], "must be at least 1, got 0"),
        (["eval", "--task", "gsm8k", "-n", "x"], "expected an integer"),
        (["eval", "--task", "gsm8k", "--limit", "-3"], "must be at least 1"),
        (["eval", "--task", "gsm8k", "--model", "/no/such/model", "--limit", "1"], "/no/such/model"),
        (["eval", "--task", "gsm8k", "--data-dir", "/no/such/dir"], "--data-dir not found: /no/such/dir"),
        (["eval", "--task", "jsonl", "--limit", "1"], "needs --data-file"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, expected, capsys):
    code, err = run(args, capsys)
    assert code == 2
    assert err.startswith("tts: error: ") and expected in err
    assert "\n" not in err and "Traceback" not in err


def test_malformed_jsonl_names_file_and_line(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "oops", \n')
    code, err = run(["eval", "--task", "jsonl", "--data-file", str(data)], capsys)
    assert code == 2 and f"{data}:2: malformed JSON line" in err


def test_missing_field_is_named(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "1+1?"}\n')
    code, err = run(["eval", "--task", "jsonl", "--data-file", str(data)], capsys)
    assert code == 2 and "lacks field(s) answer" in err


def test_malformed_benchmark_file_in_data_dir(tmp_path, capsys):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("not json\n")
    code, err = run(["eval", "--task", "gsm8k", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "test.jsonl:1: malformed JSON line" in err


def test_unreachable_server_names_the_url(tmp_path, capsys):
    code, err = run(["eval", "--task", "gsm8k", "--limit", "1", "--backend", "openai", "--base-url",
                     "http://127.0.0.1:9/v1", "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 2 and "cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1" in err


def test_scripted_backend_is_not_for_the_command_line(capsys):
    code, err = run(["eval", "--task", "gsm8k", "--backend", "scripted", "--limit", "1"], capsys)
    assert code == 2 and "scripted backend is for tests" in err


def test_base_url_without_openai_backend(capsys):
    code, err = run(["eval", "--task", "gsm8k", "--base-url", "http://x/v1", "--limit", "1"], capsys)
    assert code == 2 and "--base-url is only for --backend openai" in err


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
