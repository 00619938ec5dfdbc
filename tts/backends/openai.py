"""HTTP client for any OpenAI-compatible server (vllm serve, SGLang, llama.cpp server), or several.

Text prompts go to `/completions`; chat prompts to `/chat/completions`, so the server applies its own
chat template. Requests are sent concurrently up to a limit (`concurrency`, across all servers). Faults
are retried with exponential backoff and jitter: connection errors and resets, timeouts, 408/409/429/5xx
(a Retry-After header is honoured), and answers that cannot be used (not JSON, JSON cut off, an HTML page
with status 200, no choices, a choice without text, larger than `max_response_bytes`). When the retries
are spent the error is one line naming the URL, what went wrong on the last attempt and how many attempts
were made. A server that answers with fewer choices than `n` gets what it returned passed on (the base
class asks again for the missing samples).

Several servers (`base_url` a list; `tts eval --base-url A --base-url B`): each problem's requests go to
one server (the affinity key `tts.backends.base.AFFINITY`), new problems to the least busy one, and a
server that dies is taken out while its requests are sent again elsewhere (`openai_pool.py`,
`routing.py`, docs/distributed.md). All must serve the same model; `check` refuses otherwise.

`request_timeout` bounds each attempt's wait for the answer (a non-streaming request's answer comes
only when all of its samples are generated, so a busy server with many problems in flight needs a
generous value); connecting is bounded by min(request_timeout, CONNECT_TIMEOUT).

Watched samples (`generate_watched`) are streamed instead, so that a watcher can stop one while it is
generated: closing the response makes vllm serve abort the request (`openai_stream.py`). There
`request_timeout` bounds the wait for each chunk, and a fault once the stream has begun (a broken
connection, a malformed chunk, `[DONE]` too early) is retried like the faults above, by generating the
whole sample again; the tokens of the broken attempt are not counted.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from pydantic import Field, field_validator

from tts.backends.base import AFFINITY, Backend, BackendOptions, Watcher, check_watched
from tts.backends.openai_answers import (  # noqa: F401 - parse_json_object re-exported
    build_payload,
    model_list,
    parse_json_object,
    read_samples,
)
from tts.backends.openai_pool import RETRY_STATUS, ServerPool  # noqa: F401 - RETRY_STATUS re-exported
from tts.backends.openai_stream import STREAM_OPTIONS, StreamAccumulator, read_stream, restart_watcher
from tts.backends.routing import server_urls
from tts.errors import BackendError, UserError
from tts.types import GenerationRequest, Sample

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_REQUEST_TIMEOUT = 300.0  # seconds one attempt waits for its answer (`tts eval --request-timeout`)
CONNECT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF = 0.5  # first retry after about this many seconds, doubling each time
DEFAULT_MAX_RESPONSE_BYTES = 256 * 2**20
DEFAULT_SERVER_COOLDOWN = 30.0  # seconds before a server taken out is probed again
AFFINITY_PREFIX_CHARS = 200  # without an affinity key, requests whose prompts start alike share a server


class OpenAIOptions(BackendOptions):
    base_url: str | list[str] = Field(DEFAULT_BASE_URL, description="the server's URL, or a list of servers "
                                      "serving the same model (`--base-url`, repeatable; `--base-url-file`)")
    api_key: str | None = Field(None, description="sent as a bearer token")
    concurrency: int = Field(64, ge=1, description="requests in flight at once (all servers together)")
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, description="retries of a failed request (`--max-retries`)")
    backoff: float = Field(DEFAULT_BACKOFF, ge=0, description="seconds before the first retry (doubling each time)")
    request_timeout: float = Field(DEFAULT_REQUEST_TIMEOUT, gt=0, allow_inf_nan=False,
                                   description="seconds one attempt waits for its answer (`--request-timeout`)")
    max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, ge=1, description="larger answers are faults")
    send_seed: bool = Field(True, description="send each request's seed to the server")
    usage_per_chunk: bool = Field(True, description="streamed (watched) samples: ask for the usage on every chunk "
                                  "(vllm serve's continuous_usage_stats, so a stopped sample knows its prompt "
                                  "tokens); off for servers that refuse unknown stream options")
    server_cooldown: float = Field(DEFAULT_SERVER_COOLDOWN, gt=0, allow_inf_nan=False,
                                   description="several servers: seconds before a server taken out is probed again")

    # where and how the answers are fetched, not what they are: a run resumes on other servers
    outside_identity = frozenset({"base_url", "api_key", "concurrency", "max_retries", "backoff", "request_timeout",
                                  "max_response_bytes", "usage_per_chunk", "server_cooldown"})

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        server_urls(value)  # ValueError: a bad URL, none, or one given twice
        return value


def affinity_key(req: GenerationRequest) -> str:
    """The request's routing key: the runner's AFFINITY (the problem id), else a hash of the prompt's
    first AFFINITY_PREFIX_CHARS characters (chat: the messages as "role: content" lines)."""
    key = AFFINITY.get()
    if key is not None:
        return key
    text = req.prompt if isinstance(req.prompt, str) else "\n".join(f"{m.role}: {m.content}" for m in req.prompt)
    return "prompt:" + hashlib.sha256(text[:AFFINITY_PREFIX_CHARS].encode("utf-8", "replace")).hexdigest()[:16]


class OpenAIBackend(Backend):
    name = "openai"
    description = "HTTP client for OpenAI-compatible completions servers (vllm serve, SGLang, llama.cpp)"
    Options = OpenAIOptions

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | Sequence[str] = DEFAULT_BASE_URL,
        api_key: str | None = None,
        concurrency: int = 64,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float | None = None,
        request_timeout: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        send_seed: bool = True,
        usage_per_chunk: bool = True,
        server_cooldown: float = DEFAULT_SERVER_COOLDOWN,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] | None = None,
    ):
        request_timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else float(request_timeout)
        if not (math.isfinite(request_timeout) and request_timeout > 0):
            raise UserError(f"the request timeout must be a positive number of seconds, got {request_timeout}")
        if max_retries < 0:
            raise UserError(f"max_retries must not be negative, got {max_retries}")
        try:
            self.base_urls = server_urls(base_url)
        except ValueError as exc:
            raise UserError(f"base_url: {exc}") from None
        self.base_url = self.base_urls[0]
        self.model = model or ""
        self.max_retries = max_retries
        self.backoff = DEFAULT_BACKOFF if backoff is None else backoff
        self.send_seed = send_seed
        self.usage_per_chunk = usage_per_chunk
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.max_response_bytes = max_response_bytes
        self._timeout = httpx.Timeout(request_timeout, connect=min(request_timeout, CONNECT_TIMEOUT), pool=None)
        self.pool = ServerPool(self.base_urls, headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                               timeout=self._timeout, transport=transport, max_retries=max_retries,
                               backoff=self.backoff, max_response_bytes=max_response_bytes,
                               cooldown=server_cooldown, clock=clock)
        self.pool.probe_check = self._probe_check
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked = False
        self._model_listed = True  # whether the servers list the model (False: served under another name)

    def _bind_loop(self) -> None:
        """Semaphores (and the pool's HTTP client) belong to one event loop; make fresh ones when the loop
        changes (each `tts.solve()` call runs its own loop)."""
        self.pool.bind()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._limit = asyncio.Semaphore(self.concurrency)
            self._check_lock = asyncio.Lock()

    async def _models(self, i: int) -> list[str] | BackendError:
        """The model ids server i lists (GET /models), or the error that says why it cannot be asked."""
        try:
            resp = await self.pool.request("GET", "/models", retries=min(self.max_retries, 2), parse=model_list,
                                           server=i)
        except BackendError as exc:
            return exc
        return [m["id"] for m in resp["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def check(self) -> None:
        """Fail fast with the URL if the server is unreachable; pick the served model if none was named.
        Several servers: each is asked; one that cannot be reached is taken out (a warning) while the others
        serve, none reachable is a UserError, and all that answer must serve the same model."""
        self._bind_loop()
        urls = self.base_urls
        answers = await asyncio.gather(*(self._models(i) for i in range(len(urls))))
        if len(urls) == 1 and isinstance(answers[0], BackendError):
            raise UserError(f"cannot reach the OpenAI-compatible server at {urls[0]} ({answers[0]})")
        up = [i for i, a in enumerate(answers) if not isinstance(a, BackendError)]
        if not up:
            raise UserError(f"cannot reach any of the {len(urls)} OpenAI-compatible servers: "
                            + "; ".join(f"{u} ({a})" for u, a in zip(urls, answers)))
        for i, answer in enumerate(answers):
            if isinstance(answer, BackendError):
                log.warning("server %s cannot be reached (%s); going on with the other %d", urls[i], answer, len(up))
                self.pool.take_out(i, str(answer))
        served = {i: a for i, a in enumerate(answers) if not isinstance(a, BackendError)}
        first = up[0]
        if not self.model:
            if not served[first]:
                raise UserError(f"the server at {urls[first]} serves no model (GET {urls[first]}/models)")
            self.model = served[first][0]
        listing = [i for i in up if self.model in served[i]]
        if listing and len(listing) < len(up):
            missing = "; ".join(f"{urls[i]} serves {served[i]}" for i in up if i not in listing)
            raise UserError(f"the servers do not serve the same model: {', '.join(urls[i] for i in listing)} "
                            f"serve {self.model!r}, but {missing}")
        self._model_listed = bool(listing)
        self._checked = True

    def _probe_check(self, ids: list[str]) -> str | None:
        """Whether a server taken out may rejoin, by the model ids it lists now."""
        if not self._model_listed or self.model in ids:
            return None
        return f"it now serves {ids}, not {self.model!r}"

    async def _one(self, req: GenerationRequest) -> list[Sample]:
        path, payload = build_payload(req, self.model, self.send_seed)
        chat = path == "/chat/completions"
        async with self._limit:
            return await self.pool.request(
                "POST", path, payload, key=affinity_key(req) if self.pool.several else None,
                parse=lambda body: read_samples(body, chat, req.sampling.logprobs, req.sampling.top_logprobs))

    _samples = staticmethod(read_samples)

    async def _ready(self) -> None:
        self._bind_loop()
        if not self._checked:
            async with self._check_lock:
                if not self._checked:
                    await self.check()

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        await self._ready()
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def generate_watched(self, requests: list[GenerationRequest], watchers: list[Watcher]) -> list[Sample]:
        """Each request streamed (`"stream": true`); a stopped one's response is closed, which makes vllm
        serve abort it. Its sample holds the tokens received up to the stop (`openai_stream.py`)."""
        check_watched(requests, watchers)
        await self._ready()
        return list(await asyncio.gather(*(self._watched_one(r, w) for r, w in zip(requests, watchers))))

    async def _watched_one(self, req: GenerationRequest, watcher: Watcher) -> Sample:
        path, payload = build_payload(req, self.model, self.send_seed)
        options = STREAM_OPTIONS if self.usage_per_chunk else {"include_usage": True}
        payload.update(stream=True, stream_options=options)
        start, attempts = copy.deepcopy(watcher), 0

        async def read(resp: httpx.Response) -> Sample:
            nonlocal attempts
            if attempts:  # the whole sample again: the watcher forgets the broken attempt's tokens
                restart_watcher(watcher, start)
            attempts += 1
            acc = StreamAccumulator(watcher, chat=path == "/chat/completions", top_k=req.sampling.top_logprobs)
            return await read_stream(resp, acc, self.max_response_bytes)

        async with self._limit:
            return await self.pool.request("POST", path, payload, read=read,
                                           key=affinity_key(req) if self.pool.several else None)

    async def _identity(self, i: int) -> dict[str, Any] | BackendError:
        """Server i's description of the model in use, or why it cannot be asked."""
        try:
            resp = await self.pool.request("GET", "/models", retries=min(self.max_retries, 2), server=i)
        except BackendError as exc:
            return exc
        data = resp.get("data") if isinstance(resp, dict) else None
        entries = [m for m in (data if isinstance(data, list) else []) if isinstance(m, dict)]
        identity: dict[str, Any] = {"backend": self.name, "model": self.model}
        mine = next((m for m in entries if m.get("id") == self.model), None)
        if mine is None:  # served under an alias: what the server lists instead
            identity["served_models"] = sorted(str(m.get("id")) for m in entries)
        else:
            identity.update({k: mine[k] for k in ("owned_by", "root", "parent", "version") if mine.get(k) is not None})
        return identity

    async def served_identity(self) -> dict[str, Any]:
        """The model in use as GET /models describes it: its id, and owned_by/root/parent/version where given.
        Several servers: the same for each one in service (no URL in it, so a run resumes on other servers);
        servers that describe it differently are a UserError naming them."""
        if not self._checked:
            await self.check()
        self._bind_loop()
        asked = self.pool.table.healthy
        answers = await asyncio.gather(*(self._identity(i) for i in asked))
        if len(self.base_urls) == 1 and isinstance(answers[0], BackendError):
            raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({answers[0]})")
        got = {self.base_urls[i]: a for i, a in zip(asked, answers) if not isinstance(a, BackendError)}
        for i, answer in zip(asked, answers):
            if isinstance(answer, BackendError):
                log.warning("server %s cannot be asked what it serves (%s)", self.base_urls[i], answer)
        if not got:
            raise UserError("cannot reach any of the OpenAI-compatible servers: "
                            + "; ".join(f"{self.base_urls[i]} ({a})" for i, a in zip(asked, answers)))
        kinds = {json.dumps(v, sort_keys=True) for v in got.values()}
        if len(kinds) > 1:
            raise UserError("the servers describe the model differently: "
                            + "; ".join(f"{url}: {json.dumps(v, sort_keys=True)}" for url, v in got.items()))
        return next(iter(got.values()))

    def server_stats(self) -> list[dict[str, Any]]:
        """Per server, in the order given: url, healthy, sent, failures, taken_out, rejoined, outstanding,
        last_fault (also logged when the backend is closed, for several servers)."""
        return self.pool.table.stats()

    async def aclose(self) -> None:
        await self.pool.aclose()
        self._loop = None

    def info(self) -> dict[str, Any]:
        if len(self.base_urls) == 1:
            return {"backend": self.name, "model": self.model, "base_url": self.base_url}
        return {"backend": self.name, "model": self.model, "base_urls": list(self.base_urls)}
