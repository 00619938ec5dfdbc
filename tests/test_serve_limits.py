"""`tts serve` under load: concurrent clients share one backend (their calls overlap in it, each with its
own AFFINITY key), a client that leaves cancels its search, and a full server answers 429 with Retry-After."""

from __future__ import annotations

import asyncio
import threading

import httpx
import openai
import pytest

from tests.serve_harness import ANSWERS, WatchedBackend, math_messages, serve


def test_eight_concurrent_clients_meet_in_the_backend_each_with_its_own_affinity():
    backend = WatchedBackend(gather=8)  # each call waits until all 8 are in the backend together (10 s at most)

    async def ask_all(base_url: str) -> list:
        c = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
        try:
            return await asyncio.gather(*(c.chat.completions.create(
                model="self-consistency:n=2,scorers=none", messages=math_messages(f"What is {i} + 4?"))
                for i in range(8)))
        finally:
            await c.close()

    with serve(backend) as served:
        responses = asyncio.run(ask_all(served.base_url))
        health = served.health()
    assert len(responses) == 8 and all(r.choices[0].message.content in ANSWERS for r in responses)
    assert backend.max_in_flight == 8  # all eight searches were in the one backend at once
    assert sorted(backend.affinity) == sorted(r.id for r in responses)  # one key per request, on its calls
    assert health["in_flight"] == 0 and health["finished"] == 8


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_client_that_leaves_cancels_its_search(stream):
    backend = WatchedBackend(hold=True)  # the search's generation never finishes on its own
    with serve(backend, disconnect_poll=0.05) as served:
        c = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0, timeout=1.0)

        def ask() -> None:
            response = c.chat.completions.create(model="self-consistency:n=4", messages=math_messages("1+1?"),
                                                 stream=stream)
            if stream:
                for _ in response:  # streamed: the read times out mid-search
                    pass

        with pytest.raises(openai.APITimeoutError):
            ask()
        served.wait_for(lambda: backend.cancelled == 1, what="the backend call to be cancelled")
        served.wait_for(lambda: served.health()["in_flight"] == 0, what="no search in flight")
        assert backend.in_flight == 0 and len(backend.calls) == 0  # cancelled before it produced anything


def test_a_full_server_answers_429_with_retry_after():
    backend = WatchedBackend(hold=True)
    with serve(backend, max_concurrent=1, max_queue=1) as served:
        c = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0, timeout=30)
        answers: list = []

        def ask() -> None:
            answers.append(c.chat.completions.create(model="self-consistency:n=2,scorers=none",
                                                     messages=math_messages("2+5?")))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        threads[0].start()
        served.wait_for(lambda: served.health()["in_flight"] == 1, what="one search running")
        threads[1].start()
        served.wait_for(lambda: served.health()["queued"] == 1, what="one search queued")
        with pytest.raises(openai.RateLimitError) as caught:
            c.chat.completions.create(model="self-consistency:n=2", messages=math_messages("2+5?"))
        error = caught.value
        assert int(error.response.headers["retry-after"]) >= 1
        assert error.code == "rate_limit_exceeded" and "1 searches running and 1 waiting" in error.message
        assert error.body["type"] == "rate_limit_error"
        backend.release()
        for t in threads:
            t.join(20)
        assert len(answers) == 2  # the admitted two were answered; the server never crashed
        assert served.health() | {"finished": None} == {"status": "ok", "in_flight": 0, "queued": 0,
                                                        "finished": None, "max_concurrent": 1, "max_queue": 1}


def test_a_queued_search_waits_its_turn_and_a_disconnected_one_leaves_the_queue():
    backend = WatchedBackend(hold=True)
    with serve(backend, max_concurrent=1, max_queue=4, disconnect_poll=0.05) as served:
        body = {"model": "self-consistency:n=2,scorers=none", "messages": math_messages("3+3?")}
        runner = threading.Thread(target=lambda: httpx.post(f"{served.base_url}/chat/completions", json=body,
                                                            timeout=30))
        runner.start()
        served.wait_for(lambda: served.health()["in_flight"] == 1, what="one search running")
        with pytest.raises(httpx.ReadTimeout):  # queued behind it; this client gives up
            httpx.post(f"{served.base_url}/chat/completions", json=body, timeout=0.5)
        served.wait_for(lambda: served.health()["queued"] == 0, what="the queue to empty")
        assert served.health()["in_flight"] == 1  # the first search is untouched
        backend.release()
        runner.join(20)
        served.wait_for(lambda: served.health()["finished"] == 1, what="the first search to finish")
        assert len(backend.calls) == 1  # the queued search never reached the backend
