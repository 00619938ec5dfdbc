"""A client that leaves `tts serve` mid-search frees the real engine: its search is cancelled and vLLM aborts
the search's requests, instead of generating thousands of tokens nobody will read."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest
import uvicorn

from tts.registry import build_task
from tts.serve.app import create_app
from tts.serve.schema import ServeSettings

pytestmark = pytest.mark.integration


def test_a_client_that_leaves_mid_search_frees_the_engine(engine):
    app = create_app(engine, build_task("gsm8k"), settings=ServeSettings(disconnect_poll=0.05), scorers=[],
                     close_backend=False)  # the session's engine is shared with other tests
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    core = engine._engine
    busy: list[float] = []  # when the engine had unfinished requests
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        start = time.monotonic()
        while watching.is_set():
            if core.has_unfinished_requests():
                busy.append(time.monotonic() - start)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="unused",
                               max_retries=0, timeout=3.0)
        steps_before = engine.stats.steps
        watcher.start()
        with pytest.raises(openai.APITimeoutError):  # 8 samples of up to 1500 tokens: far more than 3 s
            client.chat.completions.create(
                model="self-consistency:n=8,scorers=none", max_tokens=1500, temperature=0.8,
                messages=[{"role": "user", "content": "Write a very long story about a dragon, in many chapters."}])
        left = time.monotonic()
        deadline = left + 10
        while core.has_unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        freed = time.monotonic() - left
        assert not core.has_unfinished_requests(), "the engine still runs the search's requests 10 s after"
        steps_at_free = engine.stats.steps
        time.sleep(1.0)
        assert engine.stats.steps == steps_at_free  # idle: nothing left generating
    finally:
        watching.clear()
        server.should_exit = True
        thread.join(20)
        sock.close()
    generated_steps = steps_at_free - steps_before
    assert busy and max(busy) > 2.5, "the engine was not still generating when the client left"
    assert 0 < generated_steps < 1500  # stopped well before the samples' token cap
    assert freed < 5.0, f"the engine was freed only {freed:.1f} s after the client left"
