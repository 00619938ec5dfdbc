"""The task contract: benchmark records in, `TaskItem`s (problem + hidden reference) out.

A task owns its prompt format, its answer space (how an answer is extracted from a completion and
when two answers are the same) and its oracle. Strategies see the task only through `AnswerSpace`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tts.types import Problem, Reference, TaskItem
from tts.verifier import Verifier


class AnswerSpace(Protocol):
    def extract_answer(self, text: str, problem: Problem) -> str | None: ...

    def equivalent(self, a: str, b: str) -> bool: ...


class Task(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "math"

    def __init__(self, data_dir: str | Path | None = None, few_shot: int = 0, seed: int = 0):
        self.data_dir = Path(data_dir) if data_dir else None
        self.few_shot = few_shot
        self.seed = seed

    @abstractmethod
    def load(self, limit: int | None = None) -> list[TaskItem]:
        """Records in benchmark order (the first `limit` of them)."""

    @abstractmethod
    def extract_answer(self, text: str, problem: Problem) -> str | None:
        """The answer a completion gives (for code: the program), or None."""

    @abstractmethod
    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer (used for voting)."""

    @abstractmethod
    def oracle(self, problem: Problem, reference: Reference) -> Verifier:
        """A verifier bound to the hidden reference, for grading after the strategy has answered."""

    def selection_verifiers(self) -> list[Verifier]:
        """Verifiers a deployed system could run (they see only the problem). Default: none."""
        return []

    def environment(self) -> dict[str, Any]:
        """What grading runs on, recorded in config.json (code tasks: the sandbox's isolation)."""
        return {}

    def make_problem(self, question: str, problem_id: str = "q0") -> Problem:
        """A problem from free text (for `tts solve`), prompted the way the task prompts its records."""
        raise NotImplementedError(f"task {self.name!r} cannot pose free-text questions")
