"""`tts serve` under test: the real app on uvicorn in a background thread, on a free 127.0.0.1 port, with
scripted backends that can be watched (calls in flight, cancellations, request ids) or held."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from tts.backends.base import AFFINITY
from tts.backends.render import prompt_text
from tts.backends.scripted import ScriptedBackend
from tts.registry import build_task
from tts.serve import ServeSettings, create_app
from tts.tasks.math500 import INSTRUCTION
from tts.types import GenerationRequest, Sample

ANSWERS = ["Add them: 3 + 4 = 7. \\boxed{7}", "I think \\boxed{8}", "Surely \\boxed{7}", "Maybe \\boxed{12}"]


def math_messages(question: str) -> list[Any]:
    """The chat prompt math500's make_problem builds, so a served request and tts.api.asolve match."""
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{question}"}]


def is_judge(text: str) -> bool:
    return "Answer Yes or No." in text.rsplit("User:", 1)[-1]


def script(text: str, index: int) -> str | Sample:
    """Candidates cycle through ANSWERS; the judge says P(Yes) = 0.9 for a 7 and 0.2 otherwise, spending
    one completion token and the judge prompt's tokens."""
    if is_judge(text):
        p = 0.9 if "boxed{7}" in text.rsplit("Answer Yes or No.", 1)[0][-200:] else 0.2
        return Sample(text="Yes", token_count=1, top_logprobs=[{"Yes": math.log(p), "No": math.log(1 - p)}],
                      finish_reason="length")
    if "fail" in text:
        raise RuntimeError("scripted engine failure")
    if "nothing" in text:
        return "no boxed answer here"
    return ANSWERS[index % len(ANSWERS)]


class WatchedBackend(ScriptedBackend):
    """A scripted backend that records calls in flight, their AFFINITY keys and cancellations; with `hold`
    set, every call waits until `release()` (or until `gather` calls are in flight at once)."""

    def __init__(self, delay: float = 0.0, hold: bool = False, gather: int = 0):
        super().__init__(script, delay=delay)
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0
        self.affinity: list[str | None] = []
        self.hold, self.gather = hold, gather
        self.closed = False
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if self._released is None:
            self._released, self._loop = asyncio.Event(), asyncio.get_running_loop()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.affinity.append(AFFINITY.get())
        try:
            if self.hold:
                await self._released.wait()
            if self.gather:  # wait (up to 10 s) until `gather` calls are in the engine together
                deadline = time.monotonic() + 10
                while self.in_flight < self.gather and self.max_in_flight < self.gather and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            return await super().generate(requests)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    def release(self) -> None:
        """Let held calls go on (thread-safe: called from the test's thread)."""
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)
        self.hold = False

    def prompts(self) -> list[str]:
        return [prompt_text(r.prompt, r.continuation) for call in self.calls for r in call]

    async def aclose(self) -> None:
        self.closed = True


class Served:
    def __init__(self, url: str, backend: WatchedBackend, server: uvicorn.Server):
        self.url, self.backend, self.server = url, backend, server
        self.base_url = f"{url}/v1"

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; health {self.health()}")
            time.sleep(0.02)


@contextmanager
def serve(backend: WatchedBackend | None = None, task: str = "math500", scorers=None,
          **settings) -> Iterator[Served]:
    """The app on a socket bound to a free 127.0.0.1 port (bound before uvicorn starts: no race)."""
    backend = backend or WatchedBackend()
    app = create_app(backend, build_task(task), settings=ServeSettings(**settings), scorers=scorers)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", backend, server)
    finally:
        backend.release()
        server.should_exit = True
        thread.join(20)
        sock.close()
