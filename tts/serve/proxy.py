"""A per-request view of the shared backend that counts what one search has asked of it.

Every request's search talks to the one shared backend (so the engine batches them) through its own
`CountingBackend`, which delegates everything and counts finished calls, samples and tokens; the
streaming endpoint turns those counts into progress events. A scorer that judges with the policy model
goes through the same proxy, so its calls count too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tts.backends.base import Backend, Watcher
from tts.types import GenerationRequest, Sample


class CountingBackend(Backend):
    name = "counting"
    description = "per-request counting view of the served backend (tts serve)"

    def __init__(self, inner: Backend):
        self.inner = inner
        setattr(self, "name", inner.name)  # noqa: B010 - the proxy reports itself as the backend it wraps
        self.model = inner.model
        self.parameter_count = inner.parameter_count
        self.stats = inner.stats
        self.calls = 0
        self.samples = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0
        self.started = time.perf_counter()
        self.changed = asyncio.Event()

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        self.in_flight += 1
        try:
            out = await self.inner.generate(requests)
        finally:
            self.in_flight -= 1
        self._count([s for samples in out for s in samples], [list(samples) for samples in out])
        return out

    async def generate_watched(self, requests: list[GenerationRequest], watchers: list[Watcher]) -> list[Sample]:
        self.in_flight += 1
        try:
            out = await self.inner.generate_watched(requests, watchers)
        finally:
            self.in_flight -= 1
        self._count(out, [[s] for s in out])
        return out

    async def served_identity(self) -> dict[str, Any]:
        return await self.inner.served_identity()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    async def aclose(self) -> None:
        """Nothing: the shared backend outlives every request (the server closes it on shutdown)."""

    def _count(self, samples: list[Sample], per_request: list[list[Sample]]) -> None:
        self.calls += 1
        self.samples += len(samples)
        self.completion_tokens += sum(s.token_count for s in samples)
        self.prompt_tokens += sum(group[0].prompt_tokens for group in per_request if group)
        self.changed.set()

    def progress(self) -> dict[str, Any]:
        """What the search has done so far (a progress event's payload)."""
        return {"backend_calls": self.calls, "samples": self.samples, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "calls_in_flight": self.in_flight,
                "elapsed_seconds": round(time.perf_counter() - self.started, 3)}
