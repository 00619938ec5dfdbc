"""HumanEval (164 Python problems): programs graded by the hidden tests in a sandbox.

Selection may use only the examples in the prompt's own docstring (`Problem.public_tests`); the
hidden `test` code lives in the `Reference` and reaches only the oracle
(docs/architecture.md, "Never leak the reference").
"""

from __future__ import annotations

from typing import Any

from tts.sandbox import sandbox_isolation
from tts.scorer import Scorer
from tts.task import Task
from tts.tasks.loading import load_records, require_fields
from tts.types import ChatMessage, Problem, Reference, TaskItem
from tts.verifier import Verifier
from tts.verifiers.code import (
    UnitTestVerifier,
    docstring_tests,
    extract_code,
)

INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function "
    "(signature included) in a single ```python code block."
)
HUB = ("openai/openai_humaneval", None, "test")


def normalise_code(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


class HumanEval(Task):
    name = "humaneval"
    description = "HumanEval Python functions (164), hidden unit tests; selection by docstring examples"
    kind = "code"

    def load(self, limit: int | None = None) -> list[TaskItem]:
        records, self.source = load_records(self.data_dir, "humaneval/HumanEval.jsonl.gz", HUB)
        require_fields(records, ("task_id", "prompt", "test", "entry_point"), self.source, unique="task_id")
        items = []
        for rec in records[:limit]:
            prompt_code = rec["prompt"]
            problem = Problem(
                id=rec["task_id"],
                task=self.name,
                kind="code",
                question=prompt_code,
                prompt=[ChatMessage(role="user", content=f"{INSTRUCTION}\n\n```python\n{prompt_code}```")],
                entry_point=rec["entry_point"],
                public_tests=docstring_tests(prompt_code, rec["entry_point"]),
            )
            reference = Reference(tests=rec["test"], solution=prompt_code + rec.get("canonical_solution", ""))
            items.append(TaskItem(problem=problem, reference=reference))
        return items

    def extract_answer(self, text: str, problem: Problem) -> str | None:
        return extract_code(text, problem.question, problem.entry_point)

    def equivalent(self, a: str, b: str) -> bool:
        return normalise_code(a) == normalise_code(b)

    def oracle(self, problem: Problem, reference: Reference) -> Verifier:
        return UnitTestVerifier(reference.tests, problem.entry_point)

    def environment(self) -> dict[str, Any]:
        return {"sandbox": sandbox_isolation()}

    def default_scorers(self) -> list[Scorer]:
        """The prompt's own examples, run against each program (a judge can be chosen with --scorer judge)."""
        from tts.scorers.verdicts import DocstringExamplesScorer

        return [DocstringExamplesScorer()]
