"""`tts serve` on the built-in model, as a user runs it: a subprocess on a free 127.0.0.1 port, one
self-consistency request on a GSM8K question through the official openai client, then Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.integration.servers import MAX_MODEL_LEN, free_port, wait_ready
from tts.registry import build_task

pytestmark = pytest.mark.integration


def test_serve_answers_a_gsm8k_question_and_counts_every_token(model_dir, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tts.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--task", "gsm8k",
           "--max-model-len", str(MAX_MODEL_LEN), "--seed", "0", "--max-concurrent", "4"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        # the engine starts before the server listens (about a minute on CPU)
        wait_ready(proc, f"http://127.0.0.1:{port}/health", log, time.time() + 600, what="tts serve")

        problem = build_task("gsm8k").load(1)[0].problem
        assert not isinstance(problem.prompt, str)
        messages = [{"role": m.role, "content": m.content} for m in problem.prompt]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        response = client.chat.completions.create(
            model="self-consistency:n=4,scorers=none", messages=messages, max_tokens=128, temperature=0.8, seed=1,
            extra_body={"tts": {"include": ["candidates"]}})

        ext = response.model_extra["tts"]
        candidates = ext["candidates"]
        assert len(candidates) == 4
        assert ext["answer"] is not None and response.choices[0].message.content  # the small model does answer
        assert response.choices[0].message.content == candidates[ext["chosen"]]["text"]
        usage = response.usage
        assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
        # one engine call with n = 4: the prompt counted once, every candidate's tokens, nothing else
        assert usage.completion_tokens == sum(c["completion_tokens"] for c in candidates)
        assert usage.prompt_tokens == ext["usage"]["prompt_tokens"]
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert ext["usage"]["backend_calls"] == 1 and ext["usage"]["scorer_prompt_tokens"] == 0
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["in_flight"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
