"""HTTP client for any OpenAI-compatible server (vllm serve, SGLang, llama.cpp server).

Text prompts go to `/completions`; chat prompts to `/chat/completions`, so the server applies its own
chat template. Requests are sent concurrently up to a limit; connection errors, 429 and 5xx are
retried with exponential backoff and jitter; a server that never answers is reported by URL.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from tts.backends.base import Backend
from tts.errors import BackendError, UserError
from tts.types import GenerationRequest, Sample, SamplingConfig

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend(Backend):
    name = "openai"
    description = "HTTP client for an OpenAI-compatible completions server (vllm serve, SGLang, llama.cpp)"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        concurrency: int = 64,
        max_retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 600.0,
        send_seed: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model or ""
        self.max_retries = max_retries
        self.backoff = backoff
        self.send_seed = send_seed
        self.concurrency = concurrency
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
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
            resp = await self._request("GET", "/models", retries=min(self.max_retries, 2))
        except BackendError as exc:
            raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({exc})") from None
        served = [m.get("id") for m in resp.get("data", [])]
        if not self.model:
            if not served:
                raise UserError(f"the server at {self.base_url} serves no model")
            self.model = served[0]
        self._checked = True

    async def _request(self, method: str, path: str, payload: dict | None = None, retries: int | None = None) -> dict:
        retries = self.max_retries if retries is None else retries
        last: str = ""
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
            try:
                resp = await self._client.request(method, path, json=payload)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                raise BackendError(f"{self.base_url}{path} answered HTTP {resp.status_code}: {resp.text[:500]}")
            return resp.json()
        raise BackendError(f"{self.base_url}{path} failed after {retries + 1} attempts: {last}")

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
            if cfg.logprobs:
                payload["logprobs"] = 0
            return "/completions", payload
        payload["messages"] = [m.model_dump() for m in req.prompt]
        if req.continuation:  # vLLM's server extension: continue the open assistant turn
            payload["messages"].append({"role": "assistant", "content": req.continuation})
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        if cfg.logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = 0
        return "/chat/completions", payload

    @staticmethod
    def _samples(body: dict, chat: bool, want_logprobs: bool) -> list[Sample]:
        usage = body.get("usage") or {}
        choices = sorted(body.get("choices", []), key=lambda c: c.get("index", 0))
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        total_completion = int(usage.get("completion_tokens") or 0)
        samples = []
        for choice in choices:
            token_lps: list[float] | None = None
            lp = choice.get("logprobs")
            if want_logprobs and lp:
                if chat:
                    token_lps = [float(t["logprob"]) for t in lp.get("content") or []]
                else:
                    token_lps = [float(x) for x in lp.get("token_logprobs") or [] if x is not None]
            text = choice["message"]["content"] if chat else choice["text"]
            count = len(token_lps) if token_lps is not None else None
            samples.append(
                Sample(
                    text=text or "",
                    token_count=count if count is not None else total_completion // max(len(choices), 1),
                    logprob_sum=sum(token_lps) if token_lps is not None else None,
                    token_logprobs=token_lps,
                    finish_reason=choice.get("finish_reason"),
                    stop_reason=choice.get("stop_reason"),
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached,
                )
            )
        return samples

    async def _one(self, req: GenerationRequest) -> list[Sample]:
        path, payload = self._payload(req)
        async with self._limit:
            body = await self._request("POST", path, payload)
        return self._samples(body, path == "/chat/completions", req.sampling.logprobs)

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        self._bind_loop()
        if not self._checked:
            async with self._check_lock:
                if not self._checked:
                    await self.check()
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

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
