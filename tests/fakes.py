"""Test doubles shared by the unit tests: a tiny task whose answers are plain integers."""

from __future__ import annotations

import re

from tts.task import Task
from tts.types import Candidate, ChatMessage, Problem, Reference, TaskItem, Verdict
from tts.verifier import Verifier


class ExactVerifier(Verifier):
    name = "exact"
    description = "answer string equals the reference"

    def __init__(self, reference: str):
        self.reference = reference

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        ok = candidate.answer == self.reference
        return Verdict(verifier=self.name, score=float(ok), passed=ok)


class EvenVerifier(Verifier):
    """A selection verifier that sees only the candidate: passes even answers."""

    name = "even"
    description = "answer is an even integer"

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        ok = candidate.answer is not None and int(candidate.answer) % 2 == 0
        return Verdict(verifier=self.name, score=float(ok), passed=ok)


class ToyTask(Task):
    """Problems "q0".."qN" whose answer is the last integer of a completion; reference = index * 10."""

    name = "toy"
    description = "toy arithmetic"

    def __init__(self, size: int = 5, selection: list[Verifier] | None = None):
        super().__init__()
        self.size = size
        self.selection = selection or []

    def make_problem(self, question: str, problem_id: str = "q0") -> Problem:
        return Problem(id=problem_id, task=self.name, question=question,
                       prompt=[ChatMessage(role="user", content=question)])

    def load(self, limit=None):
        items = [TaskItem(problem=self.make_problem(f"problem {i}", f"toy/{i}"), reference=Reference(answer=str(i * 10)))
                 for i in range(self.size)]
        return items[:limit]

    def extract_answer(self, text, problem):
        nums = re.findall(r"-?\d+", text)
        return nums[-1] if nums else None

    def equivalent(self, a, b):
        return int(a) == int(b)

    def oracle(self, problem, reference):
        return ExactVerifier(reference.answer)

    def selection_verifiers(self):
        return list(self.selection)
