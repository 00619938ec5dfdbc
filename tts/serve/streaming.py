"""`stream: true`: Server-Sent Events in OpenAI's chunk format.

Order: a first chunk (chat: the assistant role), progress chunks while the search runs (only with
`tts.progress`: empty delta, `tts.progress` = backend calls finished, samples, tokens, seconds), the
chosen text in one content chunk, a finish chunk (finish_reason and the `tts` extension), a usage chunk
(empty `choices`) when `stream_options.include_usage`, then `data: [DONE]`. A failure after the status
went out is an `{"error": ...}` event (the openai client raises it). A client that leaves cancels the
search: the generator is cancelled (or notices the disconnect itself) and cancels the search task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from tts.serve.respond import chosen_text, chunk, extension, openai_usage
from tts.serve.search import Search, error_event, log


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def events(search: Search, request: Request, kind: str, model: str, include_usage: bool,
                 poll: float) -> AsyncIterator[str]:
    rid, plan, proxy = search.id, search.plan, search.proxy
    try:
        yield _event(chunk(kind, rid, model, role=True, content=""))
        shown = 0  # backend calls already reported
        while not search.task.done():
            proxy.changed.clear()
            changed = asyncio.ensure_future(proxy.changed.wait())
            try:
                await asyncio.wait({search.task, changed}, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if await request.is_disconnected():
                log.info("client of %s disconnected; cancelling its search", rid)
                await search.cancel()
                return
            if plan.progress and proxy.calls != shown and not search.task.done():
                shown = proxy.calls
                yield _event(chunk(kind, rid, model, tts={"progress": proxy.progress()}))
        if search.task.cancelled():
            return
        if search.task.exception() is not None:
            yield _event(error_event(search.failure()))
            return
        result = search.task.result()
        if plan.progress:  # the last counts, so a client sees the totals it is billed for
            yield _event(chunk(kind, rid, model, tts={"progress": proxy.progress()}))
        text, finish, _ = chosen_text(result)
        yield _event(chunk(kind, rid, model, content=text))
        yield _event(chunk(kind, rid, model, finish=finish, tts=extension(result, plan)))
        if include_usage:
            yield _event(chunk(kind, rid, model, choices=False, usage=openai_usage(result.usage)))
        yield "data: [DONE]\n\n"
    finally:  # the client left (generator closed or cancelled) or an error: never leave a search running
        await search.cancel()
