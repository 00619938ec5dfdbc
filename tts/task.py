"""The task contract: benchmark records in, `TaskItem`s (problem + hidden reference) out.

A task owns its prompt format, its answer space (how an answer is extracted from a completion and
when two answers are the same) and its oracle. Strategies see the task only through `AnswerSpace`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tts.scorer import Scorer
from tts.types import Problem, Reference, TaskItem
from tts.verifier import Verifier


class AnswerSpace(Protocol):
    def extract_answer(self, text: str, problem: Problem) -> str | None: ...

    def equivalent(self, a: str, b: str) -> bool: ...


class TaskOptions(BaseModel):
    """Options every task takes; a task subclasses this (as its `Options`) to declare its own.

    They come from `tts eval --task-option KEY=VALUE` (and the shortcuts `--data-dir`, `--data-file`,
    `--few-shot`), are validated here (an unknown key or a bad value is one line, exit 2) and are shown
    by `tts list` with their defaults.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: Path | None = Field(None, description="folder with the benchmark files (default: the packaged copy)")
    seed: int = Field(0, description="seeds whatever the task draws (e.g. few-shot examples); `tts eval` passes --seed")


class Task(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "math"
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    # Where `load()` read its records from (a file path, or the hub dataset); recorded in config.json.
    source: str | None = None

    def __init__(self, **options: Any):
        self.options = self.Options(**options)
        self.data_dir = self.options.data_dir
        self.seed = self.options.seed

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

    def default_scorers(self) -> list[Scorer]:
        """The scorers used when `tts eval` is given no `--scorer`: what a deployed system could run (they
        see only the problem). Default: none."""
        return []

    def environment(self) -> dict[str, Any]:
        """What grading runs on, recorded in config.json (code tasks: the sandbox's isolation)."""
        return {}

    def make_problem(self, question: str, problem_id: str = "q0") -> Problem:
        """A problem from free text (for `tts solve`), prompted the way the task prompts its records."""
        raise NotImplementedError(f"task {self.name!r} cannot pose free-text questions")
