"""Tests for verifiers/code.py: the sandbox, program extraction, docstring tests, both verifiers."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import re
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tts.sandbox import process as sandbox
from tts.types import Candidate, Problem
from tts.verifiers.code import (
    DocstringExamplesVerifier,
    UnitTestVerifier,
    docstring_tests,
    extract_code,
    run_program,
)

HUMANEVAL = Path(__file__).resolve().parent.parent / "tasks" / "data" / "humaneval" / "HumanEval.jsonl.gz"
# Docstrings whose own examples contradict the reference solution (checked by hand):
#   47  median([-10, 4, 6, 1000, 10, 20]) is 8.0, the docstring says 15.0
#   116 sort_array's examples contradict its spec (the hidden test expects [1, 2, 4, 3, 5])
#   148 bf("Earth", "Mercury") ==> ("Venus"): a str in Python, the function returns a tuple
BAD_DOCSTRINGS = {"HumanEval/47", "HumanEval/116", "HumanEval/148"}


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (PID 1 here does not reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"PID (\d+)", output)]


def _marked(marker: str) -> list[int]:
    """Live host processes whose command line carries `marker`. (A program in the bwrap sandbox
    sees only its own pid namespace: the pids it prints are not host pids.)"""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes() and _alive(int(d)):
                    found.append(int(d))
            except OSError:
                pass
    return found


def _sleeper(marker: str) -> str:
    """Program text: replace this process by a 60 s sleeper whose command line carries `marker`."""
    return f"os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)  # {marker}'])"


# ------------------------------------------------------------------------------------------
# Sandbox
# ------------------------------------------------------------------------------------------


def test_pass():
    r = run_program("x = 6 * 7\nprint('answer', x)\n")
    assert (r.status, r.passed, r.returncode) == ("passed", True, 0)
    assert r.output == "answer 42\n"
    assert 0 < r.duration < 2


def test_assertion_failure():
    r = run_program("def f():\n    return 1\n\nassert f() == 2, 'f is wrong'\nprint('after')\n")
    assert (r.status, r.passed, r.returncode) == ("failed", False, 1)
    assert "AssertionError: f is wrong" in r.output
    assert 'File "program.py", line 4' in r.output and "assert f() == 2" in r.output
    assert "after" not in r.output


def test_syntax_error_is_error():
    r = run_program("def f(:\n    pass\n")
    assert (r.status, r.passed) == ("error", False)
    assert "SyntaxError" in r.output


def test_timeout():
    start = time.monotonic()
    r = run_program("while True:\n    pass\n", timeout=1.0)
    elapsed = time.monotonic() - start
    assert (r.status, r.passed, r.returncode) == ("timeout", False, None)
    assert 1.0 <= elapsed < 3.0
    assert "time limit" in r.output


def test_sleeping_program_times_out():
    start = time.monotonic()
    r = run_program("import time\nprint('before', flush=True)\ntime.sleep(60)\n", timeout=1.0)
    assert r.status == "timeout" and time.monotonic() - start < 3.0
    assert "before" in r.output


def test_memory_limit():
    r = run_program("x = bytearray(4 * 1024 ** 3)\nprint('allocated')\n", memory_mb=256)
    assert (r.status, r.passed) == ("failed", False)
    assert "MemoryError" in r.output and "allocated" not in r.output
    assert run_program("print('harness still fine')").passed


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "raise SystemExit\n",
        "raise SystemExit(0)\n",
        "exit()\n",
        "import os\nos.kill(os.getpid(), 9)\n",
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
        "import os\nos.killpg(0, 9)\n",
        "import os\nos.closerange(0, 1024)\n",
        # the forked copy runs to the end and the program process exits 0: still not a pass
        "import os\npid = os.fork()\nif pid:\n    os.waitpid(pid, 0)\n    os._exit(0)\n",
        # writing made-up status lines on every descriptor cannot forge the token
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'x done 1\\n')\n    except OSError:\n        pass\nos._exit(0)\n",
    ],
    ids=["sys.exit", "os._exit", "SystemExit", "SystemExit(0)", "exit()", "SIGKILL-self", "SIGTERM-self",
         "killpg0", "closerange", "fork-child-finishes", "forge-status"],
)
def test_early_exit_is_not_a_pass(source):
    r = run_program(source)
    assert r.status == "failed" and not r.passed, r


def test_segfault_fails():
    r = run_program("import ctypes\nctypes.string_at(0)\n")
    assert (r.status, r.returncode) == ("failed", -11)
    assert "SIGSEGV" in r.output


def test_infinite_recursion_fails():
    r = run_program("def f(n):\n    return f(n + 1)\n\nf(0)\n")
    assert r.status == "failed" and "RecursionError" in r.output


def test_children_die_with_the_program():
    # a subprocess in its own session, and a double-forked daemon, both meant to outlive it
    marker = f"tts-linger-{uuid.uuid4().hex}"
    source = textwrap.dedent(f"""
        import os, subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"], start_new_session=True)
        print("PID", p.pid, flush=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                print("PID", os.getpid(), flush=True)
                {_sleeper(marker)}
            os._exit(0)
        time.sleep(0.3)
    """)
    r = run_program(source)
    assert r.passed, r
    assert len(_pids(r.output)) == 2
    assert _marked(marker) == []


def test_children_die_on_timeout():
    marker = f"tts-linger-{uuid.uuid4().hex}"
    source = f"import os, sys, time\nif os.fork() == 0:\n    print('PID', os.getpid(), flush=True)\n    {_sleeper(marker)}\ntime.sleep(60)\n"
    r = run_program(source, timeout=1.0)
    assert r.status == "timeout"
    assert len(_pids(r.output)) == 1
    assert _marked(marker) == []


def test_killing_its_parent_does_not_reach_the_caller():
    r = run_program("import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(0.5)\nprint('survived')\n")
    assert not r.passed and r.status == "failed"
    assert _alive(os.getpid())  # we are still here; and nothing leaked
    assert run_program("print(1)").passed


@pytest.mark.skipif(os.geteuid() != 0, reason="uid isolation needs root")
def test_cannot_signal_or_write_as_the_caller():
    if sandbox.sandbox_mode() == "none":
        pytest.skip("no uid isolation on this machine")
    # uid modes: PermissionError; bwrap: our pid and this folder do not exist in its namespaces
    r = run_program(f"import os\nos.kill({os.getpid()}, 9)\n")
    assert r.status == "failed" and re.search(r"PermissionError|ProcessLookupError", r.output), r
    r = run_program(f"open({str(Path(__file__).parent / 'pwned')!r}, 'w')\n")
    assert r.status == "failed" and re.search(r"PermissionError|FileNotFoundError|Read-only", r.output), r
    assert not (Path(__file__).parent / "pwned").exists()


def test_fork_bomb_is_bounded():
    if not sandbox.sandbox_limits_processes():
        pytest.skip("RLIMIT_NPROC is not enforced here (root without uid isolation)")
    # every process keeps forking, up to 300 rounds each, then sleeps: only RLIMIT_NPROC stops it
    marker = f"tts-bomb-{uuid.uuid4().hex}"
    source = textwrap.dedent(f"""
        import os, sys, time
        for _ in range(300):
            try:
                os.fork()
            except OSError:
                pass
        print("PID", os.getpid(), flush=True)
        {_sleeper(marker)}
    """)
    start = time.monotonic()
    r = run_program(source, timeout=3.0, max_procs=64)
    assert time.monotonic() - start < 6.0
    assert r.status == "timeout"
    pids = _pids(r.output)
    assert 1 <= len(pids) <= 64
    assert _marked(marker) == []
    assert run_program("print(1)").passed


def test_huge_output_is_truncated():
    source = "import sys\nprint('HEAD')\nchunk = 'x' * (1 << 20)\nfor _ in range(200):\n    sys.stdout.write(chunk)\nprint('TAIL')\n"
    start = time.monotonic()
    r = run_program(source, max_output=8192)
    assert time.monotonic() - start < 15
    assert r.passed
    assert len(r.output) < 9000
    assert r.output.startswith("HEAD") and r.output.rstrip().endswith("TAIL")
    assert "bytes of output truncated" in r.output


def test_file_size_limit():
    r = run_program("open('big', 'wb').write(b'x' * (8 << 20))\n", max_file_mb=1)
    assert r.status == "failed" and "File too large" in r.output


def test_stdin_is_closed():
    r = run_program("print(input())\n")
    assert r.status == "failed" and "EOFError" in r.output


def test_environment_and_working_directory(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    source = textwrap.dedent("""
        import json, os
        print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "files": os.listdir(".")}))
        open("scratch.txt", "w").write("data")
    """)
    r = run_program(source)
    assert r.passed, r
    seen = json.loads(r.output)
    assert "SECRET_TOKEN" not in seen["env"] and "OPENAI_API_KEY" not in seen["env"]
    assert "hunter2" not in r.output
    assert set(seen["env"]) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS",
                                "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    assert seen["files"] == []
    assert seen["cwd"] != os.getcwd()
    assert not os.path.exists(seen["cwd"])


def test_harness_failure_is_an_error_result(monkeypatch):
    monkeypatch.setattr(sandbox.sys, "executable", "/nonexistent/python")
    r = run_program("print(1)")
    assert (r.status, r.passed) == ("error", False) and "cannot start" in r.output


def test_concurrent_runs():
    def job(i: int):
        if i % 4 == 3:
            return run_program(f"import time\ntime.sleep(0.2)\nassert {i} == -1\n")
        return run_program(f"import time\ntime.sleep(0.3)\nprint({i} * {i})\n")

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(16)))
    assert time.monotonic() - start < 8
    for i, r in enumerate(results):
        if i % 4 == 3:
            assert r.status == "failed" and f"assert {i} == -1" in r.output
        else:
            assert r.passed and r.output == f"{i * i}\n"


# ------------------------------------------------------------------------------------------
# extract_code
# ------------------------------------------------------------------------------------------

PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum.\n    >>> total([1, 2])\n    3\n    """\n'


def test_extract_fenced_definition_gets_prompt_imports():
    text = "Here you go:\n```python\ndef total(xs):\n    return sum(xs)\n```\nDone."
    program = extract_code(text, PROMPT, "total")
    assert program.startswith("from typing import List")
    assert "def total(xs):\n    return sum(xs)" in program
    assert '"""Sum.' not in program  # the prompt itself is not repeated
    assert run_program(program + "\nassert total([1, 2]) == 3\n").passed


def test_extract_prefers_the_block_defining_the_entry_point():
    text = ("Usage:\n```python\nprint(total([1, 2]))\n```\nFirst try:\n```python\ndef total(xs):\n    return 0\n```\n"
            "Fixed:\n```\ndef total(xs):\n    return sum(xs)\n```\n")
    program = extract_code(text, PROMPT, "total")
    assert "return sum(xs)" in program and "return 0" not in program and "print(" not in program


def test_extract_continuation():
    program = extract_code("    return sum(xs)\n", PROMPT, "total")
    assert program == PROMPT + "    return sum(xs)\n"
    program = extract_code("return sum(xs)\n", PROMPT, "total")  # unindented body
    assert run_program(program + "\nassert total([4, 5]) == 9\n").passed


def test_extract_unclosed_fence_and_main_guard():
    text = "```python\ndef total(xs):\n    return sum(xs)\n\nif __name__ == '__main__':\n    print(total([int(input())]))\n"
    program = extract_code(text, PROMPT, "total")
    assert "__main__" not in program and "input()" not in program
    assert run_program(program).passed


def test_extract_adds_prompt_helpers():
    prompt = 'def helper(x):\n    return x + 1\n\n\ndef f(x):\n    """Uses helper."""\n'
    program = extract_code("```python\ndef f(x):\n    return helper(x) * 2\n```", prompt, "f")
    assert "def helper(x)" in program
    assert run_program(program + "\nassert f(1) == 4\n").passed
    # a model that redefines the helper keeps its own
    program = extract_code("```python\ndef helper(x):\n    return x\ndef f(x):\n    return helper(x)\n```", prompt, "f")
    assert program.count("def helper") == 1


# ------------------------------------------------------------------------------------------
# docstring_tests
# ------------------------------------------------------------------------------------------


def test_docstring_forms():
    prompt = textwrap.dedent('''
        def f(a, b=0):
            """Examples.
            >>> f(1, 2)
            3
            >>> round(f(0.1, 0.2), 1)
            0.3
            f(2, 2) ==> 4
            f(3, 3) -> 6   # comment
            f(4, 1) should return 5.
            For example: f(5, 5) returns 10
            f(1, 1) = 2
            f(x, 1) => 9
            f(2) ➞ true
            f(7, 1) == 1 + 7 = 8
            g(1, 2) == 3
            For a = 1, b = 1 the output should be 2
            Input: a = 3, b = 4
            Output: 7
            """
    ''')
    tests = docstring_tests(prompt, "f")
    assert tests == [
        "assert f(1, 2) == 3",
        "assert abs((round(f(0.1, 0.2), 1)) - (0.3)) < 1e-6",
        "assert f(2, 2) == 4",
        "assert f(3, 3) == 6",
        "assert f(4, 1) == 5",
        "assert f(5, 5) == 10",
        "assert f(1, 1) == 2",
        "assert f(2) == True",
        "assert f(7, 1) == 1 + 7",
        "assert f(a=1, b=1) == 2",
        "assert f(a=3, b=4) == 7",
    ]
    for t in tests:
        compile(t, "<t>", "exec")


def test_docstring_skips_recurrences_and_bad_literals():
    prompt = textwrap.dedent('''
        def tri(n):
            """tri(1) = 3
            tri(n) = 1 + n / 2, if n is even.
            tri(3) == [1, 3, 2, 8]
            tri(abc) == 1
            tri(4) == ""bad"
            """
    ''')
    assert docstring_tests(prompt, "tri") == ["assert tri(3) == [1, 3, 2, 8]"]


def test_docstring_tests_reads_only_the_prompt():
    assert list(inspect.signature(docstring_tests).parameters) == ["prompt", "entry_point"]


# ------------------------------------------------------------------------------------------
# HumanEval
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval():
    if not HUMANEVAL.exists():
        pytest.skip("HumanEval data not available")
    with gzip.open(HUMANEVAL, "rt") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 164
    return records


def _problem(r: dict, public_tests: list[str] | None = None) -> Problem:
    return Problem(id=r["task_id"], task="humaneval", kind="code", question=r["prompt"], prompt=r["prompt"],
                   entry_point=r["entry_point"],
                   public_tests=docstring_tests(r["prompt"], r["entry_point"]) if public_tests is None else public_tests)


def _oracle(r: dict, program: str):
    return UnitTestVerifier(r["test"], r["entry_point"]).verify(_problem(r, []), Candidate(text=program, answer=program))


def test_humaneval_canonical_solutions_pass_hidden_tests(humaneval):
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda r: _oracle(r, r["prompt"] + r["canonical_solution"]), humaneval))
    failed = [(r["task_id"], v.feedback[:300]) for r, v in zip(humaneval, verdicts) if not v.passed]
    assert failed == []
    assert all(v.score == 1.0 and v.verifier == "unit-tests" for v in verdicts)


def test_humaneval_broken_solutions_fail_hidden_tests(humaneval):
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda r: _oracle(r, r["prompt"] + "    return None\n"), humaneval))
    passed = [r["task_id"] for r, v in zip(humaneval, verdicts) if v.passed]
    assert passed == []
    assert all(v.score == 0.0 for v in verdicts)


def test_humaneval_extracted_chat_answer(humaneval):
    r = humaneval[0]
    body = r["canonical_solution"]
    text = f"Sure! Here is the function:\n\n```python\ndef {r['entry_point']}(numbers, threshold):\n{body}```\n"
    program = extract_code(text, r["prompt"], r["entry_point"])
    assert program.startswith("from typing import List")
    assert _oracle(r, program).passed


def test_humaneval_docstring_tests(humaneval):
    problems = [_problem(r) for r in humaneval]
    with_tests = [p for p in problems if p.public_tests]
    print(f"\n{len(with_tests)}/164 HumanEval problems have docstring example tests "
          f"({sum(len(p.public_tests) for p in problems)} asserts)")
    assert len(with_tests) >= 150

    def run(pair):
        r, p = pair
        answer = r["prompt"] + r["canonical_solution"]
        return DocstringExamplesVerifier().verify(p, Candidate(text=answer, answer=answer))

    pairs = [(r, p) for r, p in zip(humaneval, problems) if p.public_tests]
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(run, pairs))
    failing = {r["task_id"] for (r, _), v in zip(pairs, verdicts) if not v.passed}
    assert failing == BAD_DOCSTRINGS
    for (r, _), v in zip(pairs, verdicts):
        if r["task_id"] in BAD_DOCSTRINGS:
            assert 0.0 <= v.score < 1.0 and "expected" in v.feedback


# ------------------------------------------------------------------------------------------
# DocstringExamplesVerifier
# ------------------------------------------------------------------------------------------

EX_PROMPT = 'def add(a, b):\n    """Add.\n    >>> add(1, 2)\n    3\n    >>> add(2, 2)\n    4\n    """\n'


def _examples(body: str, tests: list[str] | None = None, **kw):
    problem = Problem(id="p", task="t", kind="code", question=EX_PROMPT, prompt=EX_PROMPT, entry_point="add",
                      public_tests=docstring_tests(EX_PROMPT, "add") if tests is None else tests)
    program = None if body is None else EX_PROMPT + body
    return DocstringExamplesVerifier(**kw).verify(problem, Candidate(text=body or "", answer=program))


def test_examples_all_pass():
    v = _examples("    return a + b\n")
    assert (v.verifier, v.score, v.passed) == ("docstring-examples", 1.0, True)
    assert v.feedback == "2/2 examples passed."


def test_examples_partial_with_feedback():
    v = _examples("    print('debug', a)\n    return 3\n")
    assert (v.score, v.passed) == (0.5, False)
    assert "Failed: assert add(2, 2) == 4" in v.feedback and "expected 4, got 3" in v.feedback
    assert "stdout: debug 2" in v.feedback
    assert "add(1, 2)" not in v.feedback  # the passing example is not listed


def test_examples_exceptions_and_exits_count_as_failures():
    v = _examples("    if a == 1:\n        raise ValueError('boom')\n    import sys\n    sys.exit(0)\n")
    assert (v.score, v.passed) == (0.0, False)
    assert "raised ValueError: boom" in v.feedback and "raised SystemExit" in v.feedback


def test_examples_timeout_stops_the_rest():
    start = time.monotonic()
    v = _examples("    while a == 1:\n        pass\n    return a + b\n", timeout=1.0)
    assert time.monotonic() - start < 4
    assert (v.score, v.passed) == (0.0, False)
    assert "timed out after 1 s" in v.feedback and "not run: an earlier example timed out" in v.feedback


def test_examples_program_that_crashes_or_exits_early():
    v = _examples("    return a + b\n\nraise RuntimeError('at import')\n")
    assert (v.score, v.passed) == (0.0, False)
    assert "crashed or exited early" in v.feedback and "RuntimeError: at import" in v.feedback
    v = _examples("    return a + b\n\nimport os\nos._exit(0)\n")
    assert (v.score, v.passed) == (0.0, False)
    # results printed, then the program never ends (a non-daemon thread): not trusted
    v = _examples("    import threading, time\n    threading.Thread(target=time.sleep, args=(60,)).start()\n"
                  "    return a + b\n", timeout=1.0)
    assert (v.score, v.passed) == (0.0, False) and "timed out" in v.feedback
    v = _examples(None)
    assert (v.score, v.passed) == (0.0, False)


def test_examples_without_public_tests():
    v = _examples("    return a + b\n", tests=[])
    assert (v.score, v.passed) == (0.5, None)
    v = _examples("    return a +\n", tests=[])  # does not compile
    assert (v.score, v.passed) == (0.0, False)
    problem = Problem(id="p", task="t", kind="code", question="", prompt="", entry_point="add")
    v = DocstringExamplesVerifier().verify(problem, Candidate(text="", answer="def other():\n    pass\n"))
    assert (v.score, v.passed) == (0.0, False)  # entry point missing
