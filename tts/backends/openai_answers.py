"""Reading an OpenAI-compatible server's answers: bodies, JSON, choices, faults, as the HTTP client needs.

Why a module of its own: `openai.py` decides where and how often a request is sent (retries, several
servers); everything here only turns one answer (or one transport fault) into samples or into the one
line that says what was wrong with it. `MalformedAnswer` marks an answer that cannot be used; the client
retries it like a 5xx.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any

import httpx

from tts.backends.openai_stream import MalformedAnswer, no_top_logprobs, one_line
from tts.backends.openai_stream import top_k as _top_k
from tts.types import GenerationRequest, Sample, SamplingConfig

MAX_RETRY_AFTER = 120.0  # a server's Retry-After is honoured up to this many seconds


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


def retry_after(resp: httpx.Response) -> float | None:
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


def transport_fault(exc: httpx.RequestError, timeouts: httpx.Timeout) -> str:
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


def model_list(body: dict[str, Any]) -> dict[str, Any]:
    """GET /models: an object whose `data` is a list."""
    if not isinstance(body.get("data"), list):
        raise MalformedAnswer("a model list without a `data` list")
    return body


async def read_body(resp: httpx.Response, limit: int, truncate: bool = False) -> bytes:
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


def build_payload(req: GenerationRequest, model: str, send_seed: bool) -> tuple[str, dict[str, Any]]:
    """The endpoint and JSON body of one request (text: /completions, chat: /chat/completions)."""
    cfg: SamplingConfig = req.sampling
    payload: dict[str, Any] = {
        "model": model,
        "n": cfg.n,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.max_tokens,
    }
    if cfg.stop:
        payload["stop"] = list(cfg.stop)
    if cfg.min_tokens:
        payload["min_tokens"] = cfg.min_tokens  # vLLM's server extension
    if cfg.seed is not None and send_seed:
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


def read_samples(body: dict, chat: bool, want_logprobs: bool, top_k: int = 0) -> list[Sample]:
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
        return _read_choices(body, choices, chat, want_logprobs or bool(top_k), top_k)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"unreadable usage or logprobs ({type(exc).__name__}: {one_line(str(exc), 100)})") \
            from None


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
