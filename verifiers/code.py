"""Code verifiers: the hidden-test oracle and the docstring-examples selection verifier (ALGORITHMS.md 8d).

The public names of the code family live here: `run_program`/`ProgramResult` (verifiers.sandbox),
`extract_code`/`docstring_tests` (verifiers.code_parsing) and the two verifiers.
"""

from __future__ import annotations

import logging
import secrets
from typing import ClassVar


from tts.types import Candidate, Problem, Verdict
from tts.verifier import Verifier

log = logging.getLogger(__name__)

from verifiers.code_parsing import docstring_tests, extract_code  # noqa: F401 - public API
from verifiers.sandbox import ProgramResult, run_program  # noqa: F401 - public API

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
    """Oracle: the hidden HumanEval tests (ALGORITHMS.md 8d). Only the task's runner may use it."""

    name: ClassVar[str] = "unit-tests"
    description: ClassVar[str] = "runs the hidden unit tests (check(entry_point)) in the sandbox; oracle"

    def __init__(self, tests: str, entry_point: str, timeout: float = 3.0, memory_mb: int = 1024):
        self.tests = tests
        self.entry_point = entry_point
        self.timeout = timeout
        self.memory_mb = memory_mb

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not candidate.answer:
            return Verdict(verifier=self.name, score=0.0, passed=False, feedback="no program extracted")
        program = f"{candidate.answer}\n{self.tests}\ncheck({self.entry_point})\n"
        r = run_program(program, timeout=self.timeout, memory_mb=self.memory_mb)
        return Verdict(verifier=self.name, score=1.0 if r.passed else 0.0, passed=r.passed,
                       feedback=_clip(f"{r.status}\n{r.output}".rstrip()))


_EXAMPLES_HARNESS = r'''

def _tts_run_examples(_tts_tests, _tts_marker, _tts_timeout):
    import ast, contextlib, io, json, signal

    class _Timeout(BaseException):
        pass

    def _alarm(signum, frame):
        raise _Timeout()

    def _value(node, scope):
        return eval(compile(ast.Expression(node), "<example>", "eval"), scope)

    def _check(src, scope):
        tree = ast.parse(src)
        node = tree.body[0] if len(tree.body) == 1 else None
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1:
            test = node.test
            if isinstance(test.ops[0], ast.Eq):
                got, want = _value(test.left, scope), _value(test.comparators[0], scope)
                return None if got == want else "expected %r, got %r" % (want, got)
            left = test.left
            if (isinstance(test.ops[0], ast.Lt) and isinstance(left, ast.Call) and getattr(left.func, "id", "") == "abs"
                    and len(left.args) == 1 and isinstance(left.args[0], ast.BinOp) and isinstance(left.args[0].op, ast.Sub)):
                got, want = _value(left.args[0].left, scope), _value(left.args[0].right, scope)
                tol = _value(test.comparators[0], scope)
                return None if abs(got - want) < tol else "expected %r (within %g), got %r" % (want, tol, got)
        exec(compile(tree, "<example>", "exec"), scope)
        return None

    scope = globals()
    results, stop = [], None
    previous = signal.signal(signal.SIGALRM, _alarm)
    for src in _tts_tests:
        if stop:
            results.append([False, stop])
            continue
        captured = io.StringIO()
        try:
            signal.setitimer(signal.ITIMER_REAL, _tts_timeout)
            try:
                with contextlib.redirect_stdout(captured):
                    message = _check(src, scope)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            message = "timed out after %g s" % _tts_timeout
            stop = "not run: an earlier example timed out"
        except AssertionError as e:
            message = "assertion failed" + (": %s" % e if str(e) else "")
        except BaseException as e:
            message = "raised %s: %s" % (type(e).__name__, e)
        if message is not None and captured.getvalue():
            message += "\nstdout: " + captured.getvalue()[-300:]
        results.append([message is None, (message or "")[:500]])
    signal.signal(signal.SIGALRM, previous)
    print("\n" + _tts_marker + json.dumps(results), flush=True)
'''


class DocstringExamplesVerifier(Verifier):
    """Selection verifier: the problem's public examples (`problem.public_tests`), nothing hidden.

    All examples run in one sandboxed program after the candidate's code, each under its own
    time limit (after one times out the rest are reported as not run), with stdout captured
    per example. score = fraction of examples passed; passed = all passed; feedback lists the
    failing examples with expected and actual values (tree search feeds it back for
    refinement).

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
        if not tests:
            return self._loads(problem, candidate.answer)
        marker = f"__tts_examples_{secrets.token_hex(8)}__"
        program = (f"{candidate.answer}\n{_EXAMPLES_HARNESS}\n"
                   f"_tts_run_examples({tests!r}, {marker!r}, {self.timeout!r})\n")
        r = run_program(program, timeout=self.timeout * (len(tests) + 1), memory_mb=self.memory_mb,
                        max_output=65536)
        # the results count only if the whole program ran to its end (run_program's guard)
        results = _parse_examples(r.output, marker, len(tests)) if r.passed else None
        if results is None:
            why = {"timeout": "timed out", "error": "does not compile or could not start"}.get(
                r.status, "crashed or exited early")
            tail = r.output.split(marker)[0].strip()
            return Verdict(verifier=self.name, score=0.0, passed=False,
                           feedback=_clip(f"The program {why}; the examples did not complete:\n{tail}"))
        n_ok = sum(ok for ok, _ in results)
        failures = [f"Failed: {t}\n  {msg}" for t, (ok, msg) in zip(tests, results) if not ok]
        feedback = (f"{n_ok}/{len(tests)} examples passed." + ("\n" + "\n".join(failures) if failures else ""))
        return Verdict(verifier=self.name, score=n_ok / len(tests), passed=n_ok == len(tests),
                       feedback=_clip(feedback))

    def _loads(self, problem: Problem, program: str) -> Verdict:
        check = f"\nassert callable({problem.entry_point}), 'entry point is not callable'\n" if problem.entry_point else ""
        r = run_program(program + check, timeout=self.timeout, memory_mb=self.memory_mb)
        if r.passed:
            return Verdict(verifier=self.name, score=0.5, passed=None,
                           feedback="no public examples; the program loads and defines the entry point")
        return Verdict(verifier=self.name, score=0.0, passed=False,
                       feedback=_clip(f"no public examples, and the program does not load ({r.status}):\n{r.output}"))


def _parse_examples(output: str, marker: str, n: int) -> list[tuple[bool, str]] | None:
    import json

    at = output.rfind(marker)
    if at < 0:
        return None
    line = output[at + len(marker):].split("\n", 1)[0]
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(data, list) and len(data) == n):
        return None
    return [(bool(ok), str(msg)) for ok, msg in data]

