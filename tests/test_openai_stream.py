"""Watched generation on the OpenAI-compatible backend: streamed requests, stopped by closing the stream.

Against the fake server (tests/fake_openai_server.py), which streams one chunk per token and records
whether the client hung up: a stopped sample holds exactly the tokens received, a sample that runs to
its end equals the non-streamed one, stream faults are retried (the whole sample again, the watcher
reset) or fail with one clear line. The SSE reader and the chunk accumulator are also checked alone on
hand-written events.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence

import httpx
import pytest
import pytest_asyncio

from tests.fake_openai_server import FAULT_AT, STREAM_FAULTS, FakeOpenAIServer, stream_pieces
from tests.fakes import ToyTask
from tts.backends.base import Watcher
from tts.backends.openai import OpenAIBackend
from tts.backends.openai_stream import MalformedAnswer, StreamAccumulator, restart_watcher, sse_data
from tts.errors import BackendError
from tts.strategy import StrategyContext
from tts.types import ChatMessage, GenerationRequest, Sample, SamplingConfig

RETRIES = 2  # three attempts
LONG = 50    # tokens of a stream that a watcher stops


class StopAfter(Watcher):
    """Says stop once it has seen `at` tokens (never when `at` is None); records every call."""

    def __init__(self, at: int | None):
        self.at = at
        self.calls: list[list[float]] = []

    def observe(self, confidences: Sequence[float]) -> bool:
        self.calls.append(list(confidences))
        return self.at is not None and sum(len(c) for c in self.calls) >= self.at


def request(chat: bool, top: int = 3, prompt: str = "q") -> GenerationRequest:
    messages = [ChatMessage(role="user", content=prompt)]
    return GenerationRequest(prompt=messages if chat else prompt, sampling=SamplingConfig(top_logprobs=top))


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer(lifetime=300) as s:
        yield s


@pytest.fixture
def server(fake: FakeOpenAIServer):
    fake.set(default="ok")
    fake.stream_tokens, fake.stream_delay = 4, 0.0
    return fake


@pytest_asyncio.fixture(loop_scope="function")  # the test's loop: the backend's client belongs to it
async def backend(server: FakeOpenAIServer):
    b = OpenAIBackend(base_url=server.url, backoff=0.01, max_retries=RETRIES, request_timeout=5)
    yield b
    await b.aclose()


# ---- stopping: the stream is closed, the server sees it ------------------------------------------


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("k", [1, 3])
async def test_a_stopped_sample_holds_exactly_the_tokens_received(server, backend, chat, k):
    server.stream_tokens, server.stream_delay = LONG, 0.05
    watcher = StopAfter(k)
    (s,) = await backend.generate_watched([request(chat)], [watcher])
    assert (s.token_count, s.finish_reason, s.stop_reason) == (k, "abort", None)
    assert s.text == "".join(stream_pieces(LONG)[:k])
    assert s.token_logprobs == [-0.5] * k and s.logprob_sum == pytest.approx(-0.5 * k)
    assert s.top_logprobs == [{"x": -0.5, "y1": -2.5, "y2": -3.5}] * k and s.tokens == ["x"] * k
    assert s.prompt_tokens == 10  # from the usage on every chunk (continuous_usage_stats)
    assert sum(len(c) for c in watcher.calls) == k
    for _ in range(100):  # the server notices the hang-up before its next token
        if server.streams[0].disconnected:
            break
        await asyncio.sleep(0.02)
    (record,) = server.streams
    assert record.disconnected and not record.finished
    # it sent the k tokens the client read, and stopped generating long before the end (a few more may
    # have gone out before it saw the hang-up, as with vllm serve; the sample counts only those received)
    assert k <= record.sent < LONG


@pytest.mark.parametrize("chat", [False, True])
async def test_a_stream_run_to_its_end_equals_the_non_streamed_sample(server, backend, chat):
    ((whole,),) = await backend.generate([request(chat)])
    (streamed,) = await backend.generate_watched([request(chat)], [StopAfter(None)])
    fields = ("text", "token_count", "logprob_sum", "token_logprobs", "top_logprobs", "finish_reason",
              "stop_reason", "prompt_tokens", "cached_tokens")
    assert {f: getattr(streamed, f) for f in fields} == {f: getattr(whole, f) for f in fields}
    assert streamed.token_count == 4 and streamed.finish_reason == "stop"
    assert [r.finished for r in server.streams] == [True]


async def test_a_stop_on_the_last_token_leaves_the_sample_whole(server, backend):
    (s,) = await backend.generate_watched([request(True)], [StopAfter(4)])
    assert (s.token_count, s.finish_reason, s.text) == (4, "stop", "".join(stream_pieces(4)))
    assert server.streams[0].finished


async def test_watched_requests_run_concurrently_and_all_complete(server):
    server.stream_tokens, server.stream_delay = 30, 0.01
    stops = [1, 2, 5, None, 4, None]
    b = OpenAIBackend(base_url=server.url, backoff=0.01, concurrency=3)
    try:
        out = await b.generate_watched([request(i % 2 == 0, prompt=f"q{i}") for i in range(len(stops))],
                                       [StopAfter(k) for k in stops])
    finally:
        await b.aclose()
    assert [s.token_count for s in out] == [k or 30 for k in stops]
    assert [s.finish_reason for s in out] == ["stop" if k is None else "abort" for k in stops]
    assert len(server.streams) == len(stops) and sum(r.finished for r in server.streams) == 2


async def test_the_request_streams_with_usage_and_the_usual_logprobs():
    seen: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        payload = json.loads(req.content)
        seen.append(payload)
        chat = "messages" in payload
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=sse(token(chat, "hi", finish="length"), "[DONE]"))

    b = OpenAIBackend(base_url="http://testserver/v1", transport=httpx.MockTransport(handler))
    out = await b.generate_watched([request(False, top=5), request(True, top=5)], [StopAfter(None)] * 2)
    by_kind = {("messages" in p): p for p in seen}
    assert by_kind[False]["logprobs"] == 5 and by_kind[True]["logprobs"] is True and by_kind[True]["top_logprobs"] == 5
    for p in seen:
        assert p["stream"] is True and p["n"] == 1
        assert p["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert [s.finish_reason for s in out] == ["length", "length"]
    # usage_per_chunk=False: only the standard option, for servers that refuse vllm serve's extension
    seen.clear()
    plain = OpenAIBackend(base_url="http://testserver/v1", transport=httpx.MockTransport(handler),
                          usage_per_chunk=False)
    await plain.generate_watched([request(False, top=5)], [StopAfter(None)])
    assert seen[0]["stream_options"] == {"include_usage": True}


async def test_sample_watched_counts_only_the_tokens_received(server, backend):
    server.stream_tokens, server.stream_delay = LONG, 0.02
    task = ToyTask()
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(top_logprobs=3))
    candidates = await ctx.sample_watched(task.load(1)[0].problem, [StopAfter(3), StopAfter(None)])
    assert [c.completion_tokens for c in candidates] == [3, LONG]
    assert [c.info.get("aborted", False) for c in candidates] == [True, False]
    assert ctx.usage.completion_tokens == 3 + LONG and ctx.usage.prompt_tokens == 20


# ---- faults -------------------------------------------------------------------------------------

RECOVERED = "recovered"

# (fault of the fake server, completion requests it answers with it (None: all), outcome, requests made)
STREAM_TABLE = [
    # a line that is not an event: retried; always -> the line is quoted
    ("sse-garbage", 1, RECOVERED, 2),
    ("sse-garbage", None, "a stream line that is not a server-sent event ('this line is not an event')", 3),
    # JSON cut off inside a data line
    ("sse-bad-json", None, "a stream chunk that is not JSON", 3),
    # a chunk without its `choices`
    ("sse-no-choices", 1, RECOVERED, 2),
    ("sse-no-choices", None, "a stream chunk without a `choices` list", 3),
    # [DONE] before any finish_reason: the sample is not finished, so it is not taken as one
    ("sse-early-done", 1, RECOVERED, 2),
    ("sse-early-done", None, f"[DONE] after {FAULT_AT} tokens, before the sample finished", 3),
    # vllm serve's error object mid-stream (the engine failed): retried like a 5xx
    ("sse-error", None, "an error in the stream: {\"message\": \"EngineDeadError: the engine died\"", 3),
    # the connection breaks mid-stream: the whole sample again
    ("sse-cut", 1, RECOVERED, 2),
    ("sse-cut", None, "the server closed the connection without a complete answer (peer closed connection", 3),
    # the final usage disagrees with the tokens streamed: tokens were lost on the way
    ("sse-usage-mismatch", None, "a stream of 4 tokens whose usage says 5 completion tokens", 3),
    # no logprobs although top-k were asked: the server would ignore them again, so not retried
    ("sse-no-logprobs", None, "the server returned no top log-probabilities although 3 were asked for", 1),
    # faults before the stream begins behave as without streaming: retried, a client error is not
    ("500", 1, RECOVERED, 2),
    ("400", None, "answered HTTP 400", 1),
    ("reset", 1, RECOVERED, 2),
    # a JSON (or any other) answer to a stream request is not a stream
    ("not-json", None, "an answer that is not an event stream (text/plain: 'Internal error, please try", 3),
    ("ok", None, RECOVERED, 1),
]


def test_every_stream_fault_of_the_fake_server_is_in_the_table():
    assert set(STREAM_FAULTS) <= {row[0] for row in STREAM_TABLE}


@pytest.mark.parametrize("fault, times, outcome, requests", STREAM_TABLE,
                         ids=[f"{r[0]}-{'always' if r[1] is None else 'once'}" for r in STREAM_TABLE])
async def test_stream_faults_are_retried_or_fail_in_one_line(server, backend, fault, times, outcome, requests):
    if times is None:
        server.set(default=fault)
    else:
        server.set(*[fault] * times, default="ok")
    watcher = StopAfter(None)
    if outcome == RECOVERED:
        (s,) = await backend.generate_watched([request(True)], [watcher])
        assert (s.token_count, s.finish_reason, s.text) == (4, "stop", "".join(stream_pieces(4)))
        # the watcher saw the good attempt only: a broken attempt's tokens were forgotten
        assert sum(len(c) for c in watcher.calls) == 4
    else:
        with pytest.raises(BackendError) as err:
            await backend.generate_watched([request(True)], [watcher])
        assert outcome in str(err.value) and "\n" not in str(err.value)
        if requests > 1:
            assert f"failed after {RETRIES + 1} attempts" in str(err.value)
    assert len(server.completion_requests) == requests


async def test_a_watcher_that_raises_is_not_retried_and_closes_the_stream(server, backend):
    class Broken(Watcher):
        def observe(self, confidences: Sequence[float]) -> bool:
            raise RuntimeError("watcher bug")

    server.stream_tokens, server.stream_delay = LONG, 0.02
    with pytest.raises(RuntimeError, match="watcher bug"):
        await backend.generate_watched([request(False)], [Broken()])
    await asyncio.sleep(0.3)
    assert len(server.completion_requests) == 1 and not server.streams[0].finished


# ---- the SSE reader and the accumulator alone ---------------------------------------------------


def token(chat: bool, piece: str, finish: str | None = None, lp: float = -0.5) -> dict:
    """One token's chunk as vllm serve streams it (top-2 log-probabilities)."""
    top = [("t", lp), ("u", lp - 1)]
    if chat:
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": finish, "logprobs": {"content": [
            {"token": piece, "logprob": lp, "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}]}}
    else:
        choice = {"index": 0, "text": piece, "finish_reason": finish,
                  "logprobs": {"tokens": [piece], "token_logprobs": [lp], "top_logprobs": [dict(top)]}}
    return {"choices": [choice]}


def sse(*events: dict | str) -> bytes:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events).encode()


async def lines_of(text: str):
    for line in text.split("\n"):
        yield line


@pytest.mark.parametrize("text, events", [
    # one event per data line, blank lines between
    ("data: a\n\ndata: b\n\n", ["a", "b"]),
    # comments and the event/id/retry fields are skipped; CR line ends are stripped
    (": keep-alive\nevent: message\nid: 7\nretry: 10\ndata: a\r\n\r\n", ["a"]),
    # several data lines make one event, joined by newlines; one space after the colon is dropped
    ("data: {\"a\":\ndata:1}\n\n", ["{\"a\":\n1}"]),
    # a last event without its blank line still counts
    ("data: a", ["a"]),
])
async def test_sse_reader(text, events):
    assert [e async for e in sse_data(lines_of(text), 1000)] == events


@pytest.mark.parametrize("text, message", [
    ("garbage\n\n", "a stream line that is not a server-sent event ('garbage')"),  # no field syntax
    ("data: " + "x" * 50 + "\n\n", "a stream larger than"),                      # over the byte limit
])
async def test_sse_reader_refuses(text, message):
    with pytest.raises(MalformedAnswer, match=re.escape(message)):
        [e async for e in sse_data(lines_of(text), 40)]


TWO_CHOICES = {"choices": [token(False, "a")["choices"][0], {**token(False, "b")["choices"][0], "index": 1}]}

# (chat endpoint?, events fed in order, fragment of the MalformedAnswer raised by the last one)
BAD_CHUNKS = [
    # a chat chunk must carry a delta object
    (True, [{"choices": [{"index": 0, "text": "a"}]}], "without a `delta` object"),
    # a completions chunk must carry its text
    (False, [{"choices": [{"index": 0, "delta": {"content": "a"}}]}], "without a text field"),
    # a token entry without its log-probability
    (True, [{"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a"}]}}]}],
     "unreadable logprobs (KeyError"),
    # completions: as many top-k positions and tokens as log-probabilities
    (False, [{"choices": [{"index": 0, "text": "ab", "logprobs": {
        "tokens": ["a", "b"], "token_logprobs": [-1.0, -1.0], "top_logprobs": [{"a": -1.0}]}}]}],
     "2 token log-probabilities but 1 top"),
    # one sample was asked for: a second choice is not ours
    (False, [TWO_CHOICES], "a choice other than the one sample"),
    # nothing may follow the finishing chunk but the usage and [DONE]
    (True, [token(True, "a", finish="stop"), token(True, "b")], "after the sample had finished"),
    # a chunk that is JSON but not an object
    (True, ["[1, 2]"], "not an object (a list)"),
    # usage that is not an object
    (True, [{"choices": [], "usage": 5}], "usage is not an object"),
]


@pytest.mark.parametrize("chat, events, message", BAD_CHUNKS)
def test_accumulator_refuses_malformed_chunks(chat, events, message):
    acc = StreamAccumulator(StopAfter(None), chat=chat, top_k=2)
    for e in events[:-1]:
        acc.feed(json.dumps(e))
    last = events[-1]
    with pytest.raises(MalformedAnswer, match=re.escape(message)):
        acc.feed(last if isinstance(last, str) else json.dumps(last))


@pytest.mark.parametrize("chat", [False, True])
def test_accumulator_adds_up_chunks_and_feeds_each_chunks_confidences(chat):
    watcher = StopAfter(None)
    acc = StreamAccumulator(watcher, chat=chat, top_k=2)
    for e in [token(chat, "Hel", lp=-1.0), token(chat, "lo", lp=-2.0, finish="stop"),
              {"choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 2,
                                        "prompt_tokens_details": {"cached_tokens": 4}}}]:
        assert acc.feed(json.dumps(e)) is False
    assert acc.feed("[DONE]") is False and acc.done
    s = acc.sample(aborted=False)
    assert s == Sample(text="Hello", token_count=2, logprob_sum=-3.0, token_logprobs=[-1.0, -2.0],
                       top_logprobs=[{"t": -1.0, "u": -2.0}, {"t": -2.0, "u": -3.0}], tokens=["Hel", "lo"],
                       finish_reason="stop", prompt_tokens=6, cached_tokens=4)
    assert watcher.calls == [[pytest.approx(1.5)], [pytest.approx(2.5)]]  # C = -mean of the top-2


def test_restart_puts_the_watcher_back_in_its_starting_state():
    import copy

    watcher = StopAfter(3)
    start = copy.deepcopy(watcher)
    watcher.observe([1.0, 2.0])
    watcher.extra = "added during the attempt"  # type: ignore[attr-defined]
    restart_watcher(watcher, start)
    assert vars(watcher) == {"at": 3, "calls": []}
    watcher.observe([1.0])
    assert start.calls == []  # the starting copy stays as it was, for a further retry
