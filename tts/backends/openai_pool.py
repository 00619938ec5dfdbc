"""Sending requests to one or several OpenAI-compatible servers: retries, failover, probes.

Why apart from `openai.py`: the backend knows what a request means (payloads, samples, the served model);
this pool only gets one request answered somewhere, and its rules are the same for every request.

One server: a fault (connection refused or broken, timeout, 408/409/429/5xx, an unusable answer) is
retried on it with exponential backoff and jitter up to `max_retries` times (a Retry-After is honoured),
then BackendError names the URL, the last fault and the attempts. Several servers (`routing.py` picks
one per attempt, keeping a problem's requests on one server):

* a server that cannot be reached or breaks the connection is taken out at once, and the request goes
  to another healthy server without spending a retry;
* other faults are retried on the same server as with one; when its retries are spent the server is
  taken out and the request starts afresh (the whole request, with a fresh retry budget) on another;
* when a server is taken out, the requests still in flight on it are abandoned and sent again whole
  elsewhere (a watched request's watcher forgets what it saw, as on any retry);
* the last healthy server is never taken out: its faults end in the usual error, which then also
  names the servers already out and their last faults;
* a server taken out is probed (GET /models) once `server_cooldown` seconds have passed and rejoins
  when it answers and still lists the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from tts.backends.openai_answers import (
    model_list,
    parse_json_object,
    read_body,
    retry_after,
    transport_fault,
)
from tts.backends.openai_stream import MalformedAnswer, one_line
from tts.backends.routing import RoutingTable
from tts.errors import BackendError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# Transport faults that say the server is gone (not merely slow): with another server left, taken out at once.
SERVER_GONE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
               httpx.RemoteProtocolError)


class _Fault(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, text: str, wait: float = 0.0, gone: bool = False):
        super().__init__(text)
        self.text, self.wait, self.gone = text, wait, gone


class _TakenOut(Exception):
    """The attempt's server was taken out while the attempt was in flight."""


class ServerPool:
    """The servers behind one backend, an HTTP client per event loop, and the retry-and-failover loop."""

    def __init__(self, urls: Sequence[str], *, headers: dict[str, str], timeout: httpx.Timeout,
                 transport: httpx.AsyncBaseTransport | None, max_retries: int, backoff: float,
                 max_response_bytes: int, cooldown: float, clock: Callable[[], float] | None = None):
        self.table = RoutingTable(urls, cooldown, clock) if clock else RoutingTable(urls, cooldown)
        self.urls = list(urls)
        self.headers, self.timeout, self.transport = headers, timeout, transport
        self.max_retries, self.backoff, self.max_response_bytes = max_retries, backoff, max_response_bytes
        # a probe's answer (the model ids served) -> None when the server may rejoin, else why not
        self.probe_check: Callable[[list[str]], str | None] = lambda ids: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probes: set[asyncio.Task] = set()

    @property
    def several(self) -> bool:
        return len(self.urls) > 1

    def bind(self) -> None:
        """Make the client and events for the running loop (each `tts.solve()` call runs its own)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self.client = httpx.AsyncClient(headers=self.headers, timeout=self.timeout, transport=self.transport)
            self._down = [asyncio.Event() for _ in self.urls]  # set when that server is taken out
            self._probes = set()

    def take_out(self, i: int, fault: str) -> bool:
        """Take server i out (not the last healthy one); its in-flight attempts are abandoned and move."""
        if not self.table.take_out(i, fault):
            return False
        log.warning("server %s taken out (%s); its requests go to the other servers; probed again after %g s",
                    self.urls[i], fault, self.table.cooldown)
        old, self._down[i] = self._down[i], asyncio.Event()
        old.set()
        return True

    async def request(self, method: str, path: str, payload: dict | None = None, *, retries: int | None = None,
                      parse: Callable[[dict[str, Any]], Any] | None = None,
                      read: Callable[[httpx.Response], Awaitable[Any]] | None = None,
                      key: str | None = None, server: int | None = None) -> Any:
        """The answer's JSON object (through `parse`, which raises MalformedAnswer for an unusable one), or
        what `read` makes of a successful response (a stream). `key`: the affinity key; `server`: this
        server only (no routing, no failover, not in the counters: the checks of each server)."""
        retries = self.max_retries if retries is None else retries
        for _move in range(2 * len(self.urls) + 1):
            i = server if server is not None else self._route(key)
            last, wait, attempt, moved = "", 0.0, 0, False
            while attempt <= retries:
                if attempt:
                    backoff = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                    await asyncio.sleep(max(backoff, wait))
                    if server is None and not self.table.servers[i].healthy:  # taken out meanwhile
                        moved = True
                        break
                attempt += 1
                self.table.begin(i, counted=server is None)
                try:
                    return await self._guarded(i, self._attempt(i, method, path, payload, parse, read))
                except _Fault as fault:
                    last, wait = fault.text, fault.wait
                    self.table.fault(i, last, counted=server is None)
                    if fault.gone and server is None and self.take_out(i, last):
                        moved = True
                        break
                except _TakenOut:
                    moved = True
                    break
                finally:
                    self.table.end(i)
            if not moved and not (server is None and self.take_out(i, last)):
                raise BackendError(self._failure(i, path, attempt, last))
        raise BackendError(f"{path} failed on every server, moving {2 * len(self.urls) + 1} times: "
                           f"{self.table.down_report()}")

    def _failure(self, i: int, path: str, attempts: int, last: str) -> str:
        message = f"{self.urls[i]}{path} failed after {attempts} attempts: {last}"
        out = self.table.down_report(besides=i)
        return message + (f"; the other servers are out: {out}" if out else "")

    def _route(self, key: str | None) -> int:
        """The server for this attempt; first starts a probe of each server whose cooldown has passed."""
        for j in self.table.due_probes():
            task = asyncio.ensure_future(self._probe(j))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)
        return self.table.pick(key)

    async def _probe(self, j: int) -> None:
        try:
            body = await self._attempt(j, "GET", "/models", None, model_list, None)
            ids = [str(m.get("id")) for m in body["data"] if isinstance(m, dict)]
            why = self.probe_check(ids)
        except (_Fault, BackendError) as exc:
            why = str(exc)
        self.table.probe_result(j, why is None, why or "")
        if why is None:
            log.warning("server %s answers again and rejoins", self.urls[j])

    async def _guarded(self, i: int, attempt: Awaitable[Any]) -> Any:
        """The attempt, abandoned (_TakenOut) if server i is taken out while it runs."""
        if not self.several:
            return await attempt
        down = self._down[i]
        task = asyncio.ensure_future(attempt)
        waiter = asyncio.ensure_future(down.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task in done:
            return task.result()
        raise _TakenOut

    async def _attempt(self, i: int, method: str, path: str, payload: dict | None,
                       parse: Callable[[dict[str, Any]], Any] | None,
                       read: Callable[[httpx.Response], Awaitable[Any]] | None) -> Any:
        """One attempt on server i: its value, _Fault (retry), or BackendError (a client error: not retried)."""
        url = f"{self.urls[i]}{path}"
        try:
            async with self.client.stream(method, url, json=payload) as resp:
                if resp.status_code in RETRY_STATUS:
                    wait = retry_after(resp) or 0.0
                    text = (await read_body(resp, 4096, truncate=True)).decode("utf-8", "replace")
                    raise _Fault(f"HTTP {resp.status_code}: {one_line(text, 200)}"
                                 + (f" (Retry-After {wait:g} s)" if wait else ""), wait)
                if resp.status_code >= 400:
                    text = (await read_body(resp, 4096, truncate=True)).decode("utf-8", "replace")
                    raise BackendError(f"{url} answered HTTP {resp.status_code}: {one_line(text, 500)}")
                if read is not None:
                    return await read(resp)
                body = await read_body(resp, self.max_response_bytes)
                value = parse_json_object(body, resp.headers.get("content-type", ""))
                return parse(value) if parse is not None else value
        except MalformedAnswer as exc:
            raise _Fault(f"the server answered with {exc}") from None
        except httpx.RequestError as exc:
            raise _Fault(transport_fault(exc, self.timeout), gone=isinstance(exc, SERVER_GONE)) from None

    async def aclose(self) -> None:
        if self._loop is None:
            return
        for task in list(self._probes):
            task.cancel()
        for task in list(self._probes):
            with contextlib.suppress(BaseException):
                await task
        await self.client.aclose()
        self._loop = None
        if self.several and any(s.sent for s in self.table.servers):
            log.warning("requests per server: %s", self.table.summary())
