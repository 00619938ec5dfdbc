"""Answer extraction and equivalence for math tasks (docs/algorithms/math-answers.md).

`extract_answer` follows the Qwen2.5-Math priority (8a/8b): last `\\boxed{}`, then "the answer is",
then GSM8K `#### X`, then the last number. A plain-text "the answer is" sentence is read for the
number it states ("2 x 4 = 8 bolts" -> 8; verifiers/math_extract.py); LaTeX and boxed answers are
kept as written. `equivalent` compares what answers state: a numeric equation by its last side,
never by its truth value, and a Boolean only with a literal Boolean. Then a cascade: a cheap exact
path (normalised strings, plain numbers compared as fractions) decides the common GSM8K case
without SymPy; everything else goes to Math-Verify (8c) in a helper process, because Math-Verify's
own timeout uses SIGALRM, which only works in a main thread, while the runner verifies from worker
threads. The helper is killed when a comparison runs past its timeout.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path

from tts.types import Candidate, Problem, Verdict
from tts.verifier import Verifier
from tts.verifiers.math_extract import constant_chain_result, stated_number

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_IS = re.compile(r"(?:the|final) answer is\b", re.IGNORECASE)
_GSM8K = re.compile(r"####\s*\$?\s*(-?[\d.,]*\d)")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete top-level `\\boxed{...}` / `\\fbox{...}` / `\\boxed X`, in order."""
    found, pos = [], 0
    while (m := _BOXED.search(text, pos)) is not None:
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        if text[i + 1 : j].strip():  # an empty box holds no answer
                            found.append(text[i + 1 : j])
                        pos = j + 1
                        break
            else:  # unclosed (a truncated generation): not an answer
                pos = i + 1
        else:  # `\boxed 5$`: up to the closing `$` or the end of the line (Qwen's parser)
            rest = re.split(r"[$\n]", text[i:], maxsplit=1)[0].strip().rstrip(".")
            if rest:
                found.append(rest)
            pos = i
    return found


def _after_answer_is(text: str) -> str | None:
    """What follows the last "the answer is" / "final answer is", up to the end of its sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip(" :*\t").split("\n", 1)[0]
    for left, right in _DELIMS:
        if rest.startswith(left):
            close = re.compile(r"(?<!\\)" + re.escape(right))  # "\$" inside math is a dollar sign
            if end := close.search(rest, len(left)):
                rest = rest[len(left) : end.start()]
                break
    else:
        rest = re.split(r"(?<=[^\s\\])[.!?](?:\s|$)", rest, maxsplit=1)[0]  # not LaTeX "\!"
    answer = rest.strip().strip("*").strip().rstrip(".").strip("$").strip()
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer in a model output or worked solution, or None when there is none."""
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        return boxed[-1].strip()
    answer = _after_answer_is(text)
    if answer is not None:
        if "\\" not in answer:  # plain text: "2 x 4 = 8 bolts" states 8; LaTeX is left to `equivalent`
            answer = stated_number(answer, lead_in=True) or answer
        return answer
    gsm = _GSM8K.findall(text)
    if gsm:
        return gsm[-1].replace(",", "").rstrip(".")
    numbers = list(_NUMBER.finditer(_THOUSANDS_COMMA.sub("", text)))
    if not numbers:
        return None
    last = numbers[-1]
    value = last.group()
    # "5-3": a minus right after a digit, letter or bracket is subtraction, not a sign.
    if value.startswith("-") and last.start() > 0 and re.match(r"[\w)\]}]", last.string[last.start() - 1]):
        value = value[1:]
    return value


# --------------------------------------------------------------------------- fast exact path

_LATEX_NOISE = re.compile(r"\\(?:left|right|displaystyle)(?![a-zA-Z])|\\[!,;: ]")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree\b")
_INT_FRAC = re.compile(r"^([+-]?)\\frac(?:\{([+-]?\d+)\}|(\d))(?:\{([+-]?\d+)\}|(\d))$")
_INT_SLASH = re.compile(r"^([+-]?\d+)/(\d+)$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


def _normalise(s: str) -> str:
    """Strip notation that never changes the value: `$`, spacing, `\\left`, `dfrac`, degrees, final period."""
    s = _LATEX_NOISE.sub("", s.strip())
    s = s.replace("\\$", "").replace("$", "").replace("{,}", ",")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = _DEGREES.sub("", s)
    return re.sub(r"\s+", "", s).rstrip(".")


def _plain_number(s: str) -> tuple[Fraction, bool] | None:
    """(exact value, written as a percentage) for a plain number or integer fraction, else None."""
    if re.search(r",\s", re.sub(r",\\!\s*", ",", s)):  # "1, 234" is a list; "1,\!234" is a number
        return None
    s = _normalise(s)
    percent = s.endswith("%")
    s = s.removesuffix("%")
    if _GROUPED.match(s):
        s = s.replace(",", "")
    try:
        if _DECIMAL.match(s):
            return Fraction(Decimal(s)), percent
        if m := _INT_SLASH.match(s):
            return Fraction(int(m.group(1)), int(m.group(2))), percent
        if m := _INT_FRAC.match(s):
            sign, num_braced, num_digit, den_braced, den_digit = m.groups()
            value = Fraction(int(num_braced or num_digit), int(den_braced or den_digit))
            return (-value if sign == "-" else value), percent
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    return None


def _as_stated(s: str) -> str:
    """What an answer states: "2 x 4 = 8 bolts" and "2 \\times 4 = 8" state 8 (never a truth value)."""
    number = stated_number(s)
    if number is not None:
        return number
    last = constant_chain_result(s)
    if last is not None:
        return stated_number(last) or last
    return s


def _literal_boolean(s: str) -> bool | None:
    """True/False for an answer that literally is a Boolean ("True", "\\text{false}"), else None."""
    word = re.sub(r"\\(?:text|mathrm|textbf)\s*\{([^{}]*)\}", r"\1", s).strip().strip("$").strip().lower()
    return {"true": True, "false": False}.get(word)


def _fast_equivalent(pred: str, ref: str) -> bool | None:
    """True/False when decidable without SymPy, None when the symbolic check must decide."""
    p_bool, r_bool = _literal_boolean(pred), _literal_boolean(ref)
    if p_bool is not None or r_bool is not None:  # Booleans match only Booleans, never a relation's value
        return p_bool == r_bool
    a, b = _plain_number(pred), _plain_number(ref)
    if a is not None and b is not None:
        (x, x_pct), (y, y_pct) = a, b
        # "50\%" may be written as 50 or as 0.5 (Qwen's grader accepts both readings).
        return x == y or (x_pct and x / 100 == y) or (y_pct and y / 100 == x)
    if _normalise(pred) == _normalise(ref):
        return True
    return None


# --------------------------------------------------------------------------- symbolic path (helper process)


def _symbolic_equivalent(pred: str, ref: str) -> bool:
    """Math-Verify's verdict with its signal-based timeouts off; runs inside a helper process."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def _parse(s: str) -> list:
        s = re.sub(r"(?<!\\)\$", "", s)  # the answer is re-wrapped in one pair of math delimiters
        return parse(f"${s}$", config, parsing_timeout=None)

    gold, target = _by_value(_parse(ref)), _by_value(_parse(pred))
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))


def _by_value(parsed: list) -> list | None:
    """Parsed answers compared by value: a variable-free equation by its last side; None for a truth value.

    SymPy reads `1+1=3` and `2+2=7` (or `3<4` and `5>1`) as relations without variables, and
    Math-Verify then finds any two of them equal (same truth value, or no solutions to compare).
    """
    from sympy import And, Eq
    from sympy.core.relational import Relational
    from sympy.logic.boolalg import Boolean

    out = []
    for expr in parsed:
        if isinstance(expr, (Relational, Boolean)) and not getattr(expr, "free_symbols", True):
            chain = list(getattr(expr, "_unsorted_args", expr.args)) if isinstance(expr, And) else [expr]
            if not all(isinstance(rel, Eq) for rel in chain):
                return None  # "3 < 4", True: a truth value is not an answer
            expr = chain[-1].rhs  # `a = b = c` (parsed as a = b & b = c) states c
        out.append(expr)
    return out


def _serve() -> None:
    """Helper process loop: answer (pred, ref) jobs from fd 0 on fd 1 until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    jobs, results = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints go to stderr, not into the result pipe
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout is disabled" warnings
    import math_verify  # noqa: F401  (import before signalling ready, so start-up is not timed as work)

    results.send("ready")
    while True:
        try:
            pred, ref = jobs.recv()
        except (EOFError, OSError):
            return
        try:
            result = _symbolic_equivalent(pred, ref)
        except Exception:  # a malformed expression is simply not equivalent
            result = False
        results.send(result)


_STARTUP_TIMEOUT = 60.0
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
_MAX_WORKERS = max(1, min(4, _CPUS // 2))
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class _Worker:
    """One helper process and the parent's ends of its two pipes.

    A fresh interpreter (`python -c`), not multiprocessing: it does not re-import the caller's
    `__main__` (which breaks unguarded scripts and stdin), it can be started from daemonic pool
    workers, and it never forks a parent that may hold threads, CUDA or an event loop.
    """

    def __init__(self) -> None:
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        code = f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from verifiers.math import _serve; _serve()"
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=job_r, stdout=res_w)
        finally:
            os.close(job_r)
            os.close(res_w)
        self.jobs, self.results = Connection(job_w, readable=False), Connection(res_r, writable=False)
        try:
            ready = self.results.poll(_STARTUP_TIMEOUT) and self.results.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise RuntimeError("math-verify helper process did not start")

    def ask(self, pred: str, ref: str, timeout: float) -> bool:
        """The helper's verdict; raises TimeoutError when it runs past `timeout`."""
        self.jobs.send((pred, ref))
        if not self.results.poll(timeout):
            raise TimeoutError
        return self.results.recv()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.jobs.close()
        self.results.close()


class _WorkerPool:
    """Up to `size` persistent helpers, each running one comparison at a time.

    Each caller holds its own helper, so one runaway comparison is killed alone and does not eat
    the time budget of comparisons queued behind it (the timeout counts from when a helper takes
    the job). Helpers start lazily and are replaced after a kill.
    """

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def run(self, pred: str, ref: str, timeout: float) -> bool:
        with self._slots:
            worker = self._take_idle() or _Worker()
            result = False
            healthy = False
            try:
                result = worker.ask(pred, ref, timeout)
                healthy = True
            except TimeoutError:
                log.info("equivalence check timed out after %.1fs: %.80r vs %.80r", timeout, pred, ref)
            except (EOFError, OSError):  # the helper died (e.g. out of memory)
                log.warning("math-verify helper died comparing %.80r vs %.80r", pred, ref)
            finally:  # also on KeyboardInterrupt: a helper busy with an abandoned job is no use
                if healthy:
                    with self._lock:
                        self._idle.append(worker)
                else:
                    worker.kill()
            return result

    def _take_idle(self) -> _Worker | None:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.proc.poll() is None:
                    return worker
                worker.kill()  # died while idle: reap it and try the next
        return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_pool: _WorkerPool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _WorkerPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _WorkerPool(_MAX_WORKERS)
        return _pool


def _forget_pool_after_fork() -> None:
    """A forked child must not share its parent's helper pipes: it starts its own helpers."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


def _close_pool() -> None:
    if _pool is not None:
        _pool.close()


os.register_at_fork(after_in_child=_forget_pool_after_fork)
atexit.register(_close_pool)


_no_helpers = False


def _symbolic_with_timeout(pred: str, ref: str, timeout: float) -> bool:
    """Run the symbolic check in a helper process; inline (untimed) only where none can start."""
    global _no_helpers
    if not _no_helpers:
        try:
            return _get_pool().run(pred, ref, timeout)
        except (RuntimeError, OSError) as exc:
            _no_helpers = True
            log.warning("cannot start a math-verify helper process (%s); comparing inline without a timeout", exc)
    try:
        return _symbolic_equivalent(pred, ref)
    except Exception:
        return False


@lru_cache(maxsize=65536)
def _equivalent_cached(pred: str, ref: str, timeout: float) -> bool:
    pred, ref = _as_stated(pred), _as_stated(ref)
    fast = _fast_equivalent(pred, ref)
    if fast is not None:
        return fast
    return _symbolic_with_timeout(pred, ref, timeout)


def equivalent(pred: str | None, ref: str | None, timeout: float = 5.0) -> bool:
    """Whether `pred` is mathematically equivalent to the reference `ref` (MATH and GSM8K conventions).

    Asymmetric like Math-Verify: `ref` is the gold side. Thread-safe; results are cached because
    voting compares the same pairs again and again. A comparison that runs past `timeout` seconds
    counts as not equivalent.
    """
    if pred is None or ref is None:
        return False
    pred, ref = pred.strip(), ref.strip()
    if not pred or not ref:
        return False
    return _equivalent_cached(pred, ref, float(timeout))


# --------------------------------------------------------------------------- oracle


class MathAnswerVerifier(Verifier):
    """Oracle for math tasks: holds the hidden reference, so only the runner may call it."""

    name = "math-answer"
    description = "Oracle: the candidate's extracted answer is mathematically equivalent to the reference answer"

    def __init__(self, reference: str, timeout: float = 5.0) -> None:
        self.reference = reference
        self.timeout = timeout

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if candidate.answer is None:
            return Verdict(verifier=self.name, score=0.0, passed=False, feedback="no answer was extracted")
        ok = equivalent(candidate.answer, self.reference, self.timeout)
        feedback = "equivalent to the reference answer" if ok else "not equivalent to the reference answer"
        return Verdict(verifier=self.name, score=1.0 if ok else 0.0, passed=ok, feedback=feedback)
