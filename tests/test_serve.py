"""`tts serve` through the official openai client: answers equal the strategy's own, usage counts every token
(the judge's too), extensions, streaming with progress, the model-name scheme, bad requests and API keys.

Limits, concurrency and cancellation are in tests/test_serve_limits.py.
"""

from __future__ import annotations

import json
import random

import httpx
import openai
import pytest

from tests.serve_harness import ANSWERS, WatchedBackend, math_messages, serve
from tts.api import asolve
from tts.registry import build_scorers, build_strategy, build_task
from tts.serve import parse_model
from tts.strategy import StrategyContext
from tts.types import SamplingConfig

QUESTION = "What is 3 + 4?"


def client(served, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def usage_sums(usage) -> tuple[int, int]:
    return (usage.prompt_tokens + usage.scorer_prompt_tokens, usage.completion_tokens + usage.scorer_completion_tokens)


# ---- answers equal the strategy's own ------------------------------------------------------------------

@pytest.mark.parametrize("model, strategy, options, scorers", [
    # majority vote, the task's default scorer (the judge) scoring every candidate on the served model
    ("self-consistency:n=4", "self-consistency", {"n": 4}, None),
    # best-of-n by the judge's score, named in the model string
    ("best-of-n:n=3,scorers=judge", "best-of-n", {"n": 3}, ["judge"]),
    # no scorer at all: only the generator's tokens are spent
    ("self-consistency:n=4,scorers=none", "self-consistency", {"n": 4}, []),
])
async def test_chat_answer_and_usage_equal_asolve(model, strategy, options, scorers):
    with serve() as served:
        response = client(served).chat.completions.create(model=model, messages=math_messages(QUESTION), seed=5)
    reference = await asolve(QUESTION, strategy, backend=WatchedBackend(), task="math500", seed=5,
                             scorers=scorers, **options)
    assert response.object == "chat.completion" and response.model == model
    assert response.choices[0].message.content == reference.text
    assert response.choices[0].finish_reason == "stop"
    prompt, completion = usage_sums(reference.usage)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt, completion)
    assert response.usage.total_tokens == prompt + completion
    ext = response.model_extra["tts"]
    assert ext["answer"] == reference.answer and ext["confidence"] == pytest.approx(reference.confidence)
    assert ext["strategy"] == strategy and ext["options"]["n"] == options["n"] and ext["seed"] == 5
    assert ext["usage"]["backend_calls"] == reference.usage.backend_calls
    assert ext["usage"]["scorer_prompt_tokens"] == reference.usage.scorer_prompt_tokens
    if scorers == []:
        assert reference.usage.scorer_prompt_tokens == 0 and ext["scorers"] == []
    else:  # the judge really spent tokens, and they are in usage
        assert reference.usage.scorer_prompt_tokens > 0 and reference.usage.scorer_completion_tokens > 0
        assert [s["name"] for s in ext["scorers"]] == ["judge"]
    assert "candidates" not in ext and "info" not in ext  # only when asked


async def test_completions_prompt_is_verbatim_and_answer_equals_the_strategy():
    prompt = "Q: What is 3 + 4? Put the answer in \\boxed{}.\nA:"
    with serve() as served:
        response = client(served).completions.create(model="self-consistency:n=3", prompt=prompt, max_tokens=64,
                                                     stop=["\n\n"], extra_body={"tts": {"scorers": ["none"]}})
        sent = served.backend.calls[0][0]
    assert sent.prompt == prompt and sent.sampling.max_tokens == 64 and sent.sampling.stop == ("\n\n",)
    task = build_task("math500")
    problem = task.make_problem(prompt, "x").model_copy(update={"prompt": prompt})
    ctx = StrategyContext(backend=WatchedBackend(), answers=task, scorers=[], rng=random.Random(0),
                          sampling=SamplingConfig(max_tokens=64, stop=("\n\n",)))
    reference = await build_strategy("self-consistency", n=3).run(problem, ctx)
    assert response.object == "text_completion"
    assert response.choices[0].text == reference.text
    assert response.usage.prompt_tokens == reference.usage.prompt_tokens
    assert response.usage.completion_tokens == reference.usage.completion_tokens


def test_sampling_fields_reach_the_backend_and_body_options_override_the_model_string():
    with serve() as served:
        response = client(served).chat.completions.create(
            model="self-consistency:n=2", messages=[{"role": "developer", "content": "Be brief."},
                                                    {"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
            temperature=0.3, top_p=0.9, max_completion_tokens=77, stop="END",
            extra_body={"tts": {"options": {"n": 3}, "scorers": []}})
        request = served.backend.calls[0][0]
    assert request.sampling.n == 3  # the body's n=3 over the model string's n=2
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.max_tokens,
            request.sampling.stop) == (0.3, 0.9, 77, ("END",))
    assert [(m.role, m.content) for m in request.prompt] == [("system", "Be brief."), ("user", QUESTION)]
    assert response.model_extra["tts"]["options"]["n"] == 3


def test_include_returns_candidates_with_verdicts_and_groups_and_the_info():
    with serve() as served:
        response = client(served).chat.completions.create(
            model="self-consistency:n=4", messages=math_messages(QUESTION),
            extra_body={"tts": {"include": ["candidates", "info"]}})
    ext = response.model_extra["tts"]
    candidates = ext["candidates"]
    assert [c["text"] for c in candidates] == ANSWERS
    assert [c["answer"] for c in candidates] == ["7", "8", "7", "12"]
    assert [c["verdicts"][0]["verifier"] for c in candidates] == ["judge"] * 4
    assert [round(c["verdicts"][0]["score"], 3) for c in candidates] == [0.9, 0.2, 0.9, 0.2]
    assert [c["group"] for c in candidates] == [0, 1, 0, 2]  # the vote groups
    assert [c["chosen"] for c in candidates] == [True, False, False, False]
    assert ext["info"]["groups"][0] == {"answer": "7", "count": 2, "score": 2.0}
    assert ext["chosen"] == 0 and response.choices[0].message.content == ANSWERS[0]


def test_no_chosen_candidate_is_an_empty_answer_with_the_reason():
    with serve() as served:
        response = client(served).chat.completions.create(model="self-consistency:n=2,scorers=none",
                                                          messages=[{"role": "user", "content": "say nothing"}])
    assert response.choices[0].message.content == "" and response.choices[0].finish_reason == "stop"
    ext = response.model_extra["tts"]
    assert ext["answer"] is None and ext["chosen"] is None
    assert "2 of them without an answer" in ext["reason"]
    assert response.usage.completion_tokens > 0  # the search still cost tokens, and says so


# ---- streaming ----------------------------------------------------------------------------------------

def test_stream_with_progress_events_then_answer_finish_usage_and_done():
    with serve(WatchedBackend(delay=0.3)) as served:
        stream = client(served).chat.completions.create(
            model="self-consistency:n=4", messages=math_messages(QUESTION), stream=True,
            stream_options={"include_usage": True}, extra_body={"tts": {"progress": True}})
        chunks = list(stream)  # the official client parses every chunk
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    progress = [c.model_extra["tts"]["progress"] for c in chunks if c.model_extra.get("tts", {}).get("progress")]
    # one event after the generation call finished (the judge still running), one with the totals
    assert [p["backend_calls"] for p in progress] == [1, 2]
    assert progress[0]["samples"] == 4 and progress[0]["elapsed_seconds"] > 0
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ANSWERS[0]
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert finish[0].model_extra["tts"]["answer"] == "7"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens == progress[-1]["prompt_tokens"]  # the proxy counted the judge's calls too
    assert usage.completion_tokens == progress[-1]["completion_tokens"]


def test_stream_without_progress_or_usage_and_the_raw_done_line():
    with serve() as served:
        body = {"model": "best-of-n:n=2", "prompt": "2+2? \\boxed{}", "stream": True}
        with httpx.stream("POST", f"{served.base_url}/completions", json=body, timeout=10) as r:
            lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert not any("progress" in c.get("tts", {}) for c in chunks) and not any("usage" in c for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) in ANSWERS


# ---- models and the naming scheme ---------------------------------------------------------------------

def test_models_lists_every_strategy_and_what_the_backend_serves():
    from tts import registry

    with serve() as served:
        page = client(served).models.list()
        raw = httpx.get(f"{served.base_url}/models", timeout=5).json()
    assert sorted(m.id for m in page.data) == registry.names("strategies")
    sc = next(m for m in page.data if m.id == "self-consistency")
    assert sc.model_extra["tts"]["options"]["n"] == 8
    assert raw["tts"]["served"] == {"backend": "scripted", "model": "scripted",
                                    "script": "tests.serve_harness.script"}
    assert raw["tts"]["task"] == "math500" and [s["name"] for s in raw["tts"]["default_scorers"]] == ["judge"]


@pytest.mark.parametrize("model, expected", [
    # the strategy alone
    ("self-consistency", {"strategy": "self-consistency"}),
    # JSON values, else strings; dashes in keys become underscores
    ("beam-search:n=8,beam-width=2,perturb=rephrase", {"strategy": "beam-search", "options": {
        "n": 8, "beam_width": 2, "perturb": "rephrase"}}),
    # the reserved key scorers: names joined by +; a dotted key is a scorer option
    ("best-of-n:n=4,scorers=judge+mean-logprob,judge.votes=3", {"strategy": "best-of-n", "options": {"n": 4},
     "scorers": ["judge", "mean-logprob"], "scorer_options": {"judge.votes": 3}}),
    # scorers=none: no scorer
    ("best-of-n:scorers=none", {"strategy": "best-of-n", "scorers": []}),
    # early-stop's own singular `scorer` option is a strategy option, not the reserved key
    ("early-stop:n=4,scorers=judge,scorer=judge", {"strategy": "early-stop", "options": {"n": 4, "scorer": "judge"},
     "scorers": ["judge"]}),
    # a JSON value holding commas stays whole
    ("some-strategy:weights=[1,2,3],n=4", {"strategy": "some-strategy", "options": {"weights": [1, 2, 3], "n": 4}}),
])
def test_parse_model(model, expected):
    assert parse_model(model).model_dump(exclude_defaults=True) == expected


@pytest.mark.parametrize("model, fragment", [
    (":n=4", "names no strategy"),  # no strategy
    ("self-consistency:n", "expected KEY=VALUE"),  # no value
    ("self-consistency:n=2,n=3", "given twice"),  # a key twice
])
def test_parse_model_refuses(model, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_model(model)


def test_the_body_strategy_replaces_the_model_name():
    with serve() as served:
        response = client(served).chat.completions.create(
            model="gpt-4o", messages=math_messages(QUESTION),
            extra_body={"tts": {"strategy": "best-of-n", "options": {"n": 2}, "scorers": ["mean-logprob"]}})
    ext = response.model_extra["tts"]
    assert (ext["strategy"], ext["options"]["n"], [s["name"] for s in ext["scorers"]]) == ("best-of-n", 2,
                                                                                           ["mean-logprob"])
    assert response.model == "gpt-4o"


# ---- bad requests: every one refused before any generation -----------------------------------------------

GOOD = {"model": "self-consistency:n=2", "messages": [{"role": "user", "content": "1+1?"}]}

BAD_REQUESTS = [
    # not JSON at all
    ("bad-json", "/chat/completions", b'{"model": "x", ', 400, "not valid JSON"),
    # required field missing
    ("missing-messages", "/chat/completions", {"model": "self-consistency"}, 400, "messages: required"),
    # messages of the wrong type
    ("messages-not-a-list", "/chat/completions", {**GOOD, "messages": "hi"}, 400, "messages:"),
    # an empty conversation
    ("empty-messages", "/chat/completions", {**GOOD, "messages": []}, 400, "messages: List should have at least 1"),
    # a role the server does not know
    ("bad-role", "/chat/completions", {**GOOD, "messages": [{"role": "tool", "content": "x"}]}, 400,
     "messages.0.role"),
    # no user turn to answer
    ("no-user-message", "/chat/completions", {**GOOD, "messages": [{"role": "system", "content": "x"}]}, 400,
     "at least one user message"),
    # temperature of the wrong type
    ("temperature-string", "/chat/completions", {**GOOD, "temperature": "hot"}, 400, "temperature:"),
    # negative temperature
    ("temperature-negative", "/chat/completions", {**GOOD, "temperature": -1}, 400, "temperature:"),
    # n other than 1: the budget belongs in the model string
    ("n-2", "/chat/completions", {**GOOD, "n": 2}, 400, "budget is in the model name"),
    # an OpenAI field this server cannot honour
    ("logprobs", "/chat/completions", {**GOOD, "logprobs": True}, 400, "logprobs: not a field this server accepts"),
    # an unknown strategy
    ("unknown-strategy", "/chat/completions", {**GOOD, "model": "gpt-4o"}, 404, "unknown model 'gpt-4o'"),
    # a strategy option value the plugin refuses
    ("bad-option-value", "/chat/completions", {**GOOD, "model": "self-consistency:n=0"}, 400,
     "bad options for strategy 'self-consistency': n: Input should be greater than or equal to 1"),
    # an option the strategy does not declare
    ("unknown-option", "/chat/completions", {**GOOD, "model": "self-consistency:beams=2"}, 400,
     "beams: Extra inputs are not permitted"),
    # a malformed model string
    ("model-no-value", "/chat/completions", {**GOOD, "model": "self-consistency:n"}, 400, "expected KEY=VALUE"),
    # an unknown scorer
    ("unknown-scorer", "/chat/completions", {**GOOD, "model": "best-of-n:scorers=oracle"}, 400,
     "unknown scorer 'oracle'"),
    # a scorer option no chosen scorer has
    ("bad-scorer-option", "/chat/completions", {**GOOD, "model": "best-of-n:scorers=judge,judge.votes=0"}, 400,
     "bad options for scorer 'judge': votes"),
    # a scorer with a model of its own would start an engine
    ("scorer-own-model", "/chat/completions", {**GOOD, "tts": {"scorers": ["judge"],
                                                                "scorer_options": {"model": "other"}}}, 400,
     "would start an engine"),
    # a scorer the strategy cannot use (step search needs a process scorer)
    ("scorer-refused-by-strategy", "/chat/completions", {**GOOD, "model": "beam-search:n=4,scorers=none"}, 400,
     "beam-search"),
    # budget over the server's cap
    ("budget-over-cap", "/chat/completions", {**GOOD, "model": "self-consistency:n=65"}, 400,
     "over this server's budget cap of 64"),
    # max_tokens over the server's cap
    ("max-tokens-over-cap", "/chat/completions", {**GOOD, "max_tokens": 100000}, 400, "cap of 4096"),
    # two token caps that disagree
    ("two-caps", "/chat/completions", {**GOOD, "max_tokens": 10, "max_completion_tokens": 20}, 400, "disagree"),
    # an unknown include
    ("bad-include", "/chat/completions", {**GOOD, "tts": {"include": ["tree"]}}, 400, "tts.include.0"),
    # an unknown extension key
    ("bad-extension-key", "/chat/completions", {**GOOD, "tts": {"budget": 3}}, 400, "tts.budget"),
    # an empty stop string
    ("empty-stop", "/chat/completions", {**GOOD, "stop": [""]}, 400, "stop string is empty"),
    # completions: prompt missing
    ("completion-no-prompt", "/completions", {"model": "self-consistency"}, 400, "prompt: required"),
    # completions: a token-id prompt
    ("completion-token-prompt", "/completions", {"model": "self-consistency", "prompt": [1, 2]}, 400, "prompt:"),
    # a route that does not exist
    ("no-route", "/embeddings", {"model": "x", "input": "y"}, 404, "no route /v1/embeddings"),
]


@pytest.mark.parametrize("row", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_requests_are_openai_errors_before_any_generation(row):
    _, path, body, status, fragment = row
    with serve() as served:
        kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
            else {"json": body}
        r = httpx.post(f"{served.base_url}{path}", timeout=10, **kw)
        assert served.backend.calls == []
        assert served.health()["in_flight"] == 0
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"] and "\n" not in error["message"]
    assert error["type"] == "invalid_request_error"


def test_unknown_model_through_the_client_is_not_found_with_code():
    with serve() as served, pytest.raises(openai.NotFoundError) as caught:
        client(served).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"


def test_a_failing_search_is_a_500_and_the_server_stays_up():
    with serve() as served:
        c = client(served)
        with pytest.raises(openai.InternalServerError) as caught:
            c.chat.completions.create(model="self-consistency:n=2", messages=[{"role": "user", "content": "fail"}])
        assert "RuntimeError: scripted engine failure" in caught.value.message
        assert served.health()["in_flight"] == 0
        ok = c.chat.completions.create(model="self-consistency:n=2", messages=math_messages(QUESTION))
    assert ok.model_extra["tts"]["answer"] == "7"


# ---- API key -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, status", [
    (None, 401),  # no Authorization header
    ("wrong", 401),  # a wrong key
    ("s3cret", 200),  # the right key
])
def test_api_key_is_required_on_every_v1_route(key, status):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    with serve(api_key="s3cret") as served:
        chat = httpx.post(f"{served.base_url}/chat/completions", json=GOOD, headers=headers, timeout=10)
        models = httpx.get(f"{served.base_url}/models", headers=headers, timeout=10)
        health = httpx.get(f"{served.url}/health", timeout=10)  # load balancers probe without a key
    assert (chat.status_code, models.status_code, health.status_code) == (status, status, 200)
    if status == 401:
        assert chat.json()["error"]["code"] == "invalid_api_key"


def test_api_key_through_the_client():
    with serve(api_key="s3cret") as served:
        with pytest.raises(openai.AuthenticationError):
            client(served, api_key="wrong").models.list()
        assert client(served, api_key="s3cret").models.list().data


def test_shutdown_closes_the_backend_and_scorers():
    backend = WatchedBackend()
    judge = build_scorers(["judge"])
    closed = []

    async def aclose() -> None:
        closed.append("judge")

    judge[0].aclose = aclose
    with serve(backend, scorers=judge):
        assert not backend.closed
    assert backend.closed and closed == ["judge"]


def test_problem_id_and_question_reach_the_scorers():
    """The judge's prompt carries the client's messages verbatim, then the candidate (a served problem is
    the client's prompt, not the task's)."""
    with serve() as served:
        client(served).chat.completions.create(model="best-of-n:n=1,scorers=judge",
                                               messages=[{"role": "user", "content": "Just 2+5? \\boxed{}"}])
        prompts = served.backend.prompts()
    assert prompts[0].startswith("User: Just 2+5? \\boxed{}\n") and "Answer Yes or No." not in prompts[0]
    assert prompts[1].startswith(prompts[0] + " " + ANSWERS[0]) and "Answer Yes or No." in prompts[1]
