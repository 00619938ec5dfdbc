"""Prompt perturbation (DivSampling, docs/perturb.md) on the scripted backend: seeded, recorded, additive,
one engine call for the samples, model-written hints and rephrasings counted and falling back on garbage."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.fakes import ToyTask
from tts import perturb
from tts.backends.render import prompt_text
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.registry import build_strategy
from tts.strategy import StrategyContext
from tts.tasks.gsm8k import GSM8K, INSTRUCTION
from tts.types import ChatMessage, GenerationRequest, Problem, Sample, SamplingConfig

QUESTION = "Tom has 3 apples and buys 4 more. How many apples?"
SHOTS = [ChatMessage(role="user", content=f"{INSTRUCTION}\n\nQuestion: What is 1 + 1?"),
         ChatMessage(role="assistant", content="1 + 1 = 2.\nThe answer is 2.")]
HINT = "Count the apples Tom had and the ones he bought."
REPHRASE = "Tom owns 3 apples and then gets 4 more; how many does he own now?"


def gsm8k_problem() -> Problem:
    """A GSM8K prompt with one worked shot: the last user message carries the answer-format instruction."""
    return GSM8K().make_problem(QUESTION, shots=SHOTS)


def writer(hint: str = HINT, rephrase: str = REPHRASE, answer: str = "3 + 4 = 7. The answer is 7."):
    """A script: the hint request gets `hint`, the rephrasing request `rephrase`, every other prompt `answer`."""
    def script(text: str, index: int) -> str:
        if "Write one short hint" in text:
            return hint
        if "Rewrite the problem in your own words" in text:
            return rephrase
        return answer
    return script


def context(script=None, seed: int = 0, task=None, **sampling) -> tuple[StrategyContext, ScriptedBackend]:
    backend = ScriptedBackend(script or writer())
    ctx = StrategyContext(backend=backend, answers=task or GSM8K(), rng=random.Random(seed),
                          sampling=SamplingConfig(max_tokens=64, **sampling))
    return ctx, backend


def last_user(prompt) -> str:
    return [m for m in prompt if m.role == "user"][-1].content


async def perturbed_run(spec: str, n: int = 6, seed: int = 0):
    ctx, backend = context(seed=seed)
    candidates = await ctx.sample_candidates(gsm8k_problem(), n, perturb=spec)
    return candidates, backend, ctx


# ================================================================================================ seeding

AGNOSTIC_SPECS = ["role", "instruction", "prefix", "role+instruction+prefix", "mix"]


@pytest.mark.parametrize("spec", AGNOSTIC_SPECS)
async def test_same_seed_same_perturbations_other_seed_others(spec):
    first, b1, _ = await perturbed_run(spec, n=8, seed=7)
    again, b2, _ = await perturbed_run(spec, n=8, seed=7)
    other, b3, _ = await perturbed_run(spec, n=8, seed=8)
    records = [c.info["perturbation"] for c in first]
    assert records == [c.info["perturbation"] for c in again]
    assert [r.prompt for r in b1.calls[-1]] == [r.prompt for r in b2.calls[-1]]
    assert records != [c.info["perturbation"] for c in other]
    assert len({last_user(r.prompt) for r in b1.calls[-1]}) > 1  # the samples' prompts differ from each other


def test_draw_is_deterministic_given_the_rng_state():
    for name in perturb.TASK_AGNOSTIC:
        assert perturb.draw(name, random.Random(3)) == perturb.draw(name, random.Random(3))


def test_prefix_is_nonsense_words_within_the_documented_bounds():
    rng = random.Random(0)
    for _ in range(50):
        words = perturb.draw("prefix", rng).text.split(" ")
        assert perturb.PREFIX_WORDS[0] <= len(words) <= perturb.PREFIX_WORDS[1]
        assert all(w.isascii() and w.islower() and w.isalpha() for w in words)
        assert all(perturb.PREFIX_LETTERS[0] <= len(w) <= perturb.PREFIX_LETTERS[1] for w in words)


def test_lists_have_twelve_distinct_entries_each_shown_in_the_docs():
    assert len(set(perturb.ROLES)) == 12 and len(set(perturb.INSTRUCTIONS)) == 12
    page = (Path(__file__).parents[1] / "docs" / "perturb.md").read_text()
    for i, text in [*enumerate(perturb.ROLES, 1), *enumerate(perturb.INSTRUCTIONS, 1)]:
        assert f"\n{i}. {text}\n" in page  # docs/perturb.md lists the exact texts


# ================================================================================================ prompts

ALL_SPECS = [*AGNOSTIC_SPECS, "hint", "rephrase", "hint+rephrase", "role+hint", "prefix+rephrase+instruction"]


@pytest.mark.parametrize("spec", ALL_SPECS)
async def test_every_prompt_keeps_question_instruction_and_shots_and_records_what_it_added(spec):
    candidates, backend, _ = await perturbed_run(spec)
    original = gsm8k_problem().prompt
    requests = backend.calls[-1]
    assert len(requests) == len(candidates) == 6
    for c, req in zip(candidates, requests):
        assert req.prompt[:-1] == original[:-1]  # the worked shot is untouched; only the last user turn changes
        content = last_user(req.prompt)
        assert QUESTION in content and INSTRUCTION in content
        record = c.info["perturbation"]
        assert record["spec"] == spec and record["name"] == "+".join(p["name"] for p in record["parts"])
        before = [p["text"] for p in record["parts"] if p["position"] == "before"]
        after = [p["text"] for p in record["parts"] if p["position"] == "after"]
        # exactly the recorded texts around the untouched original, nothing else
        assert content == "\n\n".join([*before, last_user(original), *after])
        assert all(p["text"] for p in record["parts"])  # the scripted hints and rephrasings are usable


async def test_combined_spec_applies_every_part_in_order():
    candidates, backend, _ = await perturbed_run("prefix+role+instruction", n=3)
    for c, req in zip(candidates, backend.calls[-1]):
        prefix, role, instruction = c.info["perturbation"]["parts"]
        assert (prefix["name"], role["name"], instruction["name"]) == ("prefix", "role", "instruction")
        assert role["text"] in perturb.ROLES and instruction["text"] in perturb.INSTRUCTIONS
        content = last_user(req.prompt)
        assert content.startswith(f"{prefix['text']}\n\n{role['text']}\n\n{INSTRUCTION}")
        assert content.endswith(f"{QUESTION}\n\n{instruction['text']}")


async def test_mix_picks_one_perturber_per_sample_and_asks_only_for_the_texts_it_needs():
    candidates, backend, ctx = await perturbed_run("mix", n=12, seed=4)
    names = [c.info["perturbation"]["name"] for c in candidates]
    assert set(names) <= set(perturb.PERTURBERS) and len(set(names)) > 2
    assert all(len(c.info["perturbation"]["parts"]) == 1 for c in candidates)
    written = backend.calls[0] if len(backend.calls) == 2 else []
    asked = {("hint" if "hint" in prompt_text(r.prompt) else "rephrase"): r.sampling.n for r in written}
    needed = {k: names.count(k) for k in perturb.TASK_SPECIFIC if names.count(k)}
    assert asked == needed
    assert ctx.usage.backend_calls == len(backend.calls) == (2 if needed else 1)


async def test_raw_text_prompt_is_perturbed_around_the_whole_text():
    problem = Problem(id="raw", task="toy", question="problem 2", prompt="Q: problem 2\nA:")
    ctx, backend = context(task=ToyTask())
    (c,) = await ctx.sample_candidates(problem, 1, perturb="role+instruction")
    role, instruction = (p["text"] for p in c.info["perturbation"]["parts"])
    assert backend.calls[-1][0].prompt == f"{role}\n\nQ: problem 2\nA:\n\n{instruction}"


def test_chat_prompt_without_user_message_is_refused():
    with pytest.raises(UserError, match="without a user message"):
        perturb.apply([ChatMessage(role="system", content="x")], [perturb.Addition("role", "r", "before")])


# ================================================================================================ engine calls

async def test_n_perturbed_samples_are_one_engine_call_of_n_single_requests():
    candidates, backend, ctx = await perturbed_run("role+instruction", n=5)
    assert len(backend.calls) == 1 and ctx.usage.backend_calls == 1
    assert [r.sampling.n for r in backend.calls[0]] == [1] * 5
    assert len(candidates) == 5 and all(c.answer == "7" for c in candidates)


async def test_overrides_reach_every_perturbed_request_and_a_fixed_seed_is_spread():
    ctx, backend = context()
    ctx.sampling = SamplingConfig(max_tokens=64, seed=100)  # a fixed per-request seed
    await ctx.sample_candidates(gsm8k_problem(), 3, perturb="prefix", logprobs=True, max_tokens=9)
    sent = [r.sampling for r in backend.calls[-1]]
    assert [s.seed for s in sent] == [100, 101, 102]  # identical prompts would otherwise repeat one sample
    assert all(s.logprobs and s.max_tokens == 9 and s.n == 1 for s in sent)


async def test_without_perturb_nothing_changes():
    ctx, backend = context()
    candidates = await ctx.sample_candidates(gsm8k_problem(), 4)
    (request,) = backend.calls[-1]
    assert request.prompt == gsm8k_problem().prompt and request.sampling.n == 4
    assert all("perturbation" not in c.info for c in candidates)
    assert ctx.rng.random() == random.Random(0).random()  # the problem's RNG was not read


# ================================================================================================ hint and rephrase

async def test_hints_are_one_request_with_n_k_counted_in_usage():
    candidates, backend, ctx = await perturbed_run("hint", n=4)
    assert len(backend.calls) == 2 and ctx.usage.backend_calls == 2
    (ask,) = backend.calls[0]
    assert ask.sampling.n == 4 and QUESTION in prompt_text(ask.prompt)
    assert ask.sampling.max_tokens == min(64, perturb.MAX_TOKENS["hint"])
    hint_words, answer_words = len(HINT.split()), len("3 + 4 = 7. The answer is 7.".split())
    assert ctx.usage.completion_tokens == 4 * hint_words + 4 * answer_words
    ask_prompt = len(prompt_text(ask.prompt).split())
    sample_prompts = sum(len(prompt_text(r.prompt).split()) for r in backend.calls[1])
    assert ctx.usage.prompt_tokens == ask_prompt + sample_prompts  # the hint request's prompt counted once
    for c in candidates:
        (part,) = c.info["perturbation"]["parts"]
        assert part == {"name": "hint", "text": perturb.HINT_LABEL + HINT, "position": "after"}


async def test_hint_and_rephrase_share_one_engine_call():
    candidates, backend, _ = await perturbed_run("hint+rephrase", n=3)
    assert len(backend.calls) == 2 and [r.sampling.n for r in backend.calls[0]] == [3, 3]
    texts = [p["text"] for p in candidates[0].info["perturbation"]["parts"]]
    assert texts == [perturb.HINT_LABEL + HINT, perturb.REPHRASE_LABEL + REPHRASE]


@pytest.mark.parametrize("spec,garbage,reason", [
    ("hint", "", "empty output"),                     # nothing at all
    ("hint", "  \n\n ", "empty output"),              # only whitespace
    ("rephrase", "*** ... ***", "no letters or digits"),  # punctuation only
    ("hint", "Hint:", "empty output"),                # a label and nothing after it
])
async def test_garbage_falls_back_to_the_unperturbed_prompt_and_says_so(spec, garbage, reason):
    ctx, backend = context(writer(hint=garbage, rephrase=garbage))
    candidates = await ctx.sample_candidates(gsm8k_problem(), 3, perturb=spec)
    assert all(r.prompt == gsm8k_problem().prompt for r in backend.calls[-1])
    for c in candidates:
        assert c.info["perturbation"]["parts"] == [{"name": spec, "text": "", "position": "after", "fallback": reason}]
    assert ctx.usage.backend_calls == 2  # the failed request was still paid for and counted


async def test_a_fallen_back_hint_keeps_the_other_parts():
    ctx, backend = context(writer(hint=""))
    (c,) = await ctx.sample_candidates(gsm8k_problem(), 1, perturb="role+hint")
    role, hint = c.info["perturbation"]["parts"]
    assert hint["fallback"] == "empty output"
    assert last_user(backend.calls[-1][0].prompt) == f"{role['text']}\n\n{last_user(gsm8k_problem().prompt)}"


def sample(text: str, finish: str = "stop") -> Sample:
    return Sample(text=text, token_count=1, finish_reason=finish)


@pytest.mark.parametrize("name,text,finish,expected", [
    # a label the model added is dropped, the text kept
    ("hint", "**Hint:** Add the two amounts.", "stop", ("Hint: Add the two amounts.", None)),
    ("rephrase", "Rephrased problem: Tom gets 4 more.", "stop", (perturb.REPHRASE_LABEL + "Tom gets 4 more.", None)),
    # a hint is its first paragraph: a solution after it is not passed on
    ("hint", "Add them.\n\nSo 3 + 4 = 7.", "stop", ("Hint: Add them.", None)),
    # ... even when the rest ran into the token cap
    ("hint", "Add them.\n\nSo 3 + 4 = 7 and then", "length", ("Hint: Add them.", None)),
    # a rephrasing keeps its paragraphs
    ("rephrase", "Tom has 3.\n\nHe buys 4.", "stop", (perturb.REPHRASE_LABEL + "Tom has 3.\n\nHe buys 4.", None)),
    # cut off at the cap: half a sentence is not used
    ("hint", "Think about how many apples Tom", "length", ("", "cut off at the token cap")),
    ("rephrase", "Tom has 3.\n\nHe buys", "length", ("", "cut off at the token cap")),
    # a plain-rendered chat that runs on into a new turn is cut there
    ("hint", "Add them.\nUser: and now solve it", "length", ("Hint: Add them.", None)),
    # garbage
    ("hint", "", "stop", ("", "empty output")),
    ("rephrase", "?!", "stop", ("", "no letters or digits")),
    # a text that gives the answer away would anchor every sample to it
    ("hint", "Add them: the answer is 7.", "stop", ("", "states a final answer")),
    ("hint", "It is \\boxed{7}", "stop", ("", "states a final answer")),
    ("rephrase", "Tom has 3 and buys 4. The final answer is 7.", "stop", ("", "states a final answer")),
    # ... but asking for the answer is fine
    ("rephrase", "How many apples is the answer to find?", "stop",
     (perturb.REPHRASE_LABEL + "How many apples is the answer to find?", None)),
])
def test_parse_generated(name, text, finish, expected):
    assert perturb.parse_generated(name, sample(text, finish)) == expected


async def test_fewer_texts_than_asked_fall_back_for_the_rest():
    async def short(requests: list[GenerationRequest]) -> list[list[Sample]]:
        return [[sample("Add them.")] for _ in requests]  # one text, whatever n was asked

    pool = await perturb.written(gsm8k_problem(), {"hint": 3}, short, SamplingConfig())
    assert [a.fallback for a in pool["hint"]] == [None, "the engine returned fewer texts than asked",
                                                  "the engine returned fewer texts than asked"]


# ================================================================================================ specs and options

@pytest.mark.parametrize("spec,fragment", [
    ("nonsense", "unknown perturber 'nonsense'"),     # not a perturber
    ("role+", "empty name in 'role+'"),               # a dangling '+'
    ("", "empty name in ''"),                         # nothing at all
    ("Role", "unknown perturber 'Role'"),             # names are lower case
    ("mix+role", "'mix' picks one perturber per sample and stands alone"),
    ("role+role", "names 'role' twice"),
])
def test_bad_specs_are_refused(spec, fragment):
    with pytest.raises(UserError) as exc:
        perturb.parse_spec(spec)
    assert fragment in str(exc.value)


def test_unknown_perturber_message_lists_the_valid_ones():
    with pytest.raises(UserError) as exc:
        perturb.parse_spec("nonsense")
    assert all(name in str(exc.value) for name in (*perturb.PERTURBERS, "mix"))


@pytest.mark.parametrize("spec,names", [
    ("role", ("role",)),
    (" role + instruction ", ("role", "instruction")),  # spaces around names are allowed
    ("hint+rephrase+prefix", ("hint", "rephrase", "prefix")),
    ("mix", ("mix",)),
])
def test_good_specs(spec, names):
    assert perturb.parse_spec(spec) == names


SAMPLING_STRATEGIES = ["repeated-sampling", "self-consistency", "best-of-n", "weighted-vote", "rpc", "perplexity"]


@pytest.mark.parametrize("name", SAMPLING_STRATEGIES)
async def test_every_sampling_strategy_passes_perturb_on(name):
    from tests.fakes import EvenVerifier

    task = ToyTask(selection=[EvenVerifier()])  # weighted-vote needs a scorer
    backend = ScriptedBackend(lambda text, i: f"so {10 + i}")
    ctx = StrategyContext(backend=backend, answers=task, scorers=task.default_scorers(), rng=random.Random(0))
    result = await build_strategy(name, n=4, perturb="role").run(task.load(1)[0].problem, ctx)
    assert [r.sampling.n for r in backend.calls[0]] == [1, 1, 1, 1]
    assert all(c.info["perturbation"]["parts"][0]["text"] in perturb.ROLES for c in result.candidates)


@pytest.mark.parametrize("name", SAMPLING_STRATEGIES)
def test_sampling_strategies_refuse_an_unknown_perturber(name):
    with pytest.raises(UserError) as exc:
        build_strategy(name, perturb="nonsense")
    assert f"bad options for strategy {name!r}: perturb:" in str(exc.value) and "valid: role" in str(exc.value)


@pytest.mark.parametrize("name", ["mcts", "beam-search", "phi-decoding"])
def test_tree_and_step_searches_do_not_take_perturb(name):
    with pytest.raises(UserError, match="perturb"):
        build_strategy(name, perturb="role")


def test_config_validates_directly():
    from tts.strategies.self_consistency import SelfConsistency

    assert SelfConsistency(perturb="role+hint").config.perturb == "role+hint"
    assert SelfConsistency().config.perturb is None
    with pytest.raises(ValidationError, match="unknown perturber"):
        SelfConsistency(perturb="nonsense")
