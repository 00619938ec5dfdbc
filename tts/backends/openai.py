"""HTTP client for any OpenAI-compatible server (vllm serve, SGLang, llama.cpp server).

Text prompts go to `/completions`; chat prompts to `/chat/completions`, so the server applies its own
chat template. Requests are sent concurrently up to a limit. Faults are retried with exponential
backoff and jitter: connection errors and resets, timeouts, 408/409/429/5xx (a Retry-After header is
honoured), and answers that cannot be used (not JSON, JSON cut off, an HTML page with status 200, no
choices, a choice without text, larger than `max_response_bytes`). When the retries are spent the
error is one line naming the URL, what went wrong on the last attempt and how many attempts were
made. A server that answers with fewer choices than `n` gets what it returned passed on (the base
class asks again for the missing samples).

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
import email.utils
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import Field

from tts.backends.base import Backend, BackendOptions, Watcher, check_watched
from tts.backends.openai_stream import (
    STREAM_OPTIONS,
    MalformedAnswer,
    StreamAccumulator,
    no_top_logprobs,
    one_line,
    read_stream,
    restart_watcher,
)
from tts.backends.openai_stream import top_k as _top_k
from tts.errors import BackendError, UserError
from tts.types import GenerationRequest, Sample, SamplingConfig

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
DEFAULT_REQUEST_TIMEOUT = 300.0  # seconds one attempt waits for its answer (`tts eval --request-timeout`)
CONNECT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF = 0.5  # first retry after about this many seconds, doubling each time
MAX_RETRY_AFTER = 120.0  # a server's Retry-After is honoured up to this many seconds
DEFAULT_MAX_RESPONSE_BYTES = 256 * 2**20


def _describe_body(body: bytes, content_type: str) -> str:
    kind = content_type.split(";")[0].strip() or "no content-type"
    return f"{kind}, {len(body)} bytes: {one_line(body[:400].decode('utf-8', 'replace'), 80)!r}"


def parse_json_object(body: bytes, content_type: str) -> dict[str, Any]:
    """The answer's JSON object; MalformedAnswer saying what is wrong with it otherwise."""
    if not body.strip():
        raise MalformedAnswer(f"an empty body ({content_type.split(';')[0].strip() or 'no content-type'})")
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise MalformedAnswer(f"a body that is not UTF-8 text ({_describe_body(body, content_type)})") from None
    except json.JSONDecodeError as exc:
        stripped = body.strip()
        if stripped[:1] in (b"{", b"[") and exc.pos >= len(body.rstrip()) - 1:
            raise MalformedAnswer(f"JSON cut off after {len(body)} bytes ({exc.msg})") from None
        raise MalformedAnswer(f"a body that is not JSON ({_describe_body(body, content_type)})") from None
    if not isinstance(value, dict):
        raise MalformedAnswer(f"JSON that is not an object (a {type(value).__name__})")
    return value


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds a 429/503 answer asks to wait (Retry-After: seconds or an HTTP date), if it says."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def _transport_fault(exc: httpx.RequestError, timeouts: httpx.Timeout) -> str:
    detail = one_line(str(exc), 100)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connecting timed out after {timeouts.connect:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no answer within {timeouts.read:g} s (read timeout; see --request-timeout)"
    if isinstance(exc, httpx.WriteTimeout):
        return f"sending the request timed out after {timeouts.write:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({detail or type(exc).__name__})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server closed the connection without a complete answer ({detail or type(exc).__name__})"
    if isinstance(exc, httpx.ReadError):
        return f"the connection broke while reading the answer ({detail or 'reset by the server'})"
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _model_list(body: dict[str, Any]) -> dict[str, Any]:
    """GET /models: an object whose `data` is a list."""
    if not isinstance(body.get("data"), list):
        raise MalformedAnswer("a model list without a `data` list")
    return body


class OpenAIOptions(BackendOptions):
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's URL (`--base-url`)")
    api_key: str | None = Field(None, description="sent as a bearer token")
    concurrency: int = Field(64, ge=1, description="requests in flight at once")
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, description="retries of a failed request (`--max-retries`)")
    backoff: float = Field(DEFAULT_BACKOFF, ge=0, description="seconds before the first retry (doubling each time)")
    request_timeout: float = Field(DEFAULT_REQUEST_TIMEOUT, gt=0, allow_inf_nan=False,
                                   description="seconds one attempt waits for its answer (`--request-timeout`)")
    max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, ge=1, description="larger answers are faults")
    send_seed: bool = Field(True, description="send each request's seed to the server")
    usage_per_chunk: bool = Field(True, description="streamed (watched) samples: ask for the usage on every chunk "
                                  "(vllm serve's continuous_usage_stats, so a stopped sample knows its prompt "
                                  "tokens); off for servers that refuse unknown stream options")

    outside_identity = frozenset({"base_url", "api_key", "concurrency", "max_retries", "backoff", "request_timeout",
                             "max_response_bytes", "usage_per_chunk"})


class OpenAIBackend(Backend):
    name = "openai"
    description = "HTTP client for an OpenAI-compatible completions server (vllm serve, SGLang, llama.cpp)"
    Options = OpenAIOptions

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        concurrency: int = 64,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float | None = None,
        request_timeout: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        send_seed: bool = True,
        usage_per_chunk: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        request_timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else float(request_timeout)
        if not (math.isfinite(request_timeout) and request_timeout > 0):
            raise UserError(f"the request timeout must be a positive number of seconds, got {request_timeout}")
        if max_retries < 0:
            raise UserError(f"max_retries must not be negative, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model or ""
        self.max_retries = max_retries
        self.backoff = DEFAULT_BACKOFF if backoff is None else backoff
        self.send_seed = send_seed
        self.usage_per_chunk = usage_per_chunk
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.max_response_bytes = max_response_bytes
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(request_timeout, connect=min(request_timeout, CONNECT_TIMEOUT), pool=None)
        self._transport = transport  # tests inject httpx.MockTransport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked = False

    def _bind_loop(self) -> None:
        """HTTP clients and semaphores belong to one event loop; make fresh ones when the loop changes
        (each `tts.solve()` call runs its own loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout,
                                             transport=self._transport)
            self._limit = asyncio.Semaphore(self.concurrency)
            self._check_lock = asyncio.Lock()

    async def check(self) -> None:
        """Fail fast with the URL if the server is unreachable; pick the served model if none was named."""
        self._bind_loop()
        try:
            resp = await self._request("GET", "/models", retries=min(self.max_retries, 2), parse=_model_list)
        except BackendError as exc:
            raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({exc})") from None
        served = [m["id"] for m in resp["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if not self.model:
            if not served:
                raise UserError(f"the server at {self.base_url} serves no model (GET {self.base_url}/models)")
            self.model = served[0]
        self._checked = True

    @staticmethod
    async def _read_body(resp: httpx.Response, limit: int, truncate: bool = False) -> bytes:
        """The body, at most `limit` bytes: beyond that MalformedAnswer (or, with `truncate`, the first
        `limit` bytes: an error page is only quoted)."""
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                if truncate:
                    chunks.append(chunk[: limit - size])
                    break
                raise MalformedAnswer(f"a body larger than {limit / 2**20:g} MiB (stopped reading)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _request(self, method: str, path: str, payload: dict | None = None, retries: int | None = None,
                       parse: Callable[[dict[str, Any]], Any] | None = None,
                       read: Callable[[httpx.Response], Awaitable[Any]] | None = None) -> Any:
        """The answer's JSON object (passed through `parse`, which raises MalformedAnswer for an unusable
        one), or what `read` makes of a successful response (a stream); every fault is retried up to
        `retries` times, then BackendError names URL, fault and attempts."""
        retries = self.max_retries if retries is None else retries
        url = f"{self.base_url}{path}"
        last, wait = "", 0.0
        for attempt in range(retries + 1):
            if attempt:
                backoff = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                await asyncio.sleep(max(backoff, wait))
            wait = 0.0
            try:
                async with self._client.stream(method, path, json=payload) as resp:
                    if resp.status_code in RETRY_STATUS:
                        wait = _retry_after(resp) or 0.0
                        text = (await self._read_body(resp, 4096, truncate=True)).decode("utf-8", "replace")
                        last = f"HTTP {resp.status_code}: {one_line(text, 200)}" + (
                            f" (Retry-After {wait:g} s)" if wait else "")
                        continue
                    if resp.status_code >= 400:
                        text = (await self._read_body(resp, 4096, truncate=True)).decode("utf-8", "replace")
                        raise BackendError(f"{url} answered HTTP {resp.status_code}: {one_line(text, 500)}")
                    if read is not None:
                        return await read(resp)
                    body = await self._read_body(resp, self.max_response_bytes)
                    value = parse_json_object(body, resp.headers.get("content-type", ""))
                    return parse(value) if parse is not None else value
            except MalformedAnswer as exc:
                last = f"the server answered with {exc}"
            except httpx.RequestError as exc:
                last = _transport_fault(exc, self._timeout)
        raise BackendError(f"{url} failed after {retries + 1} attempts: {last}")

    def _payload(self, req: GenerationRequest) -> tuple[str, dict[str, Any]]:
        cfg: SamplingConfig = req.sampling
        payload: dict[str, Any] = {
            "model": self.model,
            "n": cfg.n,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
        }
        if cfg.stop:
            payload["stop"] = list(cfg.stop)
        if cfg.min_tokens:
            payload["min_tokens"] = cfg.min_tokens  # vLLM's server extension
        if cfg.seed is not None and self.send_seed:
            payload["seed"] = cfg.seed
        if isinstance(req.prompt, str):
            payload["prompt"] = req.prompt + req.continuation
            if cfg.logprobs or cfg.top_logprobs:
                payload["logprobs"] = cfg.top_logprobs
            return "/completions", payload
        payload["messages"] = [m.model_dump() for m in req.prompt]
        if req.continuation:  # vLLM's server extension: continue the open assistant turn
            payload["messages"].append({"role": "assistant", "content": req.continuation})
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        if cfg.logprobs or cfg.top_logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = cfg.top_logprobs
        return "/chat/completions", payload

    @staticmethod
    def _samples(body: dict, chat: bool, want_logprobs: bool, top_k: int = 0) -> list[Sample]:
        """The choices as Samples; MalformedAnswer (retried) when there are none or one cannot be read.
        Fewer choices than asked for are returned as they are (the base class asks again for the rest)."""
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MalformedAnswer("no choices" if choices in (None, []) else
                                  f"`choices` that is not a list (a {type(choices).__name__})")
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise MalformedAnswer(f"choice {i} that is not an object (a {type(choice).__name__})")
            if chat:
                message = choice.get("message")
                if not isinstance(message, dict) or not isinstance(message.get("content", ""), (str, type(None))):
                    raise MalformedAnswer(f"choice {i} without a message with text content")
            elif not isinstance(choice.get("text"), str):
                raise MalformedAnswer(f"choice {i} without a text field")
        try:
            return OpenAIBackend._read_choices(body, choices, chat, want_logprobs or bool(top_k), top_k)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedAnswer(f"unreadable usage or logprobs ({type(exc).__name__}: {one_line(str(exc), 100)})") \
                from None

    @staticmethod
    def _read_choices(body: dict, choices: list[dict], chat: bool, want_logprobs: bool,
                      top_k: int = 0) -> list[Sample]:
        usage = body.get("usage") or {}
        choices = sorted(choices, key=lambda c: c.get("index") or 0)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        total_completion = int(usage.get("completion_tokens") or 0)
        samples = []
        for choice in choices:
            token_lps: list[float] | None = None
            top: list[dict[str, float]] | None = None
            tokens: list[str] | None = None
            lp = choice.get("logprobs")
            if want_logprobs and lp:
                if chat:
                    token_lps = [float(t["logprob"]) for t in lp.get("content") or []]
                    tokens = [str(t.get("token", "")) for t in lp.get("content") or []]
                else:
                    token_lps = [float(x) for x in lp.get("token_logprobs") or [] if x is not None]
                    tokens = [str(t) for t in lp["tokens"]] if isinstance(lp.get("tokens"), list) else None
            if top_k and lp:
                if chat:
                    top = [_top_k({e["token"]: e["logprob"] for e in t.get("top_logprobs") or []}, top_k)
                           for t in lp.get("content") or []]
                else:
                    top = [_top_k(d or {}, top_k) for d in lp.get("top_logprobs") or []]
                if not any(top):
                    top = None
            if top_k and top is None:  # a server that ignores the request would ignore it again: not retried
                raise no_top_logprobs(top_k)
            text = choice["message"].get("content") if chat else choice["text"]
            count = len(token_lps) if token_lps is not None else None
            samples.append(
                Sample(
                    text=text or "",
                    token_count=count if count is not None else total_completion // max(len(choices), 1),
                    logprob_sum=sum(token_lps) if token_lps is not None else None,
                    token_logprobs=token_lps,
                    top_logprobs=top,
                    tokens=tokens if tokens is not None and len(tokens) == len(token_lps or []) else None,
                    finish_reason=choice.get("finish_reason"),
                    stop_reason=choice.get("stop_reason"),
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached,
                )
            )
        return samples

    async def _one(self, req: GenerationRequest) -> list[Sample]:
        path, payload = self._payload(req)
        chat = path == "/chat/completions"
        async with self._limit:
            return await self._request("POST", path, payload,
                                       parse=lambda body: self._samples(body, chat, req.sampling.logprobs,
                                                                         req.sampling.top_logprobs))

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
        path, payload = self._payload(req)
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
            return await self._request("POST", path, payload, read=read)

    async def served_identity(self) -> dict[str, Any]:
        """The model in use as GET /models describes it: its id, and owned_by/root/parent/version where given."""
        if not self._checked:
            await self.check()
        self._bind_loop()
        try:
            resp = await self._request("GET", "/models", retries=min(self.max_retries, 2))
        except BackendError as exc:
            raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({exc})") from None
        data = resp.get("data") if isinstance(resp, dict) else None
        entries = [m for m in (data if isinstance(data, list) else []) if isinstance(m, dict)]
        identity: dict[str, Any] = {"backend": self.name, "model": self.model}
        mine = next((m for m in entries if m.get("id") == self.model), None)
        if mine is None:  # served under an alias: what the server lists instead
            identity["served_models"] = sorted(str(m.get("id")) for m in entries)
        else:
            identity.update({k: mine[k] for k in ("owned_by", "root", "parent", "version") if mine.get(k) is not None})
        return identity

    async def aclose(self) -> None:
        if self._loop is not None:
            await self._client.aclose()
            self._loop = None

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}


