"""Test doubles for people writing plugins (strategies, tasks, verifiers, scorers, backends), in or outside this repo.

Everything here runs without a model, a GPU or a network, deterministically:

* `ScriptedBackend`: a backend that answers from a script (a list of completions, or a function of the
  prompt text and the sample's index) instead of sampling. A completion may be a whole `Sample`, returned
  as is: fixed top log-probabilities for testing a scorer.
* `toy_script`: a ready script for `ToyTask` prompts: mostly right answers, some wrong, in words.
* `ToyTask`: five tiny problems ("problem i", answer i * 10), answers are the last integer of a text.
* `ExactMatchVerifier`: passes a candidate whose extracted answer equals a reference string (the toy
  task's oracle); `AnswerPresentVerifier`: a verifier that passes any candidate with an answer
  (`ToyTask(selection=[...])` wraps it as a scorer).
* `run_strategy`: one strategy on one toy problem, end to end, returning its `Result`.

A strategy plugin's first test, in full::

    from tts.testing import ScriptedBackend, ToyTask, run_strategy

    async def test_my_strategy_picks_the_majority():
        backend = ScriptedBackend(["it is 10", "10", "7"])          # sample i gets completion i % 3
        result = await run_strategy(MyStrategy(n=3), ToyTask(), backend)
        assert result.answer == "10" and len(result.candidates) == 3

(`pytest-asyncio` runs `async def` tests; or call `asyncio.run(run_strategy(...))`.) See docs/plugins.md.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import Field

from tts.backends.scripted import Completion, Script, ScriptedBackend
from tts.scorer import Scorer, as_scorer
from tts.strategy import Strategy, StrategyContext
from tts.task import Task, TaskOptions
from tts.types import Candidate, ChatMessage, Problem, Reference, Result, SamplingConfig, TaskItem, Verdict
from tts.verifier import Verifier

__all__ = [
    "AnswerPresentVerifier", "Completion", "ExactMatchVerifier", "Script", "ScriptedBackend", "ToyTask",
    "run_strategy", "toy_script",
]


class ExactMatchVerifier(Verifier):
    """Passes a candidate whose answer is exactly `reference` (score 1.0), fails any other (0.0).

    As an oracle it is bound to a problem's hidden reference (`ToyTask.oracle` does this)::

        >>> from tts.types import Candidate
        >>> problem = ToyTask().make_problem("problem 3")
        >>> ExactMatchVerifier("30").verify(problem, Candidate(text="so 30", answer="30")).passed
        True
    """

    name = "exact-match"
    description = "the candidate's answer equals the reference string exactly"

    def __init__(self, reference: str | None):
        self.reference = reference

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        ok = candidate.answer is not None and candidate.answer == self.reference
        return Verdict(verifier=self.name, score=float(ok), passed=ok,
                       feedback="" if ok else f"expected {self.reference!r}, got {candidate.answer!r}")


class AnswerPresentVerifier(Verifier):
    """A verifier that never sees the reference: passes every candidate that gave an answer.

    Search strategies (mcts, ab-mcts-*) score answers with the context's scorers and refuse to run
    without one: `ToyTask(selection=[AnswerPresentVerifier()])` gives them one (wrapped in a
    `VerifierScorer`).
    """

    name = "answer-present"
    description = "the candidate gave an answer at all"

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        ok = candidate.answer is not None
        return Verdict(verifier=self.name, score=float(ok), passed=ok, feedback="" if ok else "no answer found")


class ToyTaskOptions(TaskOptions):
    size: int = Field(5, ge=1, description="number of problems")


class ToyTask(Task):
    """Problems "toy/0".."toy/{size-1}" asking "problem i"; the reference answer is i * 10.

    The answer of a completion is its last integer; two answers are equivalent when they are the same
    integer ("007" == "7"). The oracle is `ExactMatchVerifier`; the default scorers are `selection`
    (scorers, or verifiers wrapped in `VerifierScorer`; default: none)::

        >>> task = ToyTask(size=2)
        >>> [(it.problem.question, it.reference.answer) for it in task.load()]
        [('problem 0', '0'), ('problem 1', '10')]
        >>> task.extract_answer("first 3, then 42", task.load(1)[0].problem)
        '42'
    """

    name = "toy"
    description = "toy arithmetic: problem i has the answer i * 10 (for tests)"
    kind = "math"
    Options = ToyTaskOptions
    options: ToyTaskOptions

    def __init__(self, size: int = 5, selection: list[Verifier | Scorer] | None = None, **options: Any):
        super().__init__(size=size, **options)
        self.size = self.options.size
        self.selection = list(selection or [])

    def make_problem(self, question: str, problem_id: str = "q0") -> Problem:
        return Problem(id=problem_id, task=self.name, question=question,
                       prompt=[ChatMessage(role="user", content=question)])

    def load(self, limit: int | None = None) -> list[TaskItem]:
        self.source = "tts.testing.ToyTask"
        items = [TaskItem(problem=self.make_problem(f"problem {i}", f"toy/{i}"),
                          reference=Reference(answer=str(i * 10)))
                 for i in range(self.size)]
        return items[:limit]

    def extract_answer(self, text: str, problem: Problem) -> str | None:
        nums = re.findall(r"-?\d+", text)
        return nums[-1] if nums else None

    def equivalent(self, a: str, b: str) -> bool:
        return int(a) == int(b)

    def oracle(self, problem: Problem, reference: Reference) -> Verifier:
        return ExactMatchVerifier(reference.answer)

    def default_scorers(self) -> list[Scorer]:
        return [as_scorer(v) for v in self.selection]


def toy_script(text: str, index: int) -> Completion:
    """A script for `ScriptedBackend` that answers `ToyTask` prompts in a few lines of "reasoning".

    Two of every three samples of a prompt are right (i * 10 for "problem i"), the third is off by one;
    each completion has a different mean log-probability, and the lines end with "\\n" so step-wise
    strategies (which stop at a delimiter) see steps. Prompts it does not recognise get "The answer is 0."::

        >>> toy_script("problem 3", 0)[0].splitlines()[-1]
        'The answer is 30.'
        >>> backend = ScriptedBackend(toy_script)
    """
    found = re.findall(r"problem (\d+)", text)
    right = int(found[-1]) * 10 if found else 0
    answer = right if index % 3 != 2 else right + 1
    logprob = -0.1 - 0.05 * (index % 7) - (0.3 if answer != right else 0.0)
    body = f"Let me think about it.\nTen times the number gives {answer}.\nThe answer is {answer}."
    return body, logprob


async def run_strategy(strategy: Strategy, task: Task | None = None, backend: Any = None, *, problem: int = 0,
                       sampling: SamplingConfig | None = None, seed: int = 0) -> Result:
    """Run `strategy` on one problem of `task` (default `ToyTask()`) against `backend` (default
    `ScriptedBackend(toy_script)`), with the task's default scorers, like `tts eval` does for each
    problem. Returns the strategy's `Result` (grade it with `task.oracle(...)` if you need to)."""
    task = task if task is not None else ToyTask()
    backend = backend if backend is not None else ScriptedBackend(toy_script)
    item = task.load(problem + 1)[problem]
    ctx = StrategyContext(backend=backend, answers=task, sampling=sampling or SamplingConfig(max_tokens=64),
                          scorers=task.default_scorers(), rng=random.Random(seed))
    return await strategy.run(item.problem, ctx)
