"""Admission control: at most `max_concurrent` searches run, at most `max_queue` wait (first come, first
served), and a request beyond both is refused at once with a retry time instead of piling up memory.

A `Ticket` is released exactly once whatever happens to its search (finished, failed, cancelled before it
ever started), so the counts /health reports never drift.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque


class Full(Exception):
    """Every running and waiting place is taken."""

    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class Ticket:
    def __init__(self) -> None:
        self.state = "waiting"  # -> running -> done
        self.ready = asyncio.Event()


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int):
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.running = 0
        self.waiting: deque[Ticket] = deque()
        self.finished = 0
        self._mean_seconds = 1.0  # a running estimate of one search's duration, for Retry-After

    def reserve(self) -> Ticket:
        """A place (running or queued), or `Full`."""
        if self.running + len(self.waiting) >= self.max_concurrent + self.max_queue:
            raise Full(self.retry_after())
        ticket = Ticket()
        if self.running < self.max_concurrent:
            self._start(ticket)
        else:
            self.waiting.append(ticket)
        return ticket

    async def wait(self, ticket: Ticket) -> None:
        """Until the ticket may run."""
        await ticket.ready.wait()

    def release(self, ticket: Ticket, seconds: float | None = None) -> None:
        """Give the place back (idempotent); a running ticket's place goes to the first waiting one."""
        if ticket.state == "waiting":
            self.waiting.remove(ticket)
        elif ticket.state == "running":
            self.running -= 1
            self.finished += 1
            if seconds is not None:
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * seconds
            if self.waiting:
                self._start(self.waiting.popleft())
        ticket.state = "done"

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, drained `max_concurrent` at a time."""
        rounds = (len(self.waiting) + 1) / self.max_concurrent
        return max(1, math.ceil(self._mean_seconds * rounds))

    def _start(self, ticket: Ticket) -> None:
        ticket.state = "running"
        self.running += 1
        ticket.ready.set()
