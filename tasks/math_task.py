"""The answer space shared by math tasks: extract the final answer, compare by equivalence.

The rules: docs/algorithms/math-answers.md.
"""

from __future__ import annotations

from tts.scorer import Scorer
from tts.task import Task
from tts.types import Problem, Reference
from tts.verifier import Verifier
from tts.verifiers.math import MathAnswerVerifier, equivalent, extract_answer


class MathAnswerTask(Task):
    kind = "math"

    def extract_answer(self, text: str, problem: Problem) -> str | None:
        return extract_answer(text)

    def equivalent(self, a: str, b: str) -> bool:
        return equivalent(a, b)

    def oracle(self, problem: Problem, reference: Reference) -> Verifier:
        return MathAnswerVerifier(reference.answer)

    def default_scorers(self) -> list[Scorer]:
        """The policy model as its own judge (P(Yes) that an answer is correct): it sees only the problem."""
        from tts.registry import build_scorer

        return [build_scorer("judge")]
