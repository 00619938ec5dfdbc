"""Tasks: record counts, prompts, few-shot exemplars, oracles on reference solutions, no leak of hidden data."""

import json

import pytest

from tasks.gsm8k import GSM8K, exemplar_solution, gold_answer
from tasks.humaneval import HumanEval
from tasks.jsonl import JSONLTask
from tasks.math500 import MATH500
from tts.backends.render import plain_chat, render_prompt
from tts.types import Candidate, ChatMessage


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("TTS_DATA_SOURCE", "local")


@pytest.mark.parametrize("task_cls,count", [(GSM8K, 1319), (MATH500, 500), (HumanEval, 164)])
def test_packaged_copies_load_completely(task_cls, count):
    items = task_cls().load()
    assert len(items) == count
    assert len({it.problem.id for it in items}) == count
    assert task_cls().load(7)[6].problem.id == items[6].problem.id


def grade_reference(task, item):
    text = item.reference.solution
    candidate = Candidate(text=text, answer=task.extract_answer(text, item.problem))
    return task.oracle(item.problem, item.reference).verify(item.problem, candidate)


@pytest.mark.parametrize("task_cls", [GSM8K, MATH500])
def test_reference_solutions_score_100_percent(task_cls):
    task = task_cls()
    items = task.load()
    failures = [it.problem.id for it in items if not grade_reference(task, it).passed]
    assert failures == []


def test_humaneval_reference_solutions_pass_and_a_broken_one_fails():
    task = HumanEval()
    items = task.load(5)
    assert all(grade_reference(task, it).passed for it in items)
    item = items[0]
    broken = Candidate(text="", answer=item.problem.question + "    return None\n")
    assert task.oracle(item.problem, item.reference).verify(item.problem, broken).passed is False


def test_gsm8k_prompt_and_reference():
    item = GSM8K().load(1)[0]
    assert item.reference.answer == "18"
    (message,) = item.problem.prompt
    assert message.role == "user" and "The answer is N." in message.content
    assert item.problem.question in message.content and "####" not in message.content


def test_gsm8k_few_shot_uses_train_exemplars_in_answer_format():
    items = GSM8K(few_shot=2, seed=0).load(2)
    prompt = items[0].problem.prompt
    assert [m.role for m in prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert all(m.content.rstrip().endswith(".") and "The answer is" in m.content for m in prompt[1:4:2])
    assert all("<<" not in m.content and "####" not in m.content for m in prompt)
    assert items[1].problem.prompt[:4] == prompt[:4]  # same exemplars for every problem
    assert GSM8K(few_shot=2, seed=1).load(1)[0].problem.prompt[:4] != prompt[:4]


def test_gsm8k_answer_helpers():
    assert gold_answer("so 3 + 4 = 7\n#### 1,234") == "1234"
    assert exemplar_solution("a <<2*3=6>>6 b\n#### 6") == "a 6 b\nThe answer is 6."


def test_humaneval_public_tests_come_from_the_prompt_only():
    task = HumanEval()
    items = task.load()
    with_examples = [it for it in items if it.problem.public_tests]
    assert len(with_examples) >= 150
    for it in items:
        shown = json.dumps([m.model_dump() for m in it.problem.prompt])
        assert it.reference.tests not in shown
        assert "def check(" not in shown and "METADATA" not in shown
        # every public test calls the function as the prompt shows it
        assert all(it.problem.entry_point in t for t in it.problem.public_tests)
    assert [v.name for v in task.selection_verifiers()] == ["docstring-examples"]


def test_jsonl_task_with_custom_fields(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "1+1?", "a": "2", "id": "x1"}\n\n{"q": "2+2?", "a": "4"}\n')
    items = JSONLTask(data_file=str(path), question_field="q", answer_field="a").load()
    assert [it.problem.id for it in items] == ["x1", "1"]
    assert items[1].reference.answer == "4"


def test_render_prompt_uses_template_or_plain_turns():
    messages = [ChatMessage(role="user", content="Hi")]
    assert render_prompt("raw text", None) == "raw text"
    assert render_prompt(messages, None) == plain_chat(messages) == "User: Hi\n\nAssistant:"

    class Templated:
        chat_template = "x"

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            assert add_generation_prompt and not tokenize
            return "<|user|>" + msgs[0]["content"] + "<|assistant|>"

    assert render_prompt(messages, Templated()) == "<|user|>Hi<|assistant|>"
