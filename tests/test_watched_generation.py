"""Watched generation (Backend.generate_watched): vLLM's DELTA accumulation on fake outputs, the engine
thread's abort, the scripted backend's exact stop, the replaying default, and usage counting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fakes import ToyTask
from tts.backends import engine_thread
from tts.backends.base import WATCH_REPLAYED, Backend, Watcher
from tts.backends.openai import OpenAIBackend
from tts.backends.render import prompt_text
from tts.backends.scripted import ScriptedBackend
from tts.backends.vllm import DeltaAccumulator
from tts.confidence import WindowMonitor, first_window_below
from tts.errors import BackendError
from tts.strategy import StrategyContext
from tts.types import GenerationRequest, Sample, SamplingConfig


class Recording(Watcher):
    """Stops where a WindowMonitor would; records every call's confidences."""

    def __init__(self, window: int = 3, threshold: float = 3.0):
        self.monitor = WindowMonitor(window, threshold)
        self.calls: list[list[float]] = []

    def observe(self, confidences: Sequence[float]) -> bool:
        self.calls.append(list(confidences))
        return self.monitor.push(confidences)


class StopAt(Watcher):
    """Says stop at its `at`-th call (1-based); never when `at` is None."""

    def __init__(self, at: int | None):
        self.at, self.seen = at, 0

    def observe(self, confidences: Sequence[float]) -> bool:
        self.seen += 1
        return self.seen == self.at


def top(c: float) -> dict[str, float]:
    """Two top tokens whose DeepConf confidence is exactly c."""
    return {"a": -c, "b": -c}


def scripted_trace(confs: list[float], lp: float = -0.5) -> Sample:
    """A completion of one word per token, token i having confidence confs[i]."""
    words = [f"w{i + 1}" for i in range(len(confs))]
    return Sample(text=" ".join(words), token_count=len(confs), logprob_sum=lp * len(confs),
                  token_logprobs=[lp] * len(confs), top_logprobs=[top(c) for c in confs],
                  tokens=[w if i == 0 else " " + w for i, w in enumerate(words)], finish_reason="stop")


def request(n: int = 1, top_logprobs: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt="q", sampling=SamplingConfig(n=n, top_logprobs=top_logprobs))


# ---- vLLM: DELTA outputs ------------------------------------------------------------------------


def lp(logprob: float, rank: int, token: str) -> SimpleNamespace:
    return SimpleNamespace(logprob=logprob, rank=rank, decoded_token=token)


def delta(ids: list[int], text: str, steps: list[dict[int, Any]], finished: bool = False,
          finish_reason: str | None = None, stop_reason: str | None = None) -> SimpleNamespace:
    """A RequestOutput as vLLM 0.32 sends it with output_kind=DELTA and n = 1: only the new tokens."""
    completion = SimpleNamespace(index=0, text=text, token_ids=ids, logprobs=steps, cumulative_logprob=None,
                                 finish_reason=finish_reason if finished else None,
                                 stop_reason=stop_reason if finished else None)
    return SimpleNamespace(request_id="7", outputs=[completion], prompt_token_ids=[1, 2, 3], num_cached_tokens=2,
                           finished=finished)


# Token 10 sampled at rank 1; token 11 sampled at rank 3, outside top-2 (vLLM adds the sampled token anyway).
STEP_A = {10: lp(-0.1, 1, "Hel"), 12: lp(-2.5, 2, "X")}
STEP_B = {11: lp(-3.0, 3, "lo"), 13: lp(-0.2, 1, "la"), 14: lp(-1.8, 2, "Y")}
STEP_C = {15: lp(-0.3, 1, " world"), 16: lp(-1.3, 2, "Z")}
DELTAS = [delta([10], "Hel", [STEP_A]),
          delta([11, 15], "lo world", [STEP_B, STEP_C]),  # two tokens in one step (e.g. speculative decoding)
          delta([16], "!", [{16: lp(-0.4, 1, "!"), 17: lp(-1.0, 2, "?")}], finished=True, finish_reason="stop")]


def test_delta_accumulator_adds_up_deltas_like_a_final_output():
    watcher = StopAt(None)
    acc = DeltaAccumulator(watcher, top_k=2)
    assert [acc.feed(d) for d in DELTAS] == [False, False, False]
    s = acc.result()
    assert s.text == "Hello world!" and s.token_count == 4
    assert s.token_logprobs == [-0.1, -3.0, -0.3, -0.4]  # the sampled token's, even at rank 3
    assert s.logprob_sum == pytest.approx(-3.8)
    assert s.top_logprobs == [{"Hel": -0.1, "X": -2.5}, {"la": -0.2, "Y": -1.8}, {" world": -0.3, "Z": -1.3},
                              {"!": -0.4, "?": -1.0}]
    assert (s.finish_reason, s.prompt_tokens, s.cached_tokens) == ("stop", 3, 2)
    assert watcher.seen == 3  # once per delta, not per token


def test_delta_accumulator_feeds_each_deltas_confidences_in_order():
    watcher = Recording(window=100, threshold=0.0)
    acc = DeltaAccumulator(watcher, top_k=2)
    for d in DELTAS:
        acc.feed(d)
    assert watcher.calls == [[pytest.approx(1.3)], [pytest.approx(1.0), pytest.approx(0.8)], [pytest.approx(0.7)]]


@pytest.mark.parametrize("stop_at, tokens, finish, text", [
    # stopped on the first delta: one token, aborted, the decoder's text of that token
    (1, 1, "abort", "decoded[10]"),
    # stopped on the second delta: both of its tokens were generated and are kept
    (2, 3, "abort", "decoded[10, 11, 15]"),
    # a stop on the last delta changes nothing: the request had finished in that very step
    (3, 4, "stop", "Hello world!"),
])
def test_delta_accumulator_stops_where_the_watcher_says(stop_at, tokens, finish, text):
    acc = DeltaAccumulator(StopAt(stop_at), top_k=2, decode=lambda ids: f"decoded{ids}")
    said = [acc.feed(d) for d in DELTAS[:stop_at]]
    assert said == [False] * (stop_at - 1) + [finish == "abort"]
    s = acc.result()
    assert (s.token_count, s.finish_reason, s.text) == (tokens, finish, text)
    assert len(s.token_logprobs or []) == len(s.top_logprobs or []) == tokens
    assert s.stop_reason is None


def test_delta_accumulator_without_decoder_keeps_the_text_deltas():
    acc = DeltaAccumulator(StopAt(2), top_k=2)
    acc.feed(DELTAS[0])
    acc.feed(DELTAS[1])
    assert acc.result().text == "Hello world"


def test_delta_accumulator_refuses_unreadable_outputs():
    acc = DeltaAccumulator(StopAt(None), top_k=2)
    with pytest.raises(BackendError, match="2 new tokens but 1 positions"):
        acc.feed(delta([10, 11], "x", [STEP_A]))
    two = delta([10], "x", [STEP_A])
    two.outputs = two.outputs * 2
    with pytest.raises(BackendError, match="2 completions"):
        acc.feed(two)


def test_delta_accumulator_skips_the_watcher_on_an_empty_delta():
    watcher = StopAt(1)
    acc = DeltaAccumulator(watcher, top_k=2)
    assert acc.feed(delta([], "", [])) is False
    assert watcher.seen == 0


class FakeEngine:
    def __init__(self) -> None:
        self.aborted: list[list[str]] = []

    def abort_request(self, ids: list[str]) -> None:
        self.aborted.append(ids)


@pytest.mark.parametrize("stop_at, resolved_after, aborted", [
    (2, 2, [["7"]]),  # stopped while running: aborted in the engine, the caller gets the partial sample
    (None, 3, []),    # ran to the end: resolved by the finished output, nothing aborted
    (3, 3, []),       # a stop on the finished output: nothing left to abort
])
async def test_engine_thread_aborts_a_stopped_stream(stop_at, resolved_after, aborted):
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    acc = DeltaAccumulator(StopAt(stop_at), top_k=2)
    waiting = {"7": engine_thread._Pending(future, loop, lambda out: out, acc)}
    engine = FakeEngine()
    for i, d in enumerate(DELTAS, start=1):
        if "7" not in waiting:
            break
        engine_thread._feed(engine, waiting, d, acc)
        assert ("7" in waiting) == (i < resolved_after)
    sample = await future
    assert engine.aborted == aborted
    assert sample.finish_reason == ("abort" if aborted else "stop")


async def test_engine_thread_fails_and_aborts_a_request_whose_watcher_raises():
    class Broken(Watcher):
        def observe(self, confidences: Sequence[float]) -> bool:
            raise RuntimeError("watcher bug")

    loop = asyncio.get_running_loop()
    future = loop.create_future()
    acc = DeltaAccumulator(Broken(), top_k=2)
    waiting = {"7": engine_thread._Pending(future, loop, lambda out: out, acc)}
    engine = FakeEngine()
    engine_thread._feed(engine, waiting, DELTAS[0], acc)
    with pytest.raises(BackendError, match="watcher bug"):
        await future
    assert engine.aborted == [["7"]] and not waiting


# ---- the scripted backend: aborts exactly -------------------------------------------------------

# (token confidences, window, threshold, tokens generated when stopped or None when it runs to the end)
STOPS = [
    # windows of 3: means 5, 5, 3.67, 2.33 -> the window ending at token 6 is the first below 3
    ([5, 5, 5, 5, 1, 1, 1, 5, 5, 5], 3, 3.0, 6),
    # the very first full window is below: stopped at token 3
    ([1, 1, 1, 5, 5], 3, 3.0, 3),
    # a dip shorter than the window never pulls a mean below 3: runs to the end
    ([5, 5, 0, 5, 5, 0, 5, 5], 3, 3.0, None),
    # a mean exactly at the threshold is not below it
    ([3, 3, 3, 3], 2, 3.0, None),
    # a trace shorter than the window is never stopped online, however low
    ([0, 0], 3, 3.0, None),
]


@pytest.mark.parametrize("confs, window, threshold, stop", STOPS)
async def test_scripted_backend_stops_at_the_first_window_below_the_threshold(confs, window, threshold, stop):
    backend = ScriptedBackend([scripted_trace(confs)])
    watcher = Recording(window, threshold)
    (s,) = await backend.generate_watched([request()], [watcher])
    assert stop == first_window_below(confs, window, threshold)  # the offline replay agrees
    generated = stop or len(confs)
    assert s.token_count == generated == sum(len(c) for c in watcher.calls)  # nothing fed after the stop
    assert s.text == " ".join(f"w{i + 1}" for i in range(generated))
    assert len(s.token_logprobs or []) == len(s.top_logprobs or []) == generated
    assert s.logprob_sum == pytest.approx(-0.5 * generated)
    assert s.finish_reason == ("abort" if stop else "stop")


async def test_scripted_backend_feeds_one_token_at_a_time_and_records_the_call():
    backend = ScriptedBackend(["one two three"])
    watchers = [Recording(), Recording()]
    await backend.generate_watched([request(), request()], watchers)
    assert all(len(c) == 1 for w in watchers for c in w.calls)
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 2


@pytest.mark.parametrize("requests, watchers, message", [
    ([request(n=2)], 1, "n = 1 and top_logprobs >= 1"),           # n > 1 cannot be watched one by one
    ([request(top_logprobs=0)], 1, "n = 1 and top_logprobs >= 1"),  # no top-k: no confidence to watch
    ([request(), request()], 1, "2 requests and 1 watchers"),        # one watcher per request
])
async def test_generate_watched_refuses_what_it_cannot_watch(requests, watchers, message):
    backend = ScriptedBackend(["x"])
    with pytest.raises(ValueError, match=message):
        await backend.generate_watched(requests, [StopAt(None) for _ in range(watchers)])
    assert backend.calls == []


async def test_scripted_sample_needs_a_word_per_token():
    backend = ScriptedBackend([scripted_trace([5, 5, 5]).model_copy(update={"text": "two words"})])
    with pytest.raises(Exception, match="2 words for 3 top_logprobs positions"):
        await backend.generate_watched([request()], [StopAt(None)])


# ---- usage: aborted tokens count --------------------------------------------------------------


async def test_sample_watched_counts_aborted_tokens_and_marks_them():
    task = ToyTask()
    problem = task.load(1)[0].problem
    low = [5, 5, 5, 5, 1, 1, 1, 5, 5, 5]  # stopped at 6 tokens
    backend = ScriptedBackend([scripted_trace([5] * 10), scripted_trace(low), scripted_trace([5] * 4)])
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(top_logprobs=2))
    candidates = await ctx.sample_watched(problem, [Recording() for _ in range(3)])
    assert [c.completion_tokens for c in candidates] == [10, 6, 4]
    assert [c.info.get("aborted", False) for c in candidates] == [False, True, False]
    assert ctx.usage.completion_tokens == 20  # the 6 tokens of the stopped one are counted
    assert ctx.usage.backend_calls == 1
    assert ctx.usage.prompt_tokens == 3 * len(prompt_text(problem.prompt).split())  # one prompt per request
    assert [r.sampling.n for r in backend.calls[0]] == [1, 1, 1]
    assert candidates[1].trace is not None and len(candidates[1].trace.token_confidence()) == 6


async def test_sample_watched_gives_seeded_requests_their_own_seeds():
    task = ToyTask()
    backend = ScriptedBackend(["a b c"])
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(top_logprobs=2, seed=5))
    await ctx.sample_watched(task.load(1)[0].problem, [StopAt(None) for _ in range(3)])
    seeds = [r.sampling.seed for r in backend.calls[0]]
    assert len(set(seeds)) == 3 and None not in seeds


# ---- the default: a backend that cannot abort -------------------------------------------------


class NoAbortBackend(Backend):
    """Like an HTTP server: whole samples only, no generate_watched of its own."""

    name = "no-abort"
    description = "test double"

    def __init__(self, samples: list[Sample]):
        self.model = "m"
        self.samples = samples
        self.generated = 0

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        out = []
        for req in requests:
            out.append([self.samples[self.generated % len(self.samples)] for _ in range(req.sampling.n)])
            self.generated += req.sampling.n
        return out


async def test_default_generates_whole_cuts_at_the_stop_and_counts_every_token():
    task = ToyTask()
    trace = scripted_trace([5, 5, 5, 5, 1, 1, 1, 5, 5, 5]).model_copy(update={"prompt_tokens": 4})
    backend = NoAbortBackend([trace])
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(top_logprobs=2))
    (c,) = await ctx.sample_watched(task.load(1)[0].problem, [Recording()])
    (s,) = await NoAbortBackend([trace]).generate_watched([request()], [Recording()])
    assert s.text == "w1 w2 w3 w4 w5 w6" and len(s.top_logprobs or []) == len(s.token_logprobs or []) == 6
    assert s.token_count == 10  # all ten were generated (and paid for)
    assert (s.finish_reason, s.stop_reason, s.logprob_sum) == ("abort", WATCH_REPLAYED, None)
    assert c.info["aborted"] is True and c.completion_tokens == 10
    assert ctx.usage.completion_tokens == 10


async def test_default_without_token_texts_keeps_the_text_whole_and_says_so(caplog):
    trace = scripted_trace([1, 1, 1, 5]).model_copy(update={"tokens": None})
    with caplog.at_level(logging.WARNING):
        (s,) = await NoAbortBackend([trace]).generate_watched([request()], [Recording()])
    assert s.text == trace.text and s.token_count == 4 and len(s.top_logprobs or []) == 3
    assert "text is left whole" in caplog.text


async def test_default_leaves_an_unstopped_sample_as_it_is():
    trace = scripted_trace([5, 5, 5, 5])
    (s,) = await NoAbortBackend([trace]).generate_watched([request()], [Recording()])
    assert s == trace


@pytest.mark.parametrize("chat, body", [
    # /completions: the sampled tokens are logprobs.tokens
    (False, {"choices": [{"index": 0, "text": "ab c", "finish_reason": "stop",
                          "logprobs": {"tokens": ["ab", " c"], "token_logprobs": [-0.1, -0.2],
                                       "top_logprobs": [{"ab": -0.1}, {" c": -0.2}]}}]}),
    # /chat/completions: each content entry's token
    (True, {"choices": [{"index": 0, "message": {"content": "ab c"}, "finish_reason": "stop",
                         "logprobs": {"content": [{"token": "ab", "logprob": -0.1,
                                                   "top_logprobs": [{"token": "ab", "logprob": -0.1}]},
                                                  {"token": " c", "logprob": -0.2,
                                                   "top_logprobs": [{"token": " c", "logprob": -0.2}]}]}}]}),
])
def test_openai_backend_reports_the_sampled_tokens(chat, body):
    (s,) = OpenAIBackend._samples(body, chat, want_logprobs=True, top_k=1)
    assert s.tokens == ["ab", " c"]
