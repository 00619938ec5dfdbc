"""Tasks: record counts, prompts, few-shot exemplars, oracles on reference solutions, no leak of hidden data."""

import gzip
import json

import pytest

from tts.backends.render import plain_chat, render_prompt
from tts.tasks.gsm8k import GSM8K, exemplar_solution, gold_answer
from tts.tasks.humaneval import HumanEval
from tts.tasks.jsonl import JSONLTask
from tts.tasks.math500 import MATH500
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
    assert [s.name for s in task.default_scorers()] == ["docstring-examples"]


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


# ---- records a run could not keep apart or would pose as "None" --------------------------------

def write_lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_jsonl_duplicate_ids_are_refused_with_both_lines(tmp_path):
    from tts.errors import UserError

    path = write_lines(tmp_path / "qa.jsonl", {"id": "a", "question": "1+1?", "answer": "2"}, "",
                       {"id": "b", "question": "2+2?", "answer": "4"}, {"id": "a", "question": "3+3?", "answer": "6"})
    with pytest.raises(UserError, match=rf"{path}: duplicate id 'a' \(line 1 and line 4\)"):
        JSONLTask(data_file=str(path)).load()


def test_jsonl_position_id_colliding_with_an_explicit_id_is_refused(tmp_path):
    from tts.errors import UserError

    path = write_lines(tmp_path / "qa.jsonl", {"id": "1", "question": "1+1?", "answer": "2"},
                       {"question": "2+2?", "answer": "4"})  # known by its position: "1"
    with pytest.raises(UserError, match=r"duplicate id '1' \(line 1 and line 2\)"):
        JSONLTask(data_file=str(path)).load()


@pytest.mark.parametrize("record,expected", [
    ({"question": None, "answer": "2"}, ":3: field 'question' is null"),
    ({"question": "1+1?", "answer": None}, ":3: field 'answer' is null"),
    ({"question": "   ", "answer": "2"}, ":3: field 'question' is empty"),
    ({"question": "1+1?", "answer": ""}, ":3: field 'answer' is empty"),
    ({"question": "1+1?"}, ":3: record lacks field(s) answer"),
    ({"question": ["1+1?"], "answer": "2"}, ":3: field 'question' is list [\"1+1?\"], expected text"),
    ({"id": None, "question": "1+1?", "answer": "2"}, ":3: field 'id' is null"),
])
def test_jsonl_unusable_fields_are_refused_with_the_line(tmp_path, record, expected):
    from tts.errors import UserError

    path = write_lines(tmp_path / "qa.jsonl", {"question": "ok?", "answer": "1"}, "", record)
    with pytest.raises(UserError) as err:
        JSONLTask(data_file=str(path)).load()
    assert str(err.value) == f"{path}{expected}"


def test_jsonl_numeric_answers_and_ids_are_fine(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", {"id": 7, "question": "3+4?", "answer": 7})
    (item,) = JSONLTask(data_file=str(path)).load()
    assert item.problem.id == "7" and item.reference.answer == "7"


def test_benchmark_loaders_share_the_rule(tmp_path):
    """gsm8k, math500 and humaneval refuse null or empty fields by line; humaneval also duplicate task ids."""
    from tts.errors import UserError

    (tmp_path / "gsm8k").mkdir()
    write_lines(tmp_path / "gsm8k" / "test.jsonl", {"question": "q", "answer": "#### 1"},
                {"question": None, "answer": "#### 2"})
    with pytest.raises(UserError, match=r"gsm8k/test.jsonl:2: field 'question' is null"):
        GSM8K(data_dir=tmp_path).load()

    (tmp_path / "math500").mkdir()
    write_lines(tmp_path / "math500" / "test.jsonl", {"problem": "p", "answer": ""})
    with pytest.raises(UserError, match=r"math500/test.jsonl:1: field 'answer' is empty"):
        MATH500(data_dir=tmp_path).load()

    (tmp_path / "humaneval").mkdir()
    good = HumanEval().load(1)[0]
    rec = {"task_id": "HumanEval/0", "prompt": good.problem.question, "test": good.reference.tests,
           "entry_point": good.problem.entry_point}
    def write_gz(*records):
        plain = write_lines(tmp_path / "plain.jsonl", *records)
        (tmp_path / "humaneval" / "HumanEval.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))

    write_gz(rec, {**rec, "task_id": "HumanEval/1"}, rec)
    with pytest.raises(UserError, match=r"duplicate id 'HumanEval/0' \(line 1 and line 3\)"):
        HumanEval(data_dir=tmp_path).load()
    write_gz(rec, {**rec, "task_id": "HumanEval/1", "test": None})
    with pytest.raises(UserError, match=r"HumanEval.jsonl.gz:2: field 'test' is null"):
        HumanEval(data_dir=tmp_path).load()


def test_hub_records_are_named_by_position():
    from tts.errors import UserError
    from tts.tasks.loading import require_fields

    with pytest.raises(UserError, match=r"^hub:x: record 2: field 'answer' is null$"):
        require_fields([{"answer": "1"}, {"answer": None}], ("answer",), "hub:x")
