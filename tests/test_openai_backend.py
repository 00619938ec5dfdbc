"""OpenAI-compatible client against scripted HTTP transports: payloads, parsing, retries, clear errors."""

import json

import httpx
import pytest

from tts.backends.openai import OpenAIBackend
from tts.errors import BackendError, UserError
from tts.types import ChatMessage, GenerationRequest, SamplingConfig

MODELS = {"data": [{"id": "served-model"}]}


def completion_body(n):
    return {
        "choices": [{"index": i, "text": f"text {i}", "finish_reason": "stop",
                     "logprobs": {"token_logprobs": [-0.5, -1.5]}} for i in range(n)],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2 * n, "prompt_tokens_details": {"cached_tokens": 4}},
    }


def chat_body(n):
    return {
        "choices": [{"index": i, "message": {"role": "assistant", "content": f"chat {i}"}, "finish_reason": "length",
                     "logprobs": {"content": [{"token": "a", "logprob": -0.25}] * 3}} for i in range(n)],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3 * n},
    }


def make(handler, **kw):
    return OpenAIBackend(base_url="http://testserver/v1", transport=httpx.MockTransport(handler), backoff=0.01, **kw)


async def test_completions_and_chat_payloads_and_parsing():
    seen = []

    def handler(request: httpx.Request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        payload = json.loads(request.content)
        seen.append((request.url.path, payload))
        body = chat_body(payload["n"]) if "messages" in payload else completion_body(payload["n"])
        return httpx.Response(200, json=body)

    backend = make(handler)
    cfg = SamplingConfig(n=2, temperature=0.5, max_tokens=16, stop=("\n\n",), seed=3)
    text_req = GenerationRequest(prompt="Q: 1+1?", sampling=cfg)
    chat_req = GenerationRequest(prompt=[ChatMessage(role="user", content="hi")], sampling=cfg)
    text_out, chat_out = await backend.generate([text_req, chat_req])
    await backend.aclose()

    assert backend.model == "served-model"  # picked from /models
    paths = sorted(p for p, _ in seen)
    assert paths == ["/v1/chat/completions", "/v1/completions"]
    payload = dict(seen)["/v1/completions"]
    assert payload["n"] == 2 and payload["stop"] == ["\n\n"] and payload["logprobs"] == 0 and payload["seed"] == 3
    assert [s.text for s in text_out] == ["text 0", "text 1"]
    assert text_out[0].token_count == 2 and text_out[0].logprob_sum == pytest.approx(-2.0)
    assert text_out[0].mean_logprob == pytest.approx(-1.0)
    assert text_out[0].prompt_tokens == 7 and text_out[0].cached_tokens == 4
    assert chat_out[1].text == "chat 1" and chat_out[1].token_count == 3 and chat_out[1].finish_reason == "length"


async def test_retries_on_429_5xx_and_connection_errors():
    attempts = {"n": 0}

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise httpx.ConnectError("refused")
        if attempts["n"] == 2:
            return httpx.Response(429, text="slow down")
        if attempts["n"] == 3:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json=completion_body(1))

    backend = make(handler)
    (out,) = await backend.generate([GenerationRequest(prompt="x")])
    assert attempts["n"] == 4 and out[0].text == "text 0"


async def test_gives_up_after_retries_naming_the_url():
    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        return httpx.Response(500, text="boom")

    backend = make(handler, max_retries=2)
    with pytest.raises(BackendError, match="http://testserver/v1/completions failed after 3 attempts"):
        await backend.generate([GenerationRequest(prompt="x")])


async def test_client_error_is_not_retried():
    calls = {"n": 0}

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        calls["n"] += 1
        return httpx.Response(400, text="bad request: max_tokens too large")

    backend = make(handler)
    with pytest.raises(BackendError, match="HTTP 400"):
        await backend.generate([GenerationRequest(prompt="x")])
    assert calls["n"] == 1


async def test_unreachable_server_is_a_clear_user_error():
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1", backoff=0.01, request_timeout=2)
    with pytest.raises(UserError, match=r"cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1"):
        await backend.generate([GenerationRequest(prompt="x")])


async def test_concurrency_limit_is_respected():
    import asyncio

    active = {"now": 0, "max": 0}

    async def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.02)
        active["now"] -= 1
        return httpx.Response(200, json=completion_body(1))

    backend = make(handler, concurrency=3)
    out = await backend.generate([GenerationRequest(prompt=f"p{i}") for i in range(12)])
    assert len(out) == 12 and active["max"] == 3
