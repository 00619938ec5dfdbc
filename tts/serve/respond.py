"""A search's `Result` as an OpenAI response body (chat.completion or text_completion, or their chunks).

`usage` counts every token the search spent, generation and scoring alike (prompt = generator prompt +
scorer prompt, completion = generator completion + scorer completion): a client billing by usage pays for
the whole search, not only the answer it sees. The full tts `Usage` rides in the `tts` extension field.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from tts.serve.plan import Plan
from tts.types import Result, Usage


def openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.prompt_tokens + usage.scorer_prompt_tokens
    completion = usage.completion_tokens + usage.scorer_completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens + usage.scorer_cached_tokens}}


def chosen_text(result: Result) -> tuple[str, str, str | None]:
    """(text, finish_reason, why nothing was chosen or None)."""
    if result.chosen is None:
        invalid = sum(c.answer is None for c in result.candidates)
        why = (f"the strategy chose no candidate: {len(result.candidates)} candidates, {invalid} of them without "
               "an answer the task could extract")
        return "", "stop", why
    candidate = result.candidates[result.chosen]
    return candidate.text, "length" if candidate.finish_reason == "length" else "stop", None


def _json(model: Any) -> Any:
    """JSON-safe data (NaN and infinities as null) from a pydantic model's own serialiser."""
    return json.loads(model.model_dump_json())


def json_safe(value: Any) -> Any:
    """Plain JSON: NaN and infinities as null, tuples as lists, anything else unknown as its repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    if hasattr(value, "model_dump"):
        return json_safe(value.model_dump(mode="python"))
    return repr(value)


def extension(result: Result, plan: Plan) -> dict[str, Any]:
    """The response's `tts` field: always the answer, confidence, strategy and options; candidates and
    the strategy's info only when the request's `tts.include` asked."""
    _, _, why = chosen_text(result)
    ext: dict[str, Any] = {"answer": result.answer, "confidence": result.confidence, "chosen": result.chosen,
                           "strategy": plan.strategy_name, "options": plan.options(),
                           "scorers": [s.identity() for s in plan.scorers], "seed": plan.seed,
                           "usage": _json(result.usage)}
    if why is not None:
        ext["reason"] = why
    if "candidates" in plan.include:
        ext["candidates"] = [{**json.loads(c.model_dump_json(exclude={"trace"})), "chosen": i == result.chosen,
                              "group": c.info.get("group")} for i, c in enumerate(result.candidates)]
    if "info" in plan.include:
        ext["info"] = json_safe(result.info)
    return ext


def completion_body(kind: str, request_id: str, model: str, result: Result, plan: Plan) -> dict[str, Any]:
    """The whole (non-streamed) answer."""
    text, finish, _ = chosen_text(result)
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish, "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model, "choices": [choice],
            "usage": openai_usage(result.usage), "tts": extension(result, plan)}


def chunk(kind: str, request_id: str, model: str, *, content: str | None = None, role: bool = False,
          finish: str | None = None, choices: bool = True, **extra: Any) -> dict[str, Any]:
    """One streamed chunk; `choices=False` is the usage-only chunk (an empty choices list)."""
    if kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if content is not None:
            delta["content"] = content
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": content or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice] if choices else [], **extra}
