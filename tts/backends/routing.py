"""Which of several OpenAI-compatible servers gets a request: pure bookkeeping, no I/O.

Why a routing table of our own rather than a round robin: a problem's requests share long prompt
prefixes (the same question sampled again, a judge reading the same candidates), and a server reuses
those only if it sees them all. So requests carry an affinity key (`tts.backends.base.AFFINITY`, the
problem id) and the first request of a key goes to the healthy server with the fewest requests
outstanding (ties: the lowest index); later requests of that key go to the same server while it stays
healthy. When it is taken out, the key moves with its next request.

Health policy (the HTTP client in `openai.py` reports, this table decides):

* `take_out(i)` marks a server down, but never the last healthy one: with one server left (or only
  one given) its faults count against each request's retries as they always did, so a single server
  behaves exactly as before and the final error names the real fault.
* A down server is probed again once `cooldown` seconds have passed since it was taken out
  (`due_probes`); a probe that succeeds lets it rejoin, one that fails starts another cooldown.

The clock is injectable so tests can move time by hand.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_AFFINITY_KEYS = 65536  # remembered keys; the least recently used are forgotten beyond this


def url_problem(url: str) -> str | None:
    """Why `url` is not a server URL (http(s), a host, a numeric port), or None."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return f"expected an http(s) URL such as http://127.0.0.1:8000/v1, got {url!r}"
    try:
        parsed.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return f"bad port in {url!r}"
    return None


def server_urls(value: str | Sequence[str]) -> list[str]:
    """One URL or several, checked, without trailing slashes; ValueError for none, a bad one or a repeat."""
    urls = [value] if isinstance(value, str) else list(value)
    if not urls:
        raise ValueError("no server URL given")
    out: list[str] = []
    for url in urls:
        if not isinstance(url, str):
            raise ValueError(f"a server URL must be text, got {url!r}")
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        url = url.rstrip("/")
        if url in out:
            raise ValueError(f"the server {url} is given twice")
        out.append(url)
    return out


@dataclass
class ServerState:
    """One server's health and counters (the counters are what `server_stats` reports)."""

    url: str
    healthy: bool = True
    outstanding: int = 0         # attempts in flight now
    sent: int = 0                # attempts sent
    failures: int = 0            # attempts that ended in a fault
    taken_out: int = 0           # times marked down
    rejoined: int = 0            # times a probe brought it back
    last_fault: str = ""
    down_since: float | None = None
    probing: bool = False


class RoutingTable:
    """Least-outstanding-requests routing with affinity over a fixed list of servers."""

    def __init__(self, urls: Sequence[str], cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_AFFINITY_KEYS):
        if not urls:
            raise ValueError("a routing table needs at least one server")
        self.servers = [ServerState(url) for url in urls]
        self.cooldown = cooldown
        self.clock = clock
        self.max_keys = max_keys
        self._affinity: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def healthy(self) -> list[int]:
        return [i for i, s in enumerate(self.servers) if s.healthy]

    def pick(self, key: str | None) -> int:
        """The server for the next request of `key` (None: no affinity): the key's server while it is
        healthy, else the healthy server with the fewest outstanding requests (ties: lowest index)."""
        if key is not None and key in self._affinity:
            i = self._affinity[key]
            if self.servers[i].healthy:
                self._affinity.move_to_end(key)
                return i
        healthy = self.healthy
        if not healthy:  # take_out never removes the last one; kept total for safety
            healthy = list(range(len(self.servers)))
        i = min(healthy, key=lambda j: (self.servers[j].outstanding, j))
        if key is not None:
            self._affinity[key] = i
            self._affinity.move_to_end(key)
            while len(self._affinity) > self.max_keys:
                self._affinity.popitem(last=False)
        return i

    def server_of(self, key: str) -> int | None:
        """Where `key`'s requests go now (None: not seen or forgotten)."""
        return self._affinity.get(key)

    def begin(self, i: int, counted: bool = True) -> None:
        """An attempt is sent to server i (`counted`: in `sent`; the checks of each server are not)."""
        self.servers[i].outstanding += 1
        self.servers[i].sent += counted

    def end(self, i: int) -> None:
        """An attempt on server i is over (answered, failed or abandoned)."""
        self.servers[i].outstanding -= 1

    def fault(self, i: int, text: str, counted: bool = True) -> None:
        """An attempt on server i failed with `text` (the server stays in)."""
        self.servers[i].failures += counted
        self.servers[i].last_fault = text

    def can_take_out(self, i: int) -> bool:
        """Whether server i is healthy and another healthy server remains without it."""
        return self.servers[i].healthy and len(self.healthy) > 1

    def take_out(self, i: int, fault: str | None = None) -> bool:
        """Mark server i down (False, and nothing changes, when it is the last healthy one or already down).
        Its cooldown starts now; requests routed to it move on their next attempt."""
        if fault:
            self.servers[i].last_fault = fault
        if not self.can_take_out(i):
            return False
        state = self.servers[i]
        state.healthy = False
        state.taken_out += 1
        state.down_since = self.clock()
        return True

    def due_probes(self) -> list[int]:
        """Down servers whose cooldown has passed and that no probe is checking yet; each is now marked as
        being probed (report with `probe_result`)."""
        now = self.clock()
        due = [i for i, s in enumerate(self.servers) if not s.healthy and not s.probing
               and s.down_since is not None and now - s.down_since >= self.cooldown]
        for i in due:
            self.servers[i].probing = True
        return due

    def probe_result(self, i: int, ok: bool, fault: str = "") -> None:
        """A probe of server i answered: it rejoins, or it stays down for another cooldown."""
        state = self.servers[i]
        state.probing = False
        if state.healthy:
            return
        if ok:
            state.healthy = True
            state.rejoined += 1
            state.down_since = None
        else:
            state.down_since = self.clock()
            if fault:
                state.last_fault = fault

    def down_report(self, besides: int | None = None) -> str:
        """The down servers (other than `besides`) as "URL (last fault)", joined by "; "."""
        return "; ".join(f"{s.url} ({s.last_fault or 'taken out'})" for i, s in enumerate(self.servers)
                         if not s.healthy and i != besides)

    def stats(self) -> list[dict[str, Any]]:
        """Per-server counters, in the order the servers were given."""
        return [{"url": s.url, "healthy": s.healthy, "sent": s.sent, "failures": s.failures,
                 "taken_out": s.taken_out, "rejoined": s.rejoined, "outstanding": s.outstanding,
                 "last_fault": s.last_fault} for s in self.servers]

    def summary(self) -> str:
        """One line for the log: how the requests were spread."""
        parts = []
        for s in self.servers:
            extra = f", taken out {s.taken_out}x, rejoined {s.rejoined}x" if s.taken_out else ""
            parts.append(f"{s.url}: {s.sent} sent, {s.failures} failed{extra}")
        return "; ".join(parts)
