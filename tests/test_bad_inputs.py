"""Bad input to the `tts` command: one line on stderr, exit code 2, and nothing in the run folder changed.

BAD_INPUTS is the table: each row is (id, argv, expected fragment of the message, setup). argv may name
`{tmp}` (the row's own folder), `{run}` (a copy of a finished run folder, made by `tts eval` against the
fake server), `{url}` (the fake OpenAI-compatible server) and `{sys_run}` (a folder that cannot be
created, even by root); `setup(tmp, run)` writes the bad files first. Every row runs the real
`tts.cli.main` in-process and checks:

- exit code 2, and stderr is the single line "tts: error: ..." containing the fragment (no traceback);
- every file under the row's folder (data files and run folder alike) has the same bytes and mtime
  after as before, and no file or folder appeared or vanished.

Rows with a valid generation setup use `--backend openai --base-url {url}` (the fake server), so
validation that comes too late shows up as a finished run (exit 0, files written), not as a
minute of engine start; the vLLM engine is replaced by a stub that fails the row if it would start.

New options inherit the rule: `test_every_option_has_a_bad_input_row` fails for an option that takes a
value and appears in no row (or in NO_ROW with the reason).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_openai_server import FakeOpenAIServer
from tts import registry
from tts.cli import build_parser, main

GSM8K_RECORD = {"question": "Tom has 3 apples and buys 4 more. How many apples?",
                "answer": "3 + 4 = 7\n#### 7"}


@dataclass
class Row:
    id: str
    argv: list[str]
    fragment: str
    setup: Callable[[Path, Path], None] | None = None


def fast(*extra: str) -> list[str]:
    """A valid, fast `tts eval` against the fake server, plus the bad part."""
    return ["eval", "--task", "gsm8k", "--limit", "1", "-n", "2", "--backend", "openai", "--base-url", "{url}",
            "--no-progress", "--out", "{tmp}/out", *extra]


# The finished run in {run} was made with exactly this command; rerunning it resumes that folder.
RUN_ARGV = ["eval", "--task", "gsm8k", "--limit", "2", "-n", "2", "--backend", "openai", "--base-url", "{url}",
            "--no-progress", "--out", "{run}"]
SOLVE = ["solve", "--backend", "openai", "--base-url", "{url}", "-n", "2"]


def write(relpath: str, content: bytes | str) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        path = tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return setup


def in_run(name: str, line: str | None = None, replace: str | None = None) -> Callable[[Path, Path], None]:
    """Append `line` to (or replace with `replace`) a file of the finished run folder."""
    def setup(tmp: Path, run: Path) -> None:
        path = run / name
        if replace is not None:
            path.write_text(replace)
        else:
            with path.open("a") as fh:
                fh.write(line + "\n")
    return setup


def in_run_middle(name: str, line: str) -> Callable[[Path, Path], None]:
    """Insert `line` after the first line of a file of the finished run folder."""
    def setup(tmp: Path, run: Path) -> None:
        path = run / name
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:1] + [line + "\n"] + lines[1:]))
    return setup


def gsm8k_dir(train: int) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        folder = tmp / "data" / "gsm8k"
        folder.mkdir(parents=True)
        (folder / "test.jsonl").write_text(json.dumps(GSM8K_RECORD) + "\n")
        (folder / "train.jsonl").write_text((json.dumps(GSM8K_RECORD) + "\n") * train)
    return setup


def both(*setups: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        for s in setups:
            s(tmp, run)
    return setup


def unwritable(tmp: Path, run: Path) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


def run_copy(name: str, **changes: object) -> Callable[[Path, Path], None]:
    """A copy of the finished run folder in {tmp}/name, its config.json changed."""
    def setup(tmp: Path, run: Path) -> None:
        shutil.copytree(run, tmp / name)
        path = tmp / name / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return setup


SCALE = ["scale", "{run}", "--bootstrap", "10", "--draws", "10"]
URL_FILE_EVAL = ["eval", "--task", "gsm8k", "--limit", "1", "--base-url-file", "{tmp}/servers.txt", "--no-progress",
                 "--out", "{tmp}/out"]
COMPARE = ["compare", "{run}", "--out", "{tmp}/cmp"]
TWO_RUNS = ["compare", "{run}", "{tmp}/other", "--out", "{tmp}/cmp"]  # positionals first (argparse)
ALLOCATE = ["allocate", "{run}", "{tmp}/hot", "--budget", "1", "--out", "{tmp}/al"]
HOT_COPY = run_copy("hot", sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": 512})

BAD_INPUTS: list[Row] = [
    # ---- the command line itself ---------------------------------------------------------------
    Row("unknown-command", ["bogus"], "invalid choice"),
    Row("no-command", [], "the following arguments are required: command"),
    Row("eval-without-task", ["eval"], "the following arguments are required: --task"),
    Row("unknown-task", ["eval", "--task", "nope", "-n", "2"],
        "unknown task 'nope'; choose one of: gsm8k, humaneval, jsonl, math500"),
    Row("unknown-strategy", ["eval", "--task", "gsm8k", "--strategy", "nope"],
        "unknown strategy 'nope'; choose one of: ab-mcts-a, ab-mcts-m, adaptive-consistency, beam-search, "
        "best-of-n, deepconf, dvts, early-stop, mcts, mixture, particle-filtering, particle-gibbs, perplexity"),
    Row("option-without-equals", ["eval", "--task", "gsm8k", "-o", "beams"],
        "--option/-o: expected KEY=VALUE, got 'beams'"),
    Row("option-without-key", ["eval", "--task", "gsm8k", "-o", "=3"], "--option/-o: expected KEY=VALUE"),
    Row("unknown-strategy-option", ["eval", "--task", "gsm8k", "-o", "beams=4", "--limit", "1"],
        "bad options for strategy 'self-consistency': beams: Extra inputs are not permitted"),
    Row("strategy-option-out-of-range", fast("-o", "n=0"), "bad options for strategy 'self-consistency': n:"),
    # ---- step-level search options --------------------------------------------------------------------------
    Row("dvts-n-not-multiple-of-width", fast("-s", "dvts", "-n", "6"), "n must be a multiple of beam_width=4"),
    Row("particle-gibbs-n-not-multiple", fast("-s", "particle-gibbs", "-n", "5"), "n must be a multiple of iterations"),
    Row("particle-gibbs-one-per-run", fast("-s", "particle-gibbs", "-n", "2"), "at least 2 particles per iteration"),
    Row("step-search-bad-final", fast("-s", "beam-search", "-o", "final=vote"),
        "bad options for strategy 'beam-search': final: Input should be 'score', 'weighted-vote' or 'sample'"),
    Row("step-search-bad-aggregation", fast("-s", "particle-filtering", "-o", "aggregation=max"),
        "bad options for strategy 'particle-filtering': aggregation:"),
    Row("step-search-bad-pattern", fast("-s", "dvts", "-o", "answer_pattern=\"(\""),
        "answer_pattern is not a valid regular expression"),
    Row("step-search-zero-temperature-tau", fast("-s", "particle-filtering", "-o", "softmax_temperature=0"),
        "softmax_temperature: Input should be greater than 0"),
    Row("step-search-without-scorer", fast("-s", "beam-search", "--scorer", "none"),
        "beam-search ranks partial answers by a scorer"),
    Row("tree-search-without-scorer", fast("-s", "ab-mcts-a", "--scorer", "none"),
        "tree search scores every answer with a scorer"),
    Row("weighted-vote-without-scorer", fast("-s", "weighted-vote", "--scorer", "none"),
        "weighted-vote weighs each answer by its scorers' scores"),
    Row("dtype-not-a-choice", ["eval", "--task", "gsm8k", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    Row("n-zero", ["eval", "--task", "gsm8k", "-n", "0"], "must be at least 1, got 0"),
    Row("n-not-a-number", ["eval", "--task", "gsm8k", "-n", "x"], "expected an integer"),
    Row("limit-negative", ["eval", "--task", "gsm8k", "--limit", "-3"], "must be at least 1"),
    Row("limit-zero", fast("--limit", "0"), "argument --limit: must be at least 1, got 0"),
    Row("temperature-negative", fast("--temperature", "-1"), "argument --temperature: must be 0 or more"),
    Row("temperature-nan", fast("--temperature", "nan"), "argument --temperature: expected a finite number, got 'nan'"),
    Row("temperature-inf", fast("--temperature", "inf"), "argument --temperature: expected a finite number"),
    Row("temperature-text", fast("--temperature", "warm"), "argument --temperature: expected a number, got 'warm'"),
    Row("top-p-above-1", fast("--top-p", "2"), "argument --top-p: must be greater than 0 and at most 1, got '2'"),
    Row("top-p-zero", fast("--top-p", "0"), "argument --top-p: must be greater than 0 and at most 1, got '0'"),
    Row("top-p-negative", fast("--top-p", "-0.5"), "argument --top-p: must be greater than 0"),
    Row("top-p-nan", fast("--top-p", "nan"), "argument --top-p: expected a finite number"),
    Row("max-tokens-zero", fast("--max-tokens", "0"), "argument --max-tokens: must be at least 1"),
    Row("seed-not-a-number", fast("--seed", "x"), "argument --seed: invalid int value: 'x'"),
    Row("top-logprobs-too-many", fast("--top-logprobs", "21"), "argument --top-logprobs: must be at most 20"),
    Row("top-logprobs-negative", fast("--top-logprobs", "-1"), "argument --top-logprobs: must be 0 or more"),
    Row("max-model-len-zero", fast("--max-model-len", "0"), "argument --max-model-len: must be at least 1"),
    Row("few-shot-negative", fast("--few-shot", "-1"), "argument --few-shot: must be 0 or more, got -1"),
    Row("few-shot-not-a-number", fast("--few-shot", "two"), "argument --few-shot: expected an integer"),
    Row("concurrency-zero", fast("--concurrency", "0"), "argument --concurrency: must be at least 1"),
    Row("request-timeout-zero", fast("--request-timeout", "0"),
        "argument --request-timeout: must be a positive number of seconds, got '0'"),
    Row("request-timeout-negative", fast("--request-timeout", "-5"), "argument --request-timeout: must be a positive"),
    Row("request-timeout-nan", fast("--request-timeout", "nan"), "argument --request-timeout: expected a finite number"),
    Row("max-retries-negative", fast("--max-retries", "-1"), "argument --max-retries: must be 0 or more, got -1"),
    Row("base-url-not-a-url", ["eval", "--task", "gsm8k", "--backend", "openai", "--base-url", "localhost:8000"],
        "argument --base-url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got 'localhost:8000'"),
    Row("base-url-bad-port", ["eval", "--task", "gsm8k", "--backend", "openai", "--base-url", "http://h:port/v1"],
        "argument --base-url: bad port in 'http://h:port/v1'"),
    Row("base-url-without-openai", ["eval", "--task", "gsm8k", "--base-url", "http://x/v1", "--limit", "1"],
        "--base-url is only for --backend openai"),
    Row("request-timeout-without-openai", ["eval", "--task", "gsm8k", "--request-timeout", "5", "--limit", "1"],
        "--request-timeout is only for --backend openai"),
    Row("max-retries-without-openai", ["eval", "--task", "gsm8k", "--max-retries", "1", "--limit", "1"],
        "--max-retries is only for --backend openai"),
    # ---- declared task and backend options (--task-option / --backend-option and their shortcuts) -----
    Row("task-option-without-equals", fast("--task-option", "few_shot"), "--task-option: expected KEY=VALUE"),
    Row("unknown-task-option", fast("--task-option", "nope=1"),
        "bad options for task 'gsm8k': nope: Extra inputs are not permitted"),
    Row("task-option-bad-value", fast("--task-option", "few_shot=-1"), "bad options for task 'gsm8k': few_shot:"),
    Row("solve-unknown-task-option", [*SOLVE, "--task-option", "nope=1", "1+1?"],
        "bad options for task 'math500': nope: Extra inputs are not permitted"),
    Row("unknown-backend-option", fast("--backend-option", "nope=1"),
        "bad options for backend 'openai': nope: Extra inputs are not permitted"),
    Row("backend-option-bad-value", fast("--backend-option", "max_retries=-1"),
        "bad options for backend 'openai': max_retries:"),
    Row("vllm-backend-option-bad-value", ["eval", "--task", "gsm8k", "--backend-option", "kv_cache_gb=lots"],
        "bad options for backend 'vllm': kv_cache_gb:"),
    Row("data-file-without-jsonl", fast("--data-file", "{tmp}/qa.jsonl"), "--data-file is only for --task jsonl"),
    Row("few-shot-without-gsm8k", fast("--task", "math500", "--few-shot", "2"), "--few-shot is only for --task gsm8k"),
    Row("few-shot-and-task-option-disagree", fast("--few-shot", "2", "--task-option", "few_shot=3"),
        "--few-shot 2 and --task-option few_shot=3 disagree"),
    Row("dtype-without-vllm", fast("--dtype", "bfloat16"), "--dtype is only for --backend vllm"),
    Row("scripted-backend", ["eval", "--task", "gsm8k", "--backend", "scripted", "--limit", "1"],
        "scripted backend is for tests"),
    Row("unknown-backend", ["eval", "--task", "gsm8k", "--backend", "nope", "--limit", "1"], "unknown backend 'nope'"),
    Row("model-not-found", ["eval", "--task", "gsm8k", "--model", "/no/such/model", "--limit", "1"], "/no/such/model"),
    # ---- data ------------------------------------------------------------------------------------
    Row("data-dir-not-found", ["eval", "--task", "gsm8k", "--data-dir", "/no/such/dir"], "--data-dir not found: /no/such/dir"),
    Row("data-dir-is-a-file", fast("--data-dir", "{tmp}/file.txt"), "--data-dir not found", write("file.txt", "x")),
    Row("jsonl-without-data-file", ["eval", "--task", "jsonl", "--limit", "1"], "needs --data-file"),
    Row("data-file-not-found", fast("--task", "jsonl", "--data-file", "{tmp}/no.jsonl"), "data file not found"),
    Row("data-file-is-a-folder", fast("--task", "jsonl", "--data-file", "{tmp}"), "data file not found"),
    Row("data-file-empty", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl"), "task 'jsonl' has no problems",
        write("qa.jsonl", "")),
    Row("data-file-binary", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl"),
        "qa.jsonl:1: not UTF-8 text (byte 0x89)", write("qa.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")),
    Row("data-file-gz-not-gzip", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl.gz"),
        "qa.jsonl.gz: not a readable gzip file",
        write("qa.jsonl.gz", json.dumps({"question": "1+1?", "answer": "2"}) + "\n")),
    Row("data-file-gz-binary-inside", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl.gz"),
        "qa.jsonl.gz:1: not UTF-8 text", write("qa.jsonl.gz", gzip.compress(b"\xff\xfe\x00garbage\n"))),
    Row("data-file-malformed-line", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl"),
        "qa.jsonl:2: malformed JSON line",
        write("qa.jsonl", '{"question": "1+1?", "answer": "2"}\n{"question": "oops", \n')),
    Row("data-file-array-line", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl"),
        "qa.jsonl:1: expected a JSON object, got list", write("qa.jsonl", '["1+1?", "2"]\n')),
    Row("data-file-missing-field", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl"),
        "lacks field(s) answer", write("qa.jsonl", '{"question": "1+1?"}\n')),
    Row("data-file-lone-surrogate", fast("--task", "jsonl", "--data-file", "{tmp}/qa.jsonl"),
        "qa.jsonl:2: text that is not valid Unicode (lone surrogate \\udc80)",
        write("qa.jsonl", '{"question": "1+1?", "answer": "2"}\n{"question": "bad \\udc80 text", "answer": "2"}\n')),
    Row("benchmark-file-malformed", fast("--data-dir", "{tmp}"), "test.jsonl:1: malformed JSON line",
        write("gsm8k/test.jsonl", "not json\n")),
    Row("few-shot-larger-than-train-split", fast("--data-dir", "{tmp}/data", "--few-shot", "3"),
        "--few-shot 3 asks for more worked examples than the 2 in", gsm8k_dir(train=2)),
    # ---- the run folder --------------------------------------------------------------------------
    Row("out-is-a-file", fast("--out", "{tmp}/file.txt"), "argument --out: cannot write the folder",
        write("file.txt", "x")),
    Row("out-under-a-file", fast("--out", "{tmp}/file.txt/run"), "file.txt is a file", write("file.txt", "x")),
    Row("out-unwritable", fast("--out", "{unwritable}"), "cannot write the folder", unwritable),
    Row("unreachable-server", ["eval", "--task", "gsm8k", "--limit", "1", "--backend", "openai", "--base-url",
                               "http://127.0.0.1:9/v1", "--out", "{tmp}/r", "--no-progress", "--max-retries", "0"],
        "cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1"),
    Row("config-json-corrupt", RUN_ARGV, "config.json is not valid JSON", in_run("config.json", replace='{"task": "gsm')),
    Row("config-json-not-an-object", RUN_ARGV, "config.json is not a JSON object", in_run("config.json", replace="[]\n")),
    Row("results-empty-object-line", RUN_ARGV, "results.jsonl:3: not a result line", in_run("results.jsonl", "{}")),
    Row("results-array-line", RUN_ARGV, "results.jsonl:3: not a result line", in_run("results.jsonl", "[1, 2]")),
    Row("results-garbage-middle-line", RUN_ARGV, "results.jsonl:2: malformed JSON line",
        in_run_middle("results.jsonl", "garbage")),
    Row("samples-empty-object-line", RUN_ARGV, "samples.jsonl:5: not a sample line", in_run("samples.jsonl", "{}")),
    Row("run-folder-holds-another-run", [*RUN_ARGV, "--seed", "1"], "holds a different run (differs in: task_options, seed)"),
    # ---- solve -----------------------------------------------------------------------------------
    Row("solve-lone-surrogate", [*SOLVE, "\udc80"], "argument question: not valid UTF-8 text (byte 0x80 at character 0)"),
    Row("solve-lone-surrogate-mid", [*SOLVE, "what is 2\udcff2?"], "not valid UTF-8 text (byte 0xff at character 9)"),
    Row("solve-empty-question", [*SOLVE, "  "], "argument question: the question is empty"),
    Row("solve-task-without-free-text", [*SOLVE, "--task", "humaneval", "write f"],
        "cannot pose free-text questions; choose another --task"),
    Row("solve-unknown-strategy", [*SOLVE, "--strategy", "nope", "1+1?"], "unknown strategy 'nope'"),
    Row("solve-temperature-negative", [*SOLVE, "--temperature", "-1", "1+1?"], "argument --temperature: must be 0 or more"),
    Row("solve-top-p-zero", [*SOLVE, "--top-p", "0", "1+1?"], "argument --top-p: must be greater than 0"),
    # ---- models ----------------------------------------------------------------------------------
    Row("import-missing-gguf", ["models", "import", "/no/such.gguf"], "GGUF file not found: /no/such.gguf"),
    Row("import-text-named-gguf", ["models", "import", "{tmp}/m.gguf", "--name", "bad-input-test"],
        "is not a complete GGUF file", write("m.gguf", "hello, not a model\n")),
    Row("pull-unknown-model", ["models", "pull", "no-such-model"], "unknown model 'no-such-model' to pull; pullable:"),
    Row("pull-from-missing-folder", ["models", "pull", "qwen2.5-coder-0.5b", "--from", "{tmp}/no-wheels"],
        "--from folder not found"),
    # ---- scale and report ------------------------------------------------------------------------
    Row("scale-no-such-run", ["scale", "/no/such/run"], "run folder not found"),
    Row("scale-not-a-run-folder", ["scale", "{tmp}"], "is not a run folder with samples"),
    Row("scale-seed-negative", [*SCALE, "--seed", "-1"], "--seed must not be negative"),
    Row("scale-bootstrap-negative", [*SCALE, "--bootstrap", "-1"], "argument --bootstrap: must be 0 or more"),
    Row("scale-draws-zero", [*SCALE, "--draws", "0"], "argument --draws: must be at least 1"),
    Row("scale-rpc-fits-zero", [*SCALE, "--rpc-fits", "0"], "argument --rpc-fits: must be at least 1"),
    Row("scale-k-max-zero", [*SCALE, "--k-max", "0"], "argument --k-max: must be at least 1"),
    Row("scale-workers-zero", [*SCALE, "--workers", "0"], "argument --workers: must be at least 1"),
    Row("scale-out-is-a-file", [*SCALE, "--out", "{tmp}/file.txt"], "argument --out: cannot write the folder",
        write("file.txt", "x")),
    Row("scale-samples-empty-object", SCALE, "samples.jsonl:5: not a sample line", in_run("samples.jsonl", "{}")),
    Row("scale-samples-array", SCALE, "samples.jsonl:5: not a sample line", in_run("samples.jsonl", '["a", 1]')),
    Row("scale-samples-garbage-middle", SCALE, "samples.jsonl:2: malformed JSON line",
        in_run_middle("samples.jsonl", "\x00\x01 garbage")),
    Row("scale-samples-index-not-a-number", SCALE, "samples.jsonl:5: not a sample line (index:",
        in_run("samples.jsonl", json.dumps({"problem_id": "gsm8k/0", "index": "first"}))),
    Row("scale-samples-logprob-not-a-number", SCALE, "samples.jsonl:5: not a sample line (mean_logprob:",
        in_run("samples.jsonl", json.dumps({"problem_id": "gsm8k/0", "index": 2, "mean_logprob": "high"}))),
    Row("scale-samples-bad-verdict", SCALE, "samples.jsonl:5: not a sample line (selection.0",
        in_run("samples.jsonl", json.dumps({"problem_id": "gsm8k/0", "index": 2, "selection": [{"score": 5}]}))),
    Row("scale-results-array", SCALE, "results.jsonl:3: not a result line", in_run("results.jsonl", "[]")),
    Row("scale-config-corrupt", SCALE, "config.json is not valid JSON", in_run("config.json", replace="{")),
    # scorers: chosen and configured before any engine starts
    Row("scorer-unknown", fast("--scorer", "nope"), "unknown scorer 'nope'; choose one of:"),
    Row("scorer-twice", fast("--scorer", "docstring-examples", "--scorer", "docstring-examples"),
        "a scorer is chosen twice"),
    Row("scorer-none-and-another", fast("--scorer", "none", "--scorer", "docstring-examples"),
        "--scorer none cannot be combined with other scorers"),
    Row("scorer-option-nobody-declares", fast("--scorer", "docstring-examples", "--scorer-option", "nope=1"),
        "--scorer-option nope: no chosen scorer (docstring-examples) has an option 'nope'"),
    Row("scorer-option-for-unchosen-scorer", fast("--scorer", "docstring-examples", "--scorer-option", "judge.votes=2"),
        "--scorer-option judge.votes: 'judge' is not a chosen scorer"),
    Row("scorer-option-without-value", fast("--scorer-option", "votes"), "argument --scorer-option: expected KEY=VALUE"),
    Row("scorer-option-with-scorer-none", fast("--scorer", "none", "--scorer-option", "votes=2"),
        "--scorer-option given with --scorer none"),
    # rescore: the source must be a finished run, the output a new folder
    Row("rescore-not-a-run", ["rescore", "{tmp}", "--scorer", "docstring-examples", "--out", "{tmp}/new"],
        "is not a run folder (no readable config.json)"),
    Row("rescore-into-itself", ["rescore", "{run}", "--scorer", "docstring-examples", "--out", "{run}"],
        "--out must be a new folder"),
    Row("rescore-unknown-scorer", ["rescore", "{run}", "--scorer", "nope", "--out", "{tmp}/new"], "unknown scorer 'nope'"),
    Row("rescore-bad-scorer-option", ["rescore", "{run}", "--scorer", "docstring-examples", "--scorer-option", "x",
                                     "--out", "{tmp}/new"], "argument --scorer-option: expected KEY=VALUE"),
    Row("rescore-concurrency-zero", ["rescore", "{run}", "--scorer", "docstring-examples", "--concurrency", "0",
                                    "--out", "{tmp}/new"], "argument --concurrency: must be at least 1"),
    Row("rescore-out-is-a-file", ["rescore", "{run}", "--scorer", "docstring-examples", "--out", "{tmp}/file.txt"],
        "argument --out: cannot write the folder", write("file.txt", "x")),
    # compare: everything is checked before anything is written (no --out folder, no groups.json in the pool)
    Row("compare-no-such-run", ["compare", "/no/such/run", "--out", "{tmp}/cmp"], "run folder not found: /no/such/run"),
    Row("compare-not-a-run-folder", ["compare", "{tmp}", "--out", "{tmp}/cmp"], "is not a run folder (no config.json)"),
    Row("compare-without-out", ["compare", "{run}"], "the following arguments are required: --out"),
    Row("compare-out-is-a-file", ["compare", "{run}", "--out", "{tmp}/file.txt"],
        "argument --out: cannot write the folder", write("file.txt", "x")),
    Row("compare-different-tasks", TWO_RUNS, "runs of different tasks", run_copy("other", task="math500")),
    Row("compare-different-models", TWO_RUNS, "runs of different models", run_copy("other", model="other-model")),
    Row("compare-results-array", COMPARE, "results.jsonl:3: not a result line", in_run("results.jsonl", "[]")),
    Row("compare-metrics-corrupt", COMPARE, "metrics.json is not valid JSON", in_run("metrics.json", replace="{")),
    Row("compare-pool-not-found", [*COMPARE, "--pool", "{tmp}/nope"], "run folder not found: {tmp}/nope"),
    Row("compare-pool-not-independent-samples", [*COMPARE, "--pool", "{tmp}/tree"],
        "is a mcts run; a pool needs independent samples", run_copy("tree", strategy="mcts")),
    Row("compare-budgets-not-a-number", [*COMPARE, "--pool", "{run}", "--budgets", "4,x"],
        "argument --budgets: expected an integer, got 'x'"),
    Row("compare-budgets-empty-item", [*COMPARE, "--pool", "{run}", "--budgets", "4,,8"],
        "argument --budgets: expected comma-separated integers such as 4,8,16, got '4,,8'"),
    Row("compare-budgets-zero", [*COMPARE, "--pool", "{run}", "--budgets", "0,2"], "argument --budgets: must be at least 1"),
    Row("compare-budgets-without-pool", [*COMPARE, "--budgets", "2"], "--budgets is only for --pool"),
    Row("compare-budgets-above-pool", [*COMPARE, "--pool", "{run}", "--budgets", "2,4"],
        "--budgets asks for 4 samples, but the pool"),
    Row("compare-bootstrap-negative", [*COMPARE, "--bootstrap", "-1"], "argument --bootstrap: must be 0 or more"),
    Row("compare-seed-negative", [*COMPARE, "--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
    Row("report-no-such-folder", ["report", "/no/such/run"], "folder not found"),
    Row("report-scaling-json-corrupt", ["report", "{tmp}"], "scaling.json is not a scaling study",
        write("scaling.json", '{"studies": [1]}')),
    Row("perturb-unknown-perturber", fast("-o", "perturb=nonsense"),
        "bad options for strategy 'self-consistency': perturb: Value error, unknown perturber 'nonsense'; valid: role"),
    # allocate: two runs, {run} and a copy sampled hotter; everything is checked before anything is written
    Row("allocate-one-run", ["allocate", "{run}", "--budget", "1", "--out", "{tmp}/al"],
        "allocation needs at least two runs"),
    Row("allocate-no-such-run", ["allocate", "{run}", "/no/such/run", "--budget", "1", "--out", "{tmp}/al"],
        "run folder not found: /no/such/run"),
    Row("allocate-without-budget", ["allocate", "{run}", "{tmp}/hot", "--out", "{tmp}/al"],
        "the following arguments are required: --budget", HOT_COPY),
    Row("allocate-budget-zero", [*ALLOCATE[:3], "--budget", "0", *ALLOCATE[5:]], "argument --budget: must be at least 1",
        HOT_COPY),
    Row("allocate-budget-above-pool", [*ALLOCATE[:3], "--budget", "3", *ALLOCATE[5:]],
        "--budget 3 is more than the 2 samples per problem", HOT_COPY),
    Row("allocate-budgets-not-a-number", [*ALLOCATE, "--budgets", "1,x"], "argument --budgets: expected an integer",
        HOT_COPY),
    Row("allocate-budgets-above-pool", [*ALLOCATE, "--budgets", "1,4"], "--budgets 4 is more than the 2 samples",
        HOT_COPY),
    Row("allocate-train-fraction-one", [*ALLOCATE, "--train-fraction", "1"],
        "argument --train-fraction: must be greater than 0 and less than 1, got '1'", HOT_COPY),
    Row("allocate-train-fraction-not-a-number", [*ALLOCATE, "--train-fraction", "half"],
        "argument --train-fraction: expected a number, got 'half'", HOT_COPY),
    Row("allocate-train-fraction-empties-a-part", [*ALLOCATE, "--train-fraction", "0.1"],
        "--train-fraction 0.1 of the 2 problems every run finished leaves no training problem", HOT_COPY),
    Row("allocate-seed-negative", [*ALLOCATE, "--seed", "-1"], "argument --seed: must be 0 or more, got -1", HOT_COPY),
    Row("allocate-cost-unknown", [*ALLOCATE, "--cost", "flops"], "argument --cost: invalid choice: 'flops'", HOT_COPY),
    Row("allocate-out-is-a-file", [*ALLOCATE[:5], "--out", "{tmp}/file.txt"], "argument --out: cannot write the folder",
        both(HOT_COPY, write("file.txt", "x"))),
    Row("allocate-different-tasks", ALLOCATE, "runs of different tasks", run_copy("hot", task="math500")),
    Row("allocate-not-a-pool", ALLOCATE, "is a mcts run; allocation needs pools of independent samples",
        run_copy("hot", strategy="mcts")),
    # the mixture strategy: its file is read and checked when the strategy is built, before any engine
    Row("mixture-file-not-found", fast("-s", "mixture", "-o", "mixture={tmp}/nope.json"),
        "mixture file not found: {tmp}/nope.json"),
    Row("mixture-n-differs", fast("-s", "mixture", "-o", "mixture={tmp}/m.json"),
        "the mixture draws 3 samples per problem (1 cold + 2 hot) but n is 2; run it with -n 3",
        write("m.json", json.dumps({"components": [{"label": "cold", "n": 1, "temperature": 0.2},
                                                   {"label": "hot", "n": 2, "temperature": 1.0}]}))),
    Row("mixture-two-models", fast("-s", "mixture", "-o", "mixture={tmp}/m.json"),
        "the mixture needs 2 models (a, b) but a run uses one backend and one model",
        write("m.json", json.dumps({"components": [{"label": "x", "n": 1, "temperature": 0.2, "model": "a"},
                                                   {"label": "y", "n": 1, "temperature": 1.0, "model": "b"}]}))),
    # scale: the adaptive replays' settings
    Row("scale-ac-threshold-zero", [*SCALE, "--ac-threshold", "0"],
        "argument --ac-threshold: must be greater than 0 and at most 1"),
    Row("scale-early-stop-tau-above-one", [*SCALE, "--early-stop-tau", "1.5"],
        "argument --early-stop-tau: must be greater than 0 and at most 1"),
    Row("scale-deepconf-keep-above-100", [*SCALE, "--deepconf-keep", "150"],
        "argument --deepconf-keep: must be a percentage from 1 to 100"),
    Row("scale-deepconf-keep-not-a-number", [*SCALE, "--deepconf-keep", "ten"],
        "argument --deepconf-keep: expected a number, got 'ten'"),
    Row("scale-ac-threshold-empty-item", [*SCALE, "--ac-threshold", "0.8,,0.9"],
        "argument --ac-threshold: expected comma-separated values such as 0.8,0.95, got '0.8,,0.9'"),
    Row("scale-ac-threshold-bad-item", [*SCALE, "--ac-threshold", "0.8,2"],
        "argument --ac-threshold: must be greater than 0 and at most 1, got '2'"),
    Row("scale-adaptive-option-with-no-adaptive", [*SCALE, "--no-adaptive", "--early-stop-tau", "0.8"],
        "--early-stop-tau set the adaptive replays, which --no-adaptive turns off"),
    # eval --shard I/N: 1 <= I <= N, checked before anything starts
    Row("shard-index-zero", fast("--shard", "0/4"), "argument --shard: the shard index I must be from 1 to 4, got '0/4'"),
    Row("shard-index-above-count", fast("--shard", "5/4"),
        "argument --shard: the shard index I must be from 1 to 4, got '5/4'"),
    Row("shard-count-zero", fast("--shard", "1/0"), "argument --shard: the shard count N must be at least 1, got '1/0'"),
    Row("shard-not-a-fraction", fast("--shard", "abc"), "argument --shard: expected I/N with 1 <= I <= N (e.g. 2/8)"),
    Row("shard-three-numbers", fast("--shard", "1/4/2"), "argument --shard: expected I/N with 1 <= I <= N (e.g. 2/8), "
        "got '1/4/2'"),
    Row("shard-without-problems", fast("--shard", "2/2"),
        "shard 2/2 has no problems: the task has 1 after --limit, and N may be at most that"),
    # merge: only shard folders, into a new folder
    Row("merge-not-a-shard", ["merge", "{run}", "--out", "{tmp}/merged"], "{tmp}/run is not a shard"),
    Row("merge-not-a-run-folder", ["merge", "{tmp}/nope", "--out", "{tmp}/merged"],
        "{tmp}/nope is not a run folder (no config.json)"),
    Row("merge-out-not-empty", ["merge", "{run}", "--out", "{tmp}/run"],
        "--out {tmp}/run exists and is not empty; merge writes a new run folder"),
    # view: the folder must be a run or a study, the page a file in an existing folder; nothing is written
    Row("view-no-such-folder", ["view", "/no/such/run"], "folder not found: /no/such/run"),
    Row("view-not-a-run-folder", ["view", "{tmp}"], "is neither a run folder (no config.json) nor a `tts scale`"),
    Row("view-results-array", ["view", "{run}"], "results.jsonl:3: not a result line", in_run("results.jsonl", "[]")),
    Row("view-out-is-a-folder", ["view", "{run}", "--out", "{tmp}"], "argument --out: cannot write the file"),
    Row("view-out-in-missing-folder", ["view", "{run}", "--out", "{tmp}/no/such/page.html"],
        "argument --out: cannot write the file {tmp}/no/such/page.html: no folder {tmp}/no/such"),
    # several servers for --backend openai: a URL file that is missing, has a bad line or names none; a repeat
    Row("base-url-file-missing", [*URL_FILE_EVAL, "--backend", "openai"], "--base-url-file not found: {tmp}/servers.txt"),
    Row("base-url-file-bad-line", [*URL_FILE_EVAL, "--backend", "openai"],
        "--base-url-file {tmp}/servers.txt:4: expected an http(s) URL such as http://127.0.0.1:8000/v1, "
        "got 'localhost:8001'", write("servers.txt", "# the pool\nhttp://127.0.0.1:8000/v1\n\nlocalhost:8001\n")),
    Row("base-url-file-names-none", [*URL_FILE_EVAL, "--backend", "openai"],
        "--base-url-file {tmp}/servers.txt names no server URL", write("servers.txt", "# none yet\n\n")),
    Row("base-url-file-without-openai", URL_FILE_EVAL, "--base-url-file is only for --backend openai",
        write("servers.txt", "http://127.0.0.1:8000/v1\n")),
    Row("base-url-given-twice", fast("--base-url", "{url}/"), "is given twice"),
    # --engine-arg for the vllm backend: checked against vLLM's EngineArgs before any engine starts
    Row("engine-arg-not-key-value", ["eval", "--task", "gsm8k", "--engine-arg", "tensor_parallel_size"],
        "argument --engine-arg: expected KEY=VALUE, got 'tensor_parallel_size'"),
    Row("engine-arg-unknown-key", ["eval", "--task", "gsm8k", "--limit", "1", "--engine-arg", "tensor_paralel_size=2"],
        "--engine-arg: 'tensor_paralel_size' is not an argument of vLLM's EngineArgs; close matches: "
        "tensor_parallel_size"),
    Row("engine-arg-set-by-a-flag", ["eval", "--task", "gsm8k", "--limit", "1", "--engine-arg", "max_model_len=8192"],
        "--engine-arg: max_model_len is set by the toolkit: use --max-model-len"),
    Row("engine-arg-without-vllm", fast("--engine-arg", "tensor_parallel_size=2"),
        "--engine-arg is only for --backend vllm"),
    # serve: every flag is checked (and the port bound) before an engine starts or anything is served
    Row("serve-port-not-a-number", ["serve", "--port", "http"], "argument --port: expected an integer, got 'http'"),
    Row("serve-port-too-large", ["serve", "--port", "70000"], "argument --port: must be from 0 to 65535, got 70000"),
    Row("serve-host-is-a-url", ["serve", "--host", "http://0.0.0.0"],
        "argument --host: expected a host name or address such as 127.0.0.1"),
    Row("serve-host-unknown", ["serve", "--host", "no-such-host.invalid", "--backend", "openai", "--base-url", "{url}"],
        "--host no-such-host.invalid:"),
    Row("serve-max-concurrent-zero", ["serve", "--max-concurrent", "0"], "argument --max-concurrent: must be at least 1"),
    Row("serve-max-queue-negative", ["serve", "--max-queue", "-1"], "argument --max-queue: must be 0 or more, got -1"),
    Row("serve-max-budget-zero", ["serve", "--max-budget", "0"], "argument --max-budget: must be at least 1"),
    Row("serve-max-tokens-not-a-number", ["serve", "--max-tokens", "lots"], "argument --max-tokens: expected an integer"),
    Row("serve-api-key-empty", ["serve", "--api-key", " "], "argument --api-key: the API key is empty"),
    Row("serve-task-without-free-text", ["serve", "--task", "humaneval"], "tts serve needs a task that poses free-text"),
    Row("serve-unknown-task-option", ["serve", "--task-option", "nope=1"], "bad options for task 'math500': nope"),
    Row("serve-unknown-scorer", ["serve", "--scorer", "nope"], "unknown scorer 'nope'"),
    Row("serve-scorer-option-nobody-has", ["serve", "--scorer", "judge", "--scorer-option", "nope=1"],
        "--scorer-option nope: no chosen scorer (judge) has an option 'nope'"),
    Row("serve-unknown-backend-option", ["serve", "--backend-option", "nope=1"], "bad options for backend 'vllm': nope"),
    Row("serve-base-url-without-openai", ["serve", "--base-url", "{url}"], "--base-url is only for --backend openai"),
    Row("serve-base-url-file-missing", ["serve", "--backend", "openai", "--base-url-file", "{tmp}/servers.txt"],
        "--base-url-file not found: {tmp}/servers.txt"),
    Row("serve-request-timeout-zero", ["serve", "--request-timeout", "0"], "argument --request-timeout: must be a positive"),
    Row("serve-max-retries-negative", ["serve", "--max-retries", "-1"], "argument --max-retries: must be 0 or more"),
    Row("serve-max-model-len-zero", ["serve", "--max-model-len", "0"], "argument --max-model-len: must be at least 1"),
    Row("serve-dtype-not-a-choice", ["serve", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    Row("serve-seed-not-a-number", ["serve", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    Row("serve-server-unreachable", ["serve", "--port", "0", "--backend", "openai", "--base-url",
                                     "http://127.0.0.1:9/v1", "--max-retries", "0"],
        "cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1"),
]

# Options that take a value but need no row of their own, with the reason.
NO_ROW = {
    "--model": "any name is tried; a missing one is the model-not-found row",
    "--name": "models import: any name",
    "--json": "a flag",
}


# ================================================================================================ fixtures


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(lifetime=300) as s:
        yield s


@pytest.fixture(scope="module")
def finished_run(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("template") / "run"
    argv = [a.format(url=server.url, run=folder) for a in RUN_ARGV]
    assert main(argv) == 0
    return folder


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    """The vLLM engine never starts here: a row that would start it fails instead."""
    from tts.backends import vllm

    def stub(self, model=None, **options):
        if model is not None:
            from tts.models import resolve_model

            resolve_model(model)  # a model that cannot be found is still a UserError
        raise AssertionError("the vLLM engine would start: the bad input was not caught before the backend")

    monkeypatch.setattr(vllm.VLLMBackend, "__init__", stub)
    monkeypatch.setattr(registry, "_BACKENDS", {})


def snapshot(root: Path) -> dict[str, tuple]:
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = ()
        for name in filenames:
            path = Path(dirpath) / name
            st = path.stat()
            state[os.path.relpath(path, root)] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size,
                                                  st.st_mtime_ns)
    return state


def expand(argv: list[str], tmp: Path, run: Path, url: str) -> list[str]:
    # root may write in a read-only folder; /sys refuses even root
    unwritable_dir = "/sys/tts-bad-input/run" if os.geteuid() == 0 else str(tmp / "ro" / "run")
    return [a.replace("{unwritable}", unwritable_dir).replace("{tmp}", str(tmp)).replace("{run}", str(run))
            .replace("{url}", url) for a in argv]


# ================================================================================================ the table


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[r.id for r in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(row, server, finished_run, tmp_path, capsys, monkeypatch):
    tmp = tmp_path / "case"
    tmp.mkdir()
    run = tmp / "run"
    shutil.copytree(finished_run, run)
    if row.setup is not None:
        row.setup(tmp, run)
    monkeypatch.chdir(tmp)  # a default run folder (runs/...) would appear here
    monkeypatch.setenv("TTS_CACHE_DIR", str(tmp_path / "cache"))  # `models import` writes nowhere else
    before = snapshot(tmp)
    capsys.readouterr()
    try:
        code = main(expand(row.argv, tmp, run, server.url))
    finally:
        if (tmp / "ro").exists():
            (tmp / "ro").chmod(0o755)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}, stderr: {err}"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("tts: error: "), err
    expected = row.fragment.replace("{tmp}", str(tmp))
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    assert snapshot(tmp) == before, "the bad input changed files"


def test_every_option_has_a_bad_input_row():
    """An option that takes a value is exercised by some row (or listed in NO_ROW with the reason)."""
    used = {a for row in BAD_INPUTS for a in row.argv}
    missing = set()

    def walk(parser):
        for action in parser._actions:
            if action.nargs == 0 or not action.option_strings:  # flags, positionals
                if hasattr(action, "choices") and isinstance(action.choices, dict):
                    for sub in action.choices.values():
                        walk(sub)
                continue
            if not (set(action.option_strings) & used) and not (set(action.option_strings) & set(NO_ROW)):
                missing.add(f"{parser.prog} {'/'.join(action.option_strings)}")

    walk(build_parser())
    assert not missing, f"options without a bad-input row: {sorted(missing)}"


def test_a_lone_surrogate_from_the_real_command_line():
    """`tts solve $'\\x80'`: the shell passes a byte that is not UTF-8; Python sees a lone surrogate."""
    proc = subprocess.run([sys.executable, "-m", "tts.cli", "solve", b"\x80".decode("utf-8", "surrogateescape")],
                          capture_output=True, text=True, errors="replace", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "tts: error: argument question: not valid UTF-8 text (byte 0x80 at character 0)"
