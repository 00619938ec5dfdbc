"""MATH-500 (500 problems, the PRM800K test split of MATH): LaTeX answers graded by equivalence."""

from __future__ import annotations

from tts.tasks.loading import load_records, require_fields
from tts.tasks.math_task import MathAnswerTask
from tts.types import ChatMessage, Problem, Reference, TaskItem

INSTRUCTION = "Solve the following math problem step by step. Put your final answer within \\boxed{}."
HUB = ("HuggingFaceH4/MATH-500", None, "test")


class MATH500(MathAnswerTask):
    name = "math500"
    description = "MATH-500 competition math (500 problems), LaTeX answers, symbolic equivalence"

    def make_problem(self, question: str, problem_id: str = "q0", metadata: dict | None = None) -> Problem:
        prompt = [ChatMessage(role="user", content=f"{INSTRUCTION}\n\n{question}")]
        return Problem(id=problem_id, task=self.name, kind="math", question=question, prompt=prompt,
                       metadata=metadata or {})

    def load(self, limit: int | None = None) -> list[TaskItem]:
        records, self.source = load_records(self.data_dir, "math500/test.jsonl", HUB)
        require_fields(records, ("problem", "answer"), self.source)
        items = []
        for i, rec in enumerate(records[:limit]):
            meta = {k: rec[k] for k in ("subject", "level", "unique_id") if k in rec}
            problem = self.make_problem(rec["problem"], f"math500/{i}", meta)
            reference = Reference(answer=str(rec["answer"]), solution=rec.get("solution"))
            items.append(TaskItem(problem=problem, reference=reference))
        return items
