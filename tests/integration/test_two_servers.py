"""Two real `vllm serve` processes of the built-in model behind one `tts eval --backend openai`: one is
killed (SIGKILL) once the first problem is saved; the run still finishes every problem exactly once, and
running the command again generates nothing.

Memory: two CPU engines of SmolLM2-135M with 1 GiB of KV cache each (about 3 GB together).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

MAX_MODEL_LEN = 2048


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model_dir: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager",
           "--enable-prefix-caching", "--seed", "0"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/v1"


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, deadline: float) -> None:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError(f"vllm serve not ready in time:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture
def two_servers(model_dir, tmp_path):
    started = [_start(model_dir, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        deadline = time.time() + 400
        for i, (proc, url) in enumerate(started):
            _wait_ready(proc, url, tmp_path / f"server{i}.log", deadline)
        yield started
    finally:
        for proc, _ in started:
            _stop(proc)


def test_a_server_killed_mid_run_loses_nothing_and_the_rerun_generates_nothing(two_servers, tmp_path):
    (_, url_a), (second, url_b) = two_servers
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tts.cli", "eval", "--backend", "openai", "--base-url", url_a, "--base-url", url_b,
           "--task", "gsm8k", "--limit", "6", "-n", "2", "--max-tokens", "64", "--scorer", "none",
           "--concurrency", "2", "--no-progress", "--out", str(out)]
    results = out / "results.jsonl"
    with (tmp_path / "eval.err").open("w") as err:
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.time() + 600
        while not (results.exists() and results.read_text().strip()) and time.time() < deadline:
            assert run.poll() is None, (tmp_path / "eval.err").read_text()
            time.sleep(0.1)
        os.killpg(second.pid, signal.SIGKILL)  # the second server dies with problems in flight
        run.communicate(timeout=600)
    stderr = (tmp_path / "eval.err").read_text()
    assert run.returncode == 0, stderr[-3000:]
    assert second.wait(30) == -signal.SIGKILL

    ids = [json.loads(line)["problem_id"] for line in results.read_text().splitlines()]
    assert len(ids) == 6 and len(set(ids)) == 6, ids  # every problem exactly once
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 12  # n = 2 each: nothing duplicated by the requests sent again
    spread = [line for line in stderr.splitlines() if "requests per server" in line]
    assert spread and url_a in spread[-1] and url_b in spread[-1], stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["backend_info"]["base_urls"] == [url_a, url_b]

    before = {name: (out / name).read_bytes() for name in ("results.jsonl", "samples.jsonl")}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing generated again
