"""One request's search as an asyncio task: admitted (or refused with 429), run on a counting view of the
shared backend with its own AFFINITY key, and cancellable when the client goes away (cancelling the task
cancels its backend calls, which the vLLM backend turns into engine aborts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from starlette.requests import Request

from tts.backends.base import AFFINITY, Backend
from tts.serve.admission import Admission, Full, Ticket
from tts.serve.errors import ApiError, error_body, one_line
from tts.serve.plan import Plan
from tts.serve.proxy import CountingBackend
from tts.strategy import StrategyContext
from tts.task import Task
from tts.types import Result

log = logging.getLogger("tts.serve")


@dataclass
class Search:
    id: str
    plan: Plan
    proxy: CountingBackend
    task: asyncio.Task[Result]

    async def cancel(self) -> None:
        """Cancel the search and wait until it has let go of the backend."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task

    def failure(self) -> ApiError:
        """The finished task's exception as a one-line 500 (the server stays up)."""
        exc = self.task.exception()
        assert exc is not None
        log.error("search %s (%s) failed: %s: %s", self.id, self.plan.strategy_name, type(exc).__name__,
                  one_line(exc))
        return ApiError(500, f"the search failed: {type(exc).__name__}: {one_line(exc)}", code="search_failed")


def start(plan: Plan, request_id: str, backend: Backend, task: Task, admission: Admission) -> Search:
    """Admit the search (429 when every place is taken) and start it; it waits for a slot if need be."""
    try:
        ticket = admission.reserve()
    except Full as full:
        raise ApiError(429, f"the server is busy: {admission.max_concurrent} searches running and "
                       f"{admission.max_queue} waiting; retry after {full.retry_after} s",
                       code="rate_limit_exceeded", headers={"Retry-After": str(full.retry_after)}) from None
    proxy = CountingBackend(backend)
    job = asyncio.create_task(_run(plan, request_id, proxy, task, admission, ticket), name=f"search {request_id}")
    # Released here, not only in _run: a task cancelled before its first step never runs its body.
    job.add_done_callback(lambda _: admission.release(ticket))
    return Search(request_id, plan, proxy, job)


async def _run(plan: Plan, request_id: str, proxy: CountingBackend, task: Task, admission: Admission,
               ticket: Ticket) -> Result:
    AFFINITY.set(request_id)  # this task's context only: every backend call of the search carries it
    await admission.wait(ticket)
    began = time.perf_counter()
    proxy.started = began
    ctx = StrategyContext(backend=proxy, answers=task, sampling=plan.sampling, scorers=plan.scorers,
                          rng=random.Random(plan.seed))
    try:
        return await plan.strategy.run(plan.problem, ctx)
    finally:
        admission.release(ticket, time.perf_counter() - began)


async def wait_or_disconnect(search: Search, request: Request, poll: float) -> bool:
    """Wait for the search; True if it finished, False if the client left first (the search is cancelled)."""
    try:
        while True:
            done, _ = await asyncio.wait({search.task}, timeout=poll)
            if done:
                return True
            if await request.is_disconnected():
                log.info("client of %s disconnected; cancelling its search", search.id)
                await search.cancel()
                return False
    except asyncio.CancelledError:
        await search.cancel()
        raise


def error_event(exc: ApiError) -> dict:
    """An error inside a stream (after the 200 status went out), as the openai client expects it."""
    return error_body(exc.status, exc.message, param=exc.param, code=exc.code)
