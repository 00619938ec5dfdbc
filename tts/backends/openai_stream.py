"""A streamed completion (server-sent events) from an OpenAI-compatible server, read chunk by chunk.

Why: a watched sample (`Backend.generate_watched`, DeepConf's online mode) must be stoppable while the
server generates it. With `"stream": true` every chunk carries the newest tokens and their top-k
log-probabilities, so the watcher sees each token's confidence as it comes; when it says stop the client
closes the response, and vllm serve aborts a request whose client disconnected. The sample then holds the
tokens received up to and including the stopping chunk (the server may have generated a few more before
it noticed the disconnect; those are not counted, since they never arrived).

`StreamAccumulator` adds up the chunks of one sample (n = 1) and feeds the watcher; `read_stream` drives it
from an HTTP response. Anything unusable in the stream (a line that is not an event, a chunk that is not
JSON or lacks its fields, `[DONE]` before the sample finished, an error object) is `MalformedAnswer`, which
the backend retries like a 5xx by generating the whole sample again.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from tts.backends.base import ABORTED, Watcher
from tts.confidence import token_confidence
from tts.errors import BackendError
from tts.types import Sample

# `continuous_usage_stats` (a vllm serve extension, ignored elsewhere) puts the usage on every chunk, so a
# sample stopped before the final usage chunk still knows its prompt's token count.
STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}


# One generated token: its text (None where not reported), its log-probability, its top-k alternatives.
Entry = tuple[str | None, float, dict[str, float]]


class MalformedAnswer(Exception):
    """The server answered, but not with something usable (retried like a 5xx)."""


def one_line(text: str, limit: int = 160) -> str:
    """A server's text for an error message: one line, at most `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def top_k(entries: dict[str, Any], k: int) -> dict[str, float]:
    """The k most likely tokens of one position, most likely first (servers add the sampled one)."""
    ranked = sorted(((str(t), float(v)) for t, v in entries.items()), key=lambda e: -e[1])
    return dict(ranked[:k])


def no_top_logprobs(k: int) -> BackendError:
    """A server that ignores the request for top log-probabilities would ignore it again: not retried."""
    return BackendError(f"the server returned no top log-probabilities although {k} were asked for (does it "
                        "support them? vllm serve allows up to --max-logprobs, default 20)")


def restart_watcher(watcher: Watcher, start: Watcher) -> None:
    """Put `watcher` back in the state of `start` (its deep copy, taken before the sample began): a sample
    generated again after a broken stream must not be judged on the tokens of the broken attempt. (A
    Watcher always has a __dict__: the base class declares no __slots__.)"""
    state = vars(watcher)
    state.clear()
    state.update(copy.deepcopy(vars(start)))


async def sse_data(lines: AsyncIterator[str], limit: int) -> AsyncGenerator[str, None]:
    """The data of each event in order (its `data:` lines up to a blank line, joined by newlines). Comments
    and the fields event, id and retry are skipped, as the SSE format says; any other line is
    MalformedAnswer, and so is a stream of more than `limit` bytes."""
    data: list[str] = []
    size = 0
    async for raw in lines:
        size += len(raw) + 1
        if size > limit:
            raise MalformedAnswer(f"a stream larger than {limit / 2**20:g} MiB (stopped reading)")
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if field == "data" and colon:
            data.append(value[1:] if value.startswith(" ") else value)
        elif field not in ("event", "id", "retry"):
            raise MalformedAnswer(f"a stream line that is not a server-sent event ({one_line(line, 60)!r})")
    if data:
        yield "\n".join(data)


class StreamAccumulator:
    """The chunks of one streamed sample (n = 1), added up; each chunk's new tokens go to the watcher."""

    def __init__(self, watcher: Watcher, *, chat: bool, top_k: int):
        self.watcher, self.chat, self.k = watcher, chat, top_k
        self.text: list[str] = []
        self.tokens: list[str | None] = []  # None where the server did not say which token it sampled
        self.logprobs: list[float] = []
        self.top: list[dict[str, float]] = []
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.usage: dict[str, Any] = {}
        self.done = False  # `[DONE]` seen

    def feed(self, data: str) -> bool:
        """One event's data; True when the watcher says stop (the caller then closes the stream). A stop on
        the chunk that finishes the sample changes nothing: the sample is whole."""
        if data.strip() == "[DONE]":
            if self.finish_reason is None:
                raise MalformedAnswer(f"[DONE] after {len(self.logprobs)} tokens, before the sample finished")
            self.done = True
            return False
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise MalformedAnswer(f"a stream chunk that is not JSON ({one_line(data, 80)!r})") from None
        if not isinstance(chunk, dict):
            raise MalformedAnswer(f"a stream chunk that is not an object (a {type(chunk).__name__})")
        if chunk.get("error") is not None:
            raise MalformedAnswer(f"an error in the stream: {one_line(json.dumps(chunk['error']), 200)}")
        usage = chunk.get("usage")
        if usage is not None:
            if not isinstance(usage, dict):
                raise MalformedAnswer(f"a stream chunk whose usage is not an object (a {type(usage).__name__})")
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise MalformedAnswer("a stream chunk without a `choices` list")
        if not choices:  # the usage chunk
            return False
        choice = choices[0]
        if len(choices) > 1 or not isinstance(choice, dict) or choice.get("index") not in (0, None):
            raise MalformedAnswer("a stream chunk with a choice other than the one sample asked for")
        if self.finish_reason is not None:
            raise MalformedAnswer("a stream chunk after the sample had finished")
        try:
            text, entries = self._read_chat(choice) if self.chat else self._read_text(choice)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedAnswer(f"a stream chunk with unreadable logprobs ({type(exc).__name__}: "
                                  f"{one_line(str(exc), 100)})") from None
        if text and not entries:
            raise no_top_logprobs(self.k)
        self.text.append(text)
        for token, lp, top in entries:
            if not top:
                raise no_top_logprobs(self.k)
            self.tokens.append(token)
            self.logprobs.append(lp)
            self.top.append(top)
        if choice.get("finish_reason") is not None:
            self.finish_reason = str(choice["finish_reason"])
            self.stop_reason = choice.get("stop_reason")
        if not entries:
            return False
        stop = self.watcher.observe([token_confidence(top) for _, _, top in entries])
        return bool(stop) and self.finish_reason is None

    def _read_chat(self, choice: dict[str, Any]) -> tuple[str, list[Entry]]:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            raise MalformedAnswer("a chat stream chunk without a `delta` object")
        content = delta.get("content")
        if not isinstance(content, (str, type(None))):
            raise MalformedAnswer(f"a chat stream chunk whose content is not text (a {type(content).__name__})")
        lp = choice.get("logprobs")
        entries: list[Entry] = [
            (str(t["token"]), float(t["logprob"]),
             top_k({e["token"]: e["logprob"] for e in t.get("top_logprobs") or []}, self.k))
            for t in (lp or {}).get("content") or []]
        return content or "", entries

    def _read_text(self, choice: dict[str, Any]) -> tuple[str, list[Entry]]:
        text = choice.get("text")
        if not isinstance(text, str):
            raise MalformedAnswer("a completions stream chunk without a text field")
        lp = choice.get("logprobs") or {}
        lps = [float(x) for x in lp.get("token_logprobs") or []]
        tops = lp.get("top_logprobs")
        tops = [None] * len(lps) if tops is None else tops  # none at all: the server ignored the request
        tokens = lp.get("tokens")
        if len(tops) != len(lps) or (tokens is not None and len(tokens) != len(lps)):
            raise MalformedAnswer(f"a stream chunk with {len(lps)} token log-probabilities but {len(tops)} top "
                                  f"log-probability positions and {len(tokens or [])} tokens")
        texts: list[str | None] = [str(t) for t in tokens] if tokens is not None else [None] * len(lps)
        return text, [(t, v, top_k(d or {}, self.k)) for t, v, d in zip(texts, lps, tops)]

    def sample(self, aborted: bool) -> Sample:
        """The sample so far: aborted (finish_reason "abort", the tokens received) or finished, whose token
        count must agree with the server's usage where it reported one."""
        count = len(self.logprobs)
        reported = self.usage.get("completion_tokens")
        if not aborted and reported is not None and int(reported) != count:
            raise MalformedAnswer(f"a stream of {count} tokens whose usage says {reported} completion tokens")
        details = self.usage.get("prompt_tokens_details") or {}
        return Sample(
            text="".join(self.text), token_count=count, logprob_sum=sum(self.logprobs),
            token_logprobs=list(self.logprobs), top_logprobs=list(self.top),
            tokens=[t for t in self.tokens if t is not None] if None not in self.tokens else None,
            finish_reason=ABORTED if aborted else self.finish_reason,
            stop_reason=None if aborted else self.stop_reason,
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            cached_tokens=int((details if isinstance(details, dict) else {}).get("cached_tokens") or 0))


async def read_stream(resp: httpx.Response, acc: StreamAccumulator, limit: int) -> Sample:
    """Feed a streamed answer's events to `acc` until the watcher stops it (the caller's closing of the
    response then disconnects) or the sample finishes. MalformedAnswer for an answer that is not a stream
    or a stream that ends before its sample does."""
    kind = resp.headers.get("content-type", "")
    if "text/event-stream" not in kind.lower():
        head = b""
        async for piece in resp.aiter_bytes():
            head += piece
            if len(head) >= 400:
                break
        label = kind.split(";")[0].strip() or "no content-type"
        quoted = one_line(head[:400].decode("utf-8", "replace"), 80)
        raise MalformedAnswer(f"an answer that is not an event stream ({label}: {quoted!r})")
    async with aclosing(sse_data(resp.aiter_lines(), limit)) as events:
        async for data in events:
            if acc.feed(data):
                return acc.sample(aborted=True)
            if acc.done:
                return acc.sample(aborted=False)
    if acc.finish_reason is None:
        raise MalformedAnswer(f"a stream that ended after {len(acc.logprobs)} tokens, before the sample finished")
    return acc.sample(aborted=False)
