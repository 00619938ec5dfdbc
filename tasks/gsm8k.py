"""GSM8K (1319 test problems): grade-school word problems with a numeric answer after `####`.

Zero-shot by default; `few_shot=k` prepends k worked solutions from the train split (fixed by the
seed), rewritten to end in "The answer is N." like the instruction asks (docs/algorithms/math-answers.md).
"""

from __future__ import annotations

import random
import re

from pydantic import Field

from tts.errors import UserError
from tts.task import TaskOptions
from tts.tasks.loading import load_records, require_fields
from tts.tasks.math_task import MathAnswerTask
from tts.types import ChatMessage, Problem, Reference, TaskItem

INSTRUCTION = (
    "Solve the following math problem step by step. "
    "At the end, write the final answer as 'The answer is N.' where N is a number."
)
HUB = ("openai/gsm8k", "main", "test")


def gold_answer(solution: str) -> str:
    """The number after '#### ' with commas, '$' and a trailing period removed (docs/algorithms/math-answers.md)."""
    match = re.search(r"####\s*(.+?)\s*$", solution.strip())
    if not match:
        raise ValueError("GSM8K solution has no '#### answer' line")
    return match.group(1).replace(",", "").replace("$", "").rstrip(".").strip()


def exemplar_solution(solution: str) -> str:
    """A train solution as a model should write it: no <<calculator>> notes, ending in 'The answer is N.'"""
    body = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    return f"{body}\nThe answer is {gold_answer(solution)}."


class GSM8KOptions(TaskOptions):
    few_shot: int = Field(0, ge=0, description="worked train examples in the prompt (`--few-shot`)")


class GSM8K(MathAnswerTask):
    name = "gsm8k"
    description = "GSM8K grade-school math (1319 test problems), numeric answer, zero- or few-shot"
    Options = GSM8KOptions
    options: GSM8KOptions

    @property
    def few_shot(self) -> int:
        return self.options.few_shot

    def _shots(self) -> list[ChatMessage]:
        if not self.few_shot:
            return []
        train, origin = load_records(self.data_dir, "gsm8k/train.jsonl", ("openai/gsm8k", "main", "train"))
        require_fields(train, ("question", "answer"), origin)
        if self.few_shot > len(train):
            raise UserError(f"--few-shot {self.few_shot} asks for more worked examples than the {len(train)} in "
                            f"{origin}")
        picks = random.Random(self.seed).sample(train, self.few_shot)
        messages = []
        for rec in picks:
            messages.append(ChatMessage(role="user", content=f"{INSTRUCTION}\n\nQuestion: {rec['question']}"))
            messages.append(ChatMessage(role="assistant", content=exemplar_solution(rec["answer"])))
        return messages

    def make_problem(self, question: str, problem_id: str = "q0", shots: list[ChatMessage] | None = None) -> Problem:
        shots = self._shots() if shots is None else shots
        prompt = shots + [ChatMessage(role="user", content=f"{INSTRUCTION}\n\nQuestion: {question}")]
        return Problem(id=problem_id, task=self.name, kind="math", question=question, prompt=prompt)

    def load(self, limit: int | None = None) -> list[TaskItem]:
        records, self.source = load_records(self.data_dir, "gsm8k/test.jsonl", HUB)
        require_fields(records, ("question", "answer"), self.source)
        shots = self._shots()
        items = []
        for i, rec in enumerate(records[:limit]):
            problem = self.make_problem(rec["question"], f"gsm8k/{i}", shots)
            reference = Reference(answer=gold_answer(rec["answer"]), solution=rec["answer"])
            items.append(TaskItem(problem=problem, reference=reference))
        return items
