"""Any JSONL file (or Hugging Face dataset) of question/answer records, graded as math answers.

`--task jsonl --data-file FILE` (or `hub:org/name[:config[:split]]` on a machine with internet);
field names are options so most datasets load without conversion.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tts.errors import UserError
from tts.task import TaskOptions
from tts.tasks.loading import bad_value, load_hub, read_jsonl, require_fields, require_unique_ids, where
from tts.tasks.math_task import MathAnswerTask
from tts.types import ChatMessage, Problem, Reference, TaskItem

INSTRUCTION = "Solve the following problem step by step. Put your final answer within \\boxed{}."


class JSONLOptions(TaskOptions):
    data_file: str | None = Field(None, description="the JSONL file, or hub:org/name[:config[:split]] (`--data-file`)")
    question_field: str = Field("question", description="record field holding the question")
    answer_field: str = Field("answer", description="record field holding the reference answer")
    instruction: str = Field(INSTRUCTION, description="text put before each question")


class JSONLTask(MathAnswerTask):
    name = "jsonl"
    description = "any JSONL file or HF dataset of question/answer records (--data-file), math grading"
    Options = JSONLOptions
    options: JSONLOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        if not self.options.data_file:
            raise UserError("task 'jsonl' needs --data-file FILE.jsonl (or hub:org/name)")
        self.data_file: str = self.options.data_file
        self.question_field = self.options.question_field
        self.answer_field = self.options.answer_field
        self.instruction = self.options.instruction

    def make_problem(self, question: str, problem_id: str = "q0") -> Problem:
        prompt = [ChatMessage(role="user", content=f"{self.instruction}\n\n{question}")]
        return Problem(id=problem_id, task=self.name, kind="math", question=question, prompt=prompt)

    def load(self, limit: int | None = None) -> list[TaskItem]:
        if self.data_file.startswith("hub:"):
            name, config, split = (self.data_file[4:].split(":") + [None, "test"])[:3]
            records, self.source = load_hub(name, config, split or "test"), self.data_file
        else:
            records, self.source = read_jsonl(self.data_file), self.data_file
        require_fields(records, (self.question_field, self.answer_field), self.source)
        for i, rec in enumerate(records):
            problem = bad_value(rec["id"]) if "id" in rec else None
            if problem:
                raise UserError(f"{where(records, i, self.source)}: field 'id' {problem}")
        # a record without an id is known by its position (which must not be another record's id)
        ids = [str(rec.get("id", i)) for i, rec in enumerate(records)]
        require_unique_ids(ids, records, self.source)
        return [
            TaskItem(
                problem=self.make_problem(str(rec[self.question_field]), pid),
                reference=Reference(answer=str(rec[self.answer_field])),
            )
            for pid, rec in zip(ids[:limit], records[:limit])
        ]
