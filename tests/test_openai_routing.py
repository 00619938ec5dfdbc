"""Several OpenAI-compatible servers behind one backend: the routing table alone (fake clock), then the
backend, the runner and `tts eval` against two or three FakeOpenAIServer instances, one of them killed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence

import pytest

from tests.fake_openai_server import FakeOpenAIServer
from tts import registry
from tts.backends import openai as openai_backend
from tts.backends.base import AFFINITY, Watcher
from tts.backends.openai import OpenAIBackend
from tts.backends.routing import RoutingTable, server_urls
from tts.cli import main
from tts.errors import BackendError, UserError
from tts.runner import evaluate
from tts.runs import RunFolder
from tts.strategies.self_consistency import SelfConsistency
from tts.types import GenerationRequest, SamplingConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ================================================================================================ routing table

def test_least_outstanding_with_ties_to_the_lowest_index():
    table = RoutingTable(["a", "b", "c"])
    # (outstanding per server, expected pick for a new key)
    cases = [
        ((0, 0, 0), 0),  # all idle: the first
        ((1, 0, 0), 1),  # the first busy: the next idle one
        ((1, 1, 0), 2),
        ((2, 1, 1), 1),  # a tie between b and c: the lower index
        ((0, 3, 0), 0),
    ]
    for outstanding, expected in cases:
        for state, count in zip(table.servers, outstanding):
            state.outstanding = count
        assert table.pick(None) == expected, outstanding


def test_affinity_sticks_while_the_server_is_healthy_then_moves():
    table = RoutingTable(["a", "b"])
    first = table.pick("p1")
    table.begin(first)
    table.begin(first)  # p1's server is now the busier one
    other = table.pick("p2")
    assert (first, other) == (0, 1)
    table.begin(other)
    assert table.pick("p1") == 0  # stays, although b is less busy
    assert table.take_out(0, "cannot connect")
    assert table.pick("p1") == 1 and table.server_of("p1") == 1  # the key moved with its request
    table.end(0)
    table.end(0)
    assert table.pick("p1") == 1  # and stays on its new server


def test_the_last_healthy_server_is_never_taken_out():
    table = RoutingTable(["a", "b"])
    assert table.take_out(1, "reset")
    assert not table.take_out(0, "HTTP 500")  # the last one: its faults count against the retries instead
    assert table.healthy == [0] and table.servers[0].last_fault == "HTTP 500"
    assert not table.take_out(1, "again")  # already out: nothing changes
    assert table.servers[1].taken_out == 1
    single = RoutingTable(["only"])
    assert not single.take_out(0, "cannot connect") and single.healthy == [0]


def test_a_server_rejoins_after_a_successful_probe_once_its_cooldown_passed():
    clock = Clock()
    table = RoutingTable(["a", "b"], cooldown=30, clock=clock)
    assert table.pick("p") == 0
    table.take_out(0, "cannot connect")
    assert table.pick("p") == 1  # p moves to b
    clock.now = 29.9
    assert table.due_probes() == []  # still cooling down
    clock.now = 30.0
    assert table.due_probes() == [0]
    assert table.due_probes() == []  # one probe at a time
    table.probe_result(0, False, "still refused")
    assert table.healthy == [1] and table.servers[0].last_fault == "still refused"
    clock.now = 59.0
    assert table.due_probes() == []  # a failed probe starts another cooldown
    clock.now = 60.0
    assert table.due_probes() == [0]
    table.probe_result(0, True)
    assert table.healthy == [0, 1]
    stats = table.stats()[0]
    assert (stats["taken_out"], stats["rejoined"], stats["healthy"]) == (1, 1, True)
    assert table.pick("p") == 1  # p moved while a was out and stays where it is
    assert table.pick("new") == 0  # a new key: the idle rejoined server (ties: lowest index)


def test_affinity_keys_beyond_the_limit_are_forgotten_oldest_first():
    table = RoutingTable(["a", "b"], max_keys=2)
    for key in ("k1", "k2", "k3"):
        table.pick(key)
    assert table.server_of("k1") is None and table.server_of("k3") is not None


@pytest.mark.parametrize("value, error", [
    ("http://h:1/v1/", None),                              # one URL, a trailing slash dropped
    (["http://a/v1", "https://b:8443/v1"], None),          # several
    ([], "no server URL given"),                           # an empty list
    (["http://a/v1", "http://a/v1/"], "is given twice"),   # the same server twice
    (["http://a/v1", "localhost:8000"], "expected an http(s) URL"),
    ("http://h:port/v1", "bad port in"),
    ([8000], "a server URL must be text"),
])
def test_server_urls(value, error):
    if error is None:
        assert all(not u.endswith("/") for u in server_urls(value))
    else:
        with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
            server_urls(value)


# ================================================================================================ the backend

@pytest.fixture
def servers():
    made: list[FakeOpenAIServer] = []

    def make(count: int = 2, **kw) -> list[FakeOpenAIServer]:
        for _ in range(count):
            made.append(FakeOpenAIServer(lifetime=120, **kw).start())
        return made[-count:]

    yield make
    for s in made:
        s.stop()


def backend_for(servers: Sequence[FakeOpenAIServer], **kw) -> OpenAIBackend:
    kw = {"backoff": 0.01, "request_timeout": 20, "max_retries": 2, **kw}
    return OpenAIBackend(base_url=[s.url for s in servers], **kw)


def request(prompt: str, n: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, sampling=SamplingConfig(n=n, max_tokens=8))


def prompts(server: FakeOpenAIServer) -> list[str]:
    return [b.get("prompt") for b in server.bodies]


async def test_requests_spread_over_both_servers(servers):
    a, b = servers(2)
    backend = backend_for([a, b])
    out = await backend.generate([request(f"question {i}") for i in range(8)])
    await backend.aclose()
    assert [len(s) for s in out] == [1] * 8
    assert len(a.completion_requests) == 4 and len(b.completion_requests) == 4  # least outstanding alternates
    assert [s["sent"] for s in backend.server_stats()] == [4, 4]
    assert backend.info() == {"backend": "openai", "model": "fake-model", "base_urls": [a.url, b.url]}


async def test_all_requests_of_one_problem_land_on_one_server(servers):
    three = servers(3)
    backend = backend_for(three)

    async def problem(pid: str) -> None:
        AFFINITY.set(pid)  # as the runner does, in the problem's own task
        for step in range(4):  # one request after another, while the other problems run
            await backend.generate([request(f"{pid} step {step}")])

    await asyncio.gather(*(problem(f"p{i}") for i in range(6)))
    await backend.aclose()
    where = {}
    for index, server in enumerate(three):
        for prompt in prompts(server):
            where.setdefault(prompt.split()[0], set()).add(index)
    assert len(where) == 6 and all(len(found) == 1 for found in where.values()), where
    assert Counter(next(iter(found)) for found in where.values()) == {0: 2, 1: 2, 2: 2}  # and spread evenly


async def test_without_an_affinity_key_the_prompt_start_decides(servers):
    a, b = servers(2)
    backend = backend_for([a, b])
    head = "x" * 200  # the first 200 characters alike: one key, one server
    for tail in ("one", "two", "three"):
        await backend.generate([request(head + tail)])
    await backend.aclose()
    assert sorted([len(a.bodies), len(b.bodies)]) == [0, 3]


async def test_in_flight_requests_on_a_killed_server_are_sent_again_elsewhere(servers):
    a, b = servers(2, hang_seconds=30)
    a.set(default="hang")  # a's requests wait until a dies
    backend = backend_for([a, b])
    job = asyncio.ensure_future(backend.generate([request(f"q{i}", n=2) for i in range(6)]))
    deadline = time.monotonic() + 10
    while len(a.completion_requests) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(a.completion_requests) == 3 and not job.done()
    a.kill()
    out = await asyncio.wait_for(job, 10)
    stats = backend.server_stats()
    await backend.aclose()
    assert [len(s) for s in out] == [2] * 6  # nothing lost
    assert len(b.completion_requests) == 6  # three of its own, three moved whole
    assert sorted(prompts(b)) == [f"q{i}" for i in range(6)]
    assert stats[0]["taken_out"] == 1 and not stats[0]["healthy"] and stats[1]["healthy"]


async def test_a_refused_connection_moves_the_request_without_spending_a_retry(servers):
    a, b = servers(2)
    a.kill()  # nothing listens there any more
    backend = backend_for([b, a], max_retries=0)  # not one retry to spare
    backend._checked = True  # as if a had died after the check
    backend.model = "fake-model"
    out = await backend.generate([request("first"), request("second")])  # the second one goes to a first
    await backend.aclose()
    assert [len(s) for s in out] == [1, 1] and len(b.completion_requests) == 2
    assert backend.server_stats()[1]["taken_out"] == 1


async def test_a_server_taken_out_is_probed_after_the_cooldown_and_rejoins(servers):
    a, b = servers(2)
    clock = Clock()
    a.set(default="reset")  # the connection breaks: taken out at once
    backend = backend_for([a, b], clock=clock, server_cooldown=30)
    await backend.generate([request("p0")])
    assert backend.server_stats()[0]["taken_out"] == 1 and len(b.completion_requests) == 1
    a.set(default="ok")
    clock.now = 29.0
    await backend.generate([request("p1")])  # not yet probed: b
    assert backend.server_stats()[0]["healthy"] is False
    clock.now = 31.0
    await backend.generate([request("p2")])  # starts the probe; this request still goes to b
    for _ in range(200):
        if backend.server_stats()[0]["healthy"]:
            break
        await asyncio.sleep(0.01)
    assert backend.server_stats()[0]["rejoined"] == 1
    await backend.generate([request("p3")])  # a new key: the idle rejoined server
    await backend.aclose()
    assert prompts(a) == ["p3"] and prompts(b) == ["p0", "p1", "p2"]


async def test_when_every_server_fails_the_error_names_each_one(servers):
    a, b = servers(2)
    a.set(default="reset")
    b.set(default="500")
    backend = backend_for([a, b], max_retries=1)
    with pytest.raises(BackendError) as caught:
        await backend.generate([request("q")])
    await backend.aclose()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{b.url}/completions failed after 2 attempts: HTTP 500" in message
    assert f"the other servers are out: {a.url} (the connection broke" in message


async def test_a_watched_request_broken_on_a_dying_server_restarts_its_watcher_elsewhere(servers):
    a, b = servers(2)
    a.stream_delay = 0.3  # a streams slowly: there is time to kill it mid-sample

    class Count(Watcher):
        def __init__(self) -> None:
            self.seen = 0

        def observe(self, confidences: Sequence[float]) -> bool:
            self.seen += len(confidences)
            return False

    backend = backend_for([a, b])
    watcher = Count()
    req = GenerationRequest(prompt="q", sampling=SamplingConfig(n=1, max_tokens=8, top_logprobs=2))
    job = asyncio.ensure_future(backend.generate_watched([req], [watcher]))
    deadline = time.monotonic() + 10
    while not (a.streams and a.streams[0].sent >= 1) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    a.kill()
    (sample,) = await asyncio.wait_for(job, 10)
    await backend.aclose()
    assert a.streams[0].sent >= 1 and not a.streams[0].finished
    assert b.streams[0].finished and sample.token_count == 4
    assert watcher.seen == 4  # only the whole sample's tokens: the broken attempt's were forgotten


# ================================================================================================ check, identity

async def test_check_refuses_servers_of_different_models(servers):
    a, = servers(1)
    other, = servers(1, model="other-model")
    backend = backend_for([a, other])
    with pytest.raises(UserError, match=f"the servers do not serve the same model: {a.url} serve 'fake-model', "
                                        f"but {other.url} serves \\['other-model'\\]"):
        await backend.check()
    await backend.aclose()


async def test_a_server_down_at_start_is_reported_and_the_others_serve(servers, caplog):
    a, b = servers(2)
    a.kill()
    backend = backend_for([a, b])
    with caplog.at_level("WARNING"):
        (out,) = await backend.generate([request("q")])
    await backend.aclose()
    assert len(out) == 1 and len(b.completion_requests) == 1
    assert [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()] == [
        f"server {a.url} cannot be reached ({a.url}/models failed after 3 attempts: cannot connect "
        "(All connection attempts failed)); going on with the other 1"]
    assert backend.server_stats()[0]["healthy"] is False


async def test_every_server_down_at_start_is_a_user_error_naming_each(servers):
    a, b = servers(2)
    a.kill()
    b.kill()
    backend = backend_for([a, b], max_retries=0)
    with pytest.raises(UserError, match="cannot reach any of the 2 OpenAI-compatible servers") as caught:
        await backend.check()
    await backend.aclose()
    assert a.url in str(caught.value) and b.url in str(caught.value)


async def test_served_identity_is_the_same_shape_for_one_server_and_several(servers):
    a, b = servers(2)
    one = backend_for([a])
    two = backend_for([a, b])
    assert await one.served_identity() == await two.served_identity() == {"backend": "openai", "model": "fake-model"}
    assert one.info() == {"backend": "openai", "model": "fake-model", "base_url": a.url}
    await one.aclose()
    await two.aclose()


async def test_servers_describing_the_model_differently_are_refused(servers):
    a, = servers(1)
    b, = servers(1, model="fake-model-b")
    backend = backend_for([a, b])
    backend.model = "alias"  # listed by neither, so the check passes; what they list differs
    with pytest.raises(UserError, match="the servers describe the model differently") as caught:
        await backend.served_identity()
    await backend.aclose()
    assert a.url in str(caught.value) and b.url in str(caught.value)


# ================================================================================================ runs

def run_config(task: str = "gsm8k") -> dict:
    return {"task": task, "strategy": "self-consistency", "strategy_options": {"n": 2}, "model": None,
            "backend": "openai", "sampling": {}, "seed": 0, "task_options": {}}


async def test_a_run_survives_a_server_killed_mid_run_and_resumes_without_regenerating(servers, tmp_path):
    a, b = servers(2, hang_seconds=30)
    a.set("ok", default="hang")  # a answers one problem, then its requests wait until it dies
    task = registry.build_task("gsm8k")
    items = task.load(6)
    backend = backend_for([a, b])
    run = evaluate(task, items, SelfConsistency(n=2), backend, RunFolder(tmp_path), run_config(), SamplingConfig(),
                   concurrency=6, progress=False, scorers=[])
    job = asyncio.ensure_future(run)
    deadline = time.monotonic() + 20
    while len(a.completion_requests) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(a.completion_requests) == 3  # one answered, two in flight
    a.kill()
    await asyncio.wait_for(job, 30)
    await backend.aclose()
    ids = [json.loads(line)["problem_id"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(it.problem.id for it in items) and len(set(ids)) == 6  # each exactly once
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert Counter(s["problem_id"] for s in samples) == {it.problem.id: 2 for it in items}
    assert len(b.completion_requests) == 5  # the survivor served the rest

    # resume the same folder on the survivor alone: nothing is generated again
    survivor = backend_for([b])
    before = len(b.completion_requests)
    await evaluate(task, items, SelfConsistency(n=2), survivor, RunFolder(tmp_path), run_config(), SamplingConfig(),
                   concurrency=6, progress=False, scorers=[])
    await survivor.aclose()
    assert len(b.completion_requests) == before
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 6


@pytest.fixture
def quick_cli(monkeypatch):
    monkeypatch.setattr(openai_backend, "DEFAULT_BACKOFF", 0.01)
    monkeypatch.setattr(registry, "_BACKENDS", {})


def test_cli_eval_with_two_base_urls_and_a_url_file(servers, tmp_path, quick_cli, capsys, caplog):
    a, b = servers(2)
    out = tmp_path / "run"
    argv = ["eval", "--task", "gsm8k", "--limit", "4", "-n", "2", "--backend", "openai", "--base-url", a.url,
            "--base-url", b.url, "--scorer", "none", "--no-progress", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert len(a.completion_requests) == 2 and len(b.completion_requests) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["backend_info"]["base_urls"] == [a.url, b.url]
    assert "base_url" not in config.get("backend_options", {})  # where it ran is not what it is
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    spread = [r.getMessage() for r in caplog.records if r.getMessage().startswith("requests per server")]
    assert spread == [f"requests per server: {a.url}: 2 sent, 0 failed; {b.url}: 2 sent, 0 failed"]

    # the same run from a URL file (comments, blank lines), with the servers in another order: finished already
    urls = tmp_path / "servers.txt"
    urls.write_text(f"# the pool\n{b.url}\n\n{a.url}   # second\n")
    argv = [arg for arg in argv if arg not in ("--base-url", a.url, b.url)] + ["--base-url-file", str(urls)]
    assert main(argv) == 0
    assert len(a.completion_requests) + len(b.completion_requests) == 4  # nothing generated again

    # and a larger run from the file: a new folder, spread over both
    argv[argv.index("4")] = "6"
    argv[argv.index(str(out))] = str(tmp_path / "run6")
    assert main(argv) == 0
    assert len(a.completion_requests) + len(b.completion_requests) == 10
    assert len(a.completion_requests) > 2 and len(b.completion_requests) > 2
