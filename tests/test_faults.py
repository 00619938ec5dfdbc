"""The fault table: what the openai backend and `tts eval` do when the server misbehaves.

Each row of FAULT_TABLE is one fault of the fake server (tests/fake_openai_server.py), served for the
first `times` completion requests (None: for all of them), and the expected outcome:

- RECOVERED: the request is retried (with backoff) and the samples come back;
- a fragment: after the retries, one `BackendError` line naming the URL and what was wrong.

Every row runs twice: against `OpenAIBackend.generate` directly, and through `tts eval` (exit code
`cli_exit`; a fault's message is the single stderr line). Backoff, timeouts and retries are tiny, set
through options (`backoff=`, `--request-timeout`, `--max-retries`), so the whole table takes seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from tests.fake_openai_server import FAULTS, FakeOpenAIServer
from tts import registry
from tts.backends import openai as openai_backend
from tts.backends.openai import OpenAIBackend
from tts.cli import main
from tts.errors import BackendError, UserError
from tts.types import ChatMessage, GenerationRequest, SamplingConfig

RECOVERED = "recovered"
TIMEOUT = 0.3  # --request-timeout of the table (the fake server's hang lasts longer)
RETRIES = 2    # three attempts
ATTEMPTS = f"failed after {RETRIES + 1} attempts"


@dataclass
class FaultRow:
    fault: str
    times: int | None  # the fault answers this many completion requests (None: every one), then "ok"
    outcome: str       # RECOVERED or a fragment of the one-line error
    cli_exit: int
    cli_outcome: str | None = None  # when the CLI's message differs (the CLI has no --max-response-bytes)
    requests: int | None = None     # completion requests the backend must have made


FAULT_TABLE = [
    FaultRow("ok", None, RECOVERED, 0, requests=1),
    FaultRow("truncated", 1, RECOVERED, 0, requests=2),
    FaultRow("truncated", None, "the server answered with JSON cut off after", 1, requests=RETRIES + 1),
    FaultRow("cut-off", None, "the connection broke while reading the answer", 1),
    FaultRow("not-json", 1, RECOVERED, 0, requests=2),
    FaultRow("not-json", None, "a body that is not JSON (text/plain, 38 bytes: 'Internal error", 1),
    FaultRow("html", 2, RECOVERED, 0, requests=3),
    FaultRow("html", None, "a body that is not JSON (text/html, 78 bytes: '<html> <head><title>502 Bad Gateway", 1),
    FaultRow("empty", None, "the server answered with an empty body", 1),
    FaultRow("no-choices", 1, RECOVERED, 0, requests=2),
    FaultRow("no-choices", None, "the server answered with no choices", 1),
    FaultRow("fewer-choices", None, RECOVERED, 0, requests=2),  # the base class asks again for the missing one
    FaultRow("no-text", None, "choice 0 without a message with text content", 1),
    FaultRow("not-object", None, "JSON that is not an object (a list)", 1),
    FaultRow("bad-logprobs", None, "unreadable usage or logprobs (KeyError: 'logprob')", 1),
    FaultRow("500", 1, RECOVERED, 0, requests=2),
    FaultRow("500", None, "HTTP 500: Internal Server Error", 1, requests=RETRIES + 1),
    FaultRow("429", 1, RECOVERED, 0, requests=2),
    FaultRow("429", None, 'HTTP 429: {"error": "rate limited"} (Retry-After 0.2 s)', 1),
    FaultRow("400", None, 'answered HTTP 400: {"error": {"message": "max_tokens is too large", "code": 400}}', 1,
             requests=1),  # a client error is not retried
    FaultRow("hang", 1, RECOVERED, 0, requests=2),
    FaultRow("hang", None, f"no answer within {TIMEOUT:g} s (read timeout; see --request-timeout)", 1,
             requests=RETRIES + 1),
    FaultRow("reset", 1, RECOVERED, 0, requests=2),
    FaultRow("reset", None, "the connection broke while reading the answer (reset by the server)", 1),
    FaultRow("wrong-content-type", None, RECOVERED, 0, requests=1),  # JSON is JSON whatever its label
    FaultRow("huge", None, "a body larger than 1 MiB (stopped reading)", 1,
             cli_outcome="JSON that is not an object (a list)"),
]


def row_id(row: FaultRow) -> str:
    return f"{row.fault}-{'always' if row.times is None else f'{row.times}x'}"


def test_every_fault_of_the_fake_server_is_in_the_table():
    assert {r.fault for r in FAULT_TABLE} == set(FAULTS)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(lifetime=300, hang_seconds=3 * TIMEOUT + 1) as s:
        yield s


def serve(server: FakeOpenAIServer, row: FaultRow) -> None:
    if row.times is None:
        server.set(default=row.fault)
    else:
        server.set(*[row.fault] * row.times)


def chat_request(n: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt=[ChatMessage(role="user", content="What is 6 * 7?")],
                             sampling=SamplingConfig(n=n, max_tokens=16))


@pytest.mark.parametrize("row", FAULT_TABLE, ids=[row_id(r) for r in FAULT_TABLE])
async def test_backend_fault(row, server):
    serve(server, row)
    backend = OpenAIBackend(base_url=server.url, backoff=0.01, request_timeout=TIMEOUT, max_retries=RETRIES,
                            max_response_bytes=2**20)
    try:
        if row.outcome == RECOVERED:
            (samples,) = await backend.generate([chat_request()])
            assert len(samples) == 2 and all("42" in s.text for s in samples)
        else:
            with pytest.raises(BackendError) as caught:
                await backend.generate([chat_request()])
            message = str(caught.value)
            assert "\n" not in message and row.outcome in message, message
            assert f"{server.url}/chat/completions" in message
            if row.fault != "400":
                assert ATTEMPTS in message
    finally:
        await backend.aclose()
    if row.requests is not None:
        assert len(server.completion_requests) == row.requests


@pytest.mark.parametrize("row", FAULT_TABLE, ids=[row_id(r) for r in FAULT_TABLE])
def test_cli_fault(row, server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(openai_backend, "DEFAULT_BACKOFF", 0.01)
    monkeypatch.setattr(registry, "_BACKENDS", {})
    serve(server, row)
    out = tmp_path / "run"
    code = main(["eval", "--task", "gsm8k", "--limit", "1", "-n", "2", "--backend", "openai", "--base-url", server.url,
                 "--request-timeout", str(TIMEOUT), "--max-retries", str(RETRIES), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == row.cli_exit, err
    assert "Traceback" not in err
    if row.cli_exit == 0:
        results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert len(results) == 1 and results[0]["n_samples"] == 2
    else:
        lines = [line for line in err.splitlines() if line.startswith("tts: ")]
        assert len(lines) == 1, err
        assert lines[0].startswith("tts: backend error: ")
        assert (row.cli_outcome or row.outcome) in lines[0] and server.url in lines[0], lines[0]
        assert not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text()


# ================================================================================================ beyond the table


async def test_retry_after_is_honoured(server):
    server.retry_after = "0.3"
    try:
        server.set("429")
        backend = OpenAIBackend(base_url=server.url, backoff=0.001, request_timeout=5, max_retries=2)
        (samples,) = await backend.generate([chat_request()])
        await backend.aclose()
    finally:
        server.retry_after = "0.2"
    times = [t for t, _, _ in server.completion_requests]
    assert len(samples) == 2 and len(times) == 2
    assert times[1] - times[0] >= 0.3 * 0.95  # the server's wait, not the 1 ms backoff


async def test_a_hang_costs_attempts_times_the_timeout_and_not_more(server):
    server.set(default="hang")
    backend = OpenAIBackend(base_url=server.url, backoff=0.001, request_timeout=0.2, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"failed after 2 attempts: no answer within 0.2 s"):
        await backend.generate([chat_request()])
    await backend.aclose()
    assert time.perf_counter() - started < 2 * 0.2 + 1.0


async def test_a_broken_model_list_is_a_user_error_naming_the_server(server):
    server.models_fault = "html"
    try:
        backend = OpenAIBackend(base_url=server.url, backoff=0.001, request_timeout=1, max_retries=1)
        with pytest.raises(UserError, match=r"cannot reach the OpenAI-compatible server at .*/models failed after "
                                            r"2 attempts: the server answered with a body that is not JSON \(text/html"):
            await backend.generate([chat_request()])
        await backend.aclose()
    finally:
        server.models_fault = "ok"


async def test_concurrent_requests_each_recover(server):
    server.set("500", "truncated", "reset", "html")
    backend = OpenAIBackend(base_url=server.url, backoff=0.01, request_timeout=2, max_retries=3)
    out = await backend.generate([chat_request() for _ in range(6)])
    await backend.aclose()
    assert [len(s) for s in out] == [2] * 6


def test_nothing_is_lost_when_the_server_fails_mid_run(server, tmp_path, capsys, monkeypatch):
    """Finished problems stay saved when the server dies; the rerun generates only what is missing."""
    monkeypatch.setattr(openai_backend, "DEFAULT_BACKOFF", 0.01)
    monkeypatch.setattr(registry, "_BACKENDS", {})
    out = tmp_path / "run"
    argv = ["eval", "--task", "gsm8k", "--limit", "2", "-n", "2", "--backend", "openai", "--base-url", server.url,
            "--request-timeout", "1", "--max-retries", "1", "--out", str(out), "--no-progress", "--concurrency", "1",
            "--scorer", "none"]  # one request per problem (gsm8k's default judge would interleave a second one)
    server.set("ok", default="500")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "Traceback" not in err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    server.set(default="ok")
    assert main(argv) == 0
    assert len(server.completion_requests) == 1  # only the missing problem
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_request_timeout_default_agrees_with_the_cli_help():
    from tts import cli

    assert cli.DEFAULT_REQUEST_TIMEOUT == openai_backend.DEFAULT_REQUEST_TIMEOUT
    assert cli.DEFAULT_MAX_RETRIES == openai_backend.DEFAULT_MAX_RETRIES


def test_the_fake_server_stops_by_itself():
    s = FakeOpenAIServer(lifetime=0.2).start()
    time.sleep(0.6)
    import httpx

    with pytest.raises(httpx.TransportError):
        httpx.get(f"{s.url}/models", timeout=0.5)
