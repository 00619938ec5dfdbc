"""The tree-search strategies end to end on the scripted backend: tree, budget, batching, prompts, no leak."""

import pickle
import random
import re

import pytest

import tts.registry
from tests.fakes import ToyTask
from tts.backends.render import prompt_text
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.strategies.ab_mcts_a import ABMCTSA
from tts.strategies.ab_mcts_m import ABMCTSM
from tts.strategies.mcts import MCTS
from tts.strategies.refinement import CODE_FORMAT, refinement_prompt
from tts.strategies.tree_search import Action, TreeSearch
from tts.strategy import StrategyContext
from tts.tasks.humaneval import HumanEval
from tts.types import Candidate, ChatMessage, Problem, SamplingConfig, Verdict
from tts.verifier import Verifier

STRATEGIES = {"mcts": MCTS, "ab-mcts-a": ABMCTSA, "ab-mcts-m": ABMCTSM}


class TensVerifier(Verifier):
    """Selection verifier for the toy task: score = answer / 10 (capped), with feedback saying why."""

    name = "tens"
    description = "answer / 10"

    def verify(self, problem, candidate):
        value = int(candidate.answer) if candidate.answer else 0
        score = min(max(value, 0), 10) / 10
        return Verdict(verifier=self.name, score=score, passed=score == 1.0,
                       feedback="ok" if score == 1.0 else f"{value} is too small")


def improving_model(text: str, index: int) -> str:
    """Fresh answers are 2; a refinement adds 2 to the answer it was shown."""
    shown = re.findall(r"Assistant: answer (\d+)", text)
    return f"answer {int(shown[-1]) + 2}" if shown and "Re-check" in text else "answer 2"


def toy_ctx(script=improving_model, sampling=None, seed=0):
    task = ToyTask(selection=[TensVerifier()])
    backend = ScriptedBackend(script)
    ctx = StrategyContext(backend=backend, answers=task, scorers=task.default_scorers(),
                          sampling=sampling or SamplingConfig(), rng=random.Random(seed))
    return task.load(1)[0].problem, ctx, backend


@pytest.mark.parametrize("name", STRATEGIES)
async def test_search_keeps_the_whole_tree_and_answers_with_the_best_node(name):
    problem, ctx, backend = toy_ctx()
    result = await STRATEGIES[name](n=10, batch_size=3).run(problem, ctx)
    tree = result.info["tree"]
    assert len(result.candidates) == 10 and len(tree) == 11 and result.info["generations"] == 10
    assert tree[0]["parent"] is None and tree[0]["score"] == -1.0
    for row in tree[1:]:
        parent = tree[row["parent"]]
        assert row["depth"] == parent["depth"] + 1 and row["id"] in parent["children"]
        cand = result.candidates[row["id"] - 1]
        assert cand.info["node"] == row["id"] and cand.info["score"] == row["score"] == cand.verdicts[0].score
        assert row["tokens"] == cand.completion_tokens and row["feedback"] == cand.verdicts[0].feedback
    scores = [row["score"] for row in tree[1:]]
    assert result.chosen == scores.index(max(scores))  # best score, earliest on ties
    assert result.answer == result.candidates[result.chosen].answer and result.confidence == max(scores)
    assert max(scores) >= 0.4 and result.info["max_depth"] >= 2  # refinements happened and improved
    # one engine call per step, each step at most batch_size expansions, the budget spent exactly
    sizes = result.info["batch_sizes"]
    assert sum(sizes) == 10 and max(sizes) <= 3 and len(backend.calls) == len(sizes)
    assert result.usage.backend_calls == len(sizes) and result.usage.verifier_calls == 10
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    # expansions of one node share a request (n > 1)
    assert len(backend.calls[0]) == 1 and backend.calls[0][0].sampling.n == sizes[0]


async def test_refinement_prompts_show_the_parent_answer_and_its_feedback():
    problem, ctx, backend = toy_ctx()
    await MCTS(n=4).run(problem, ctx)  # two fresh answers, then two refinements of the better one
    first, second = backend.calls
    assert [r.prompt for r in first] == [problem.prompt]
    (refine,) = second
    assert refine.sampling.n == 2
    assert refine.prompt[:-2] == problem.prompt and refine.prompt[-2].role == "assistant"
    assert refine.prompt[-2].content == "answer 2"
    assert "2 is too small" in refine.prompt[-1].content and "Re-check" in refine.prompt[-1].content


async def test_search_is_reproducible_from_the_context_seed():
    runs = []
    for _ in range(2):
        problem, ctx, _ = toy_ctx(seed=3)
        runs.append((await ABMCTSA(n=8, batch_size=2).run(problem, ctx)).info["tree"])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", STRATEGIES)
async def test_a_search_paused_and_pickled_between_steps_resumes_to_the_same_tree(name):
    strategy = STRATEGIES[name](n=9, batch_size=2)
    problem, ctx, _ = toy_ctx(seed=4)
    whole = await strategy.run(problem, ctx)
    problem, ctx, _ = toy_ctx(seed=4)
    first = TreeSearch(strategy.algorithm, strategy.config.model_copy(update={"n": 4}), problem, ctx)
    saved = pickle.dumps(await first.run())
    fresh = STRATEGIES[name](n=9, batch_size=2)  # a new process would build everything again
    problem, ctx, backend = toy_ctx(seed=99)  # the search's randomness lives in the saved state
    second = TreeSearch(fresh.algorithm, fresh.config, problem, ctx)
    resumed = second.result(await second.run(pickle.loads(saved)), name)
    assert resumed.info["tree"] == whole.info["tree"] and resumed.chosen == whole.chosen
    assert sum(r.sampling.n for call in backend.calls for r in call) == 5  # only the remaining budget


async def test_token_cap_stops_the_search():
    problem, ctx, _ = toy_ctx()
    result = await ABMCTSA(n=10, batch_size=2, max_total_tokens=5).run(problem, ctx)
    assert result.info["stopped"] == "token cap"
    assert result.info["generations"] == 4 and result.usage.completion_tokens == 8  # 2 tokens per answer


async def test_actions_set_temperatures_and_a_second_model_counts_against_the_problem(monkeypatch):
    second = ScriptedBackend(lambda text, i: "answer 8", model="other")
    built = []

    def fake_build_backend(kind, model, base_url=None, **options):
        built.append((kind, model, base_url, options))
        return second

    monkeypatch.setattr(tts.registry, "build_backend", fake_build_backend)
    actions = [Action(temperature=0.2), Action(name="hot", temperature=1.0),
               Action(name="big", model="other", backend="openai", base_url="http://x/v1")]
    problem, ctx, backend = toy_ctx()
    result = await ABMCTSA(n=12, batch_size=4, actions=actions).run(problem, ctx)
    counts = result.info["action_counts"]
    assert set(counts) == {"default T=0.2", "hot", "big"} and sum(counts.values()) == 12
    temperatures = {r.sampling.temperature for call in backend.calls for r in call}
    assert temperatures <= {0.2, 1.0}
    assert all(c.info["action"] in counts for c in result.candidates)
    assert built and built[0] == ("openai", "other", "http://x/v1", {})
    assert result.usage.backend_calls == len(backend.calls) + len(second.calls)
    assert all(c.answer == "8" for c in result.candidates if c.info["action"] == "big")
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)


async def test_requests_get_distinct_seeds_when_the_sampling_has_one():
    problem, ctx, backend = toy_ctx(sampling=SamplingConfig(seed=11))
    await MCTS(n=8).run(problem, ctx)
    seeds = [r.sampling.seed for call in backend.calls for r in call]
    assert None not in seeds and len(set(seeds)) == len(seeds)


def test_bad_options_and_missing_verifiers_are_user_errors(monkeypatch):
    with pytest.raises(ValueError, match="distinct"):
        ABMCTSA(actions=[Action(temperature=1.0), Action(temperature=1.0)])
    with pytest.raises(ValueError):
        ABMCTSM(sampler="nuts")
    with pytest.raises(ValueError):
        MCTS(batch_size=0)
    monkeypatch.setitem(__import__("sys").modules, "pymc", None)
    with pytest.raises(UserError, match=r"tts-toolkit\[pymc\]"):
        ABMCTSM(sampler="pymc")


async def test_a_search_without_scorers_is_refused():
    task = ToyTask()
    ctx = StrategyContext(backend=ScriptedBackend(["1"]), answers=task, scorers=[])
    with pytest.raises(UserError, match="none was given"):
        await ABMCTSA(n=2).run(task.load(1)[0].problem, ctx)


# ---- refinement prompts ----------------------------------------------------------------------------

CODE_PROBLEM = Problem(id="c", task="t", kind="code", question="def f(x):\n", entry_point="f",
                       prompt=[ChatMessage(role="system", content="sys"), ChatMessage(role="user", content="write f")])


@pytest.mark.parametrize("passed,phrase", [(False, "Fix the function"), (True, "edge cases"), (None, "edge cases")])
def test_code_refinement_prompt(passed, phrase):
    cand = Candidate(text="blah ```python\ndef f(x): return 1\n```", answer="def f(x): return 1\n",
                     verdicts=[Verdict(verifier="docstring-examples", score=0.5, passed=passed)])
    prompt = refinement_prompt(CODE_PROBLEM, cand, "1/2 examples passed.\nFailed: assert f(2) == 4")
    assert prompt[:2] == CODE_PROBLEM.prompt
    assert prompt[2] == ChatMessage(role="assistant", content="```python\ndef f(x): return 1\n```")
    assert prompt[3].role == "user" and "Failed: assert f(2) == 4" in prompt[3].content
    assert phrase in prompt[3].content and prompt[3].content.endswith(CODE_FORMAT)


def test_math_refinement_prompt_on_text_and_chat_prompts():
    cand = Candidate(text="so x = 3. The answer is 3.", answer="3")
    chat = Problem(id="m", task="t", question="q", prompt=[ChatMessage(role="user", content="q?")])
    prompt = refinement_prompt(chat, cand, "")
    assert prompt[1].content == cand.text and "Re-check the solution" in prompt[2].content
    assert "format the problem asks for" in prompt[2].content and "reported" not in prompt[2].content
    raw = chat.model_copy(update={"prompt": "Q: q?\nA:"})
    text = refinement_prompt(raw, cand, "looks off")
    assert isinstance(text, str) and text.startswith("Q: q?\nA:" + cand.text) and "looks off" in text


# ---- HumanEval: hidden tests never reach a prompt or the selection ------------------------------------

@pytest.fixture
def humaneval_items(monkeypatch):
    monkeypatch.setenv("TTS_DATA_SOURCE", "local")
    return [it for it in HumanEval().load(4) if it.problem.public_tests][:2]


def hidden_lines(item) -> list[str]:
    """Lines of the hidden test code that the problem statement does not show."""
    return [ln.strip() for ln in item.reference.tests.splitlines()
            if len(ln.strip()) >= 12 and ln.strip() not in item.problem.question]


@pytest.mark.parametrize("name", STRATEGIES)
async def test_humaneval_hidden_tests_never_reach_prompts_or_selection(name, humaneval_items):
    task = HumanEval()

    def model(text: str, index: int) -> str:
        """A wrong first answer; the reference solution when asked to refine (the script sees the prompt only)."""
        item = next(it for it in humaneval_items if f"def {it.problem.entry_point}(" in text)
        if "Running the examples" in text:
            return f"Fixed:\n```python\n{item.reference.solution}\n```"
        return f"```python\ndef {item.problem.entry_point}(*args):\n    return None\n```"

    backend = ScriptedBackend(model)
    for item in humaneval_items:
        assert item.reference.tests not in item.problem.model_dump_json()  # by construction
        ctx = StrategyContext(backend=backend, answers=task, scorers=task.default_scorers(),
                              rng=random.Random(1))
        result = await STRATEGIES[name](n=6, batch_size=2).run(item.problem, ctx)
        verdicts = [v for c in result.candidates for v in c.verdicts]
        assert {v.verifier for v in verdicts} == {"docstring-examples"}
        assert result.info["max_depth"] >= 2  # refinement prompts were built and sent
        for line in hidden_lines(item):
            assert all(line not in v.feedback for v in verdicts)
        best = result.candidates[result.chosen]
        assert best.verdicts[0].passed and task.oracle(item.problem, item.reference).verify(item.problem, best).passed
    prompts = [prompt_text(r.prompt, r.continuation) for call in backend.calls for r in call]
    refinements = [p for p in prompts if "Running the examples" in p]
    assert refinements and all("examples passed" in p for p in refinements)  # the docstring feedback is shown
    for item in humaneval_items:
        assert hidden_lines(item)
        for p in prompts:
            assert item.reference.tests not in p and "def check(" not in p
            assert not [line for line in hidden_lines(item) if line in p]
