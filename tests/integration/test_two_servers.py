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

import pytest

from tests.integration.servers import start_vllm_serve, stop, wait_ready

pytestmark = pytest.mark.integration

@pytest.fixture
def two_servers(model_dir, tmp_path):
    started = [start_vllm_serve(model_dir, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        deadline = time.time() + 400
        for i, (proc, url) in enumerate(started):
            wait_ready(proc, f"{url}/models", tmp_path / f"server{i}.log", deadline)
        yield started
    finally:
        for proc, _ in started:
            stop(proc)


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
