"""Answer extraction and equivalence (verifiers/math.py, ALGORITHMS.md section 8).

Table-driven like Math-Verify's own tests, plus checks against the full GSM8K and MATH-500
test sets: every gold solution's extracted answer must match its reference answer.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tts.types import Candidate, Problem
from verifiers import math as vmath
from verifiers.math import MathAnswerVerifier, equivalent, extract_answer


def _data_dir() -> Path:
    """TTS_SHARED_DATA, else the package's copy, else the shared checkout's copy."""
    if env := os.environ.get("TTS_SHARED_DATA"):
        return Path(env)
    packaged = Path(__file__).resolve().parents[1] / "tasks" / "data"
    if (packaged / "math500" / "test.jsonl").is_file():
        return packaged
    return Path("/work/shared/data")


def _records(rel: str) -> list[dict]:
    path = _data_dir() / rel
    if not path.is_file():
        pytest.skip(f"benchmark file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- extraction

EXTRACTION = [
    ("So the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{\\sqrt{3}}{2}} end", "\\frac{\\sqrt{3}}{2}"),
    ("first \\boxed{1}, then \\boxed{2}", "2"),
    ("$\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}$", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("final: \\fbox{7}", "7"),
    ("so $\\boxed 5$.", "5"),
    ("complete \\boxed{3} then truncated \\boxed{4", "3"),
    ("\\boxed{ } is empty, 12 is not", "12"),
    ("The answer is 42.", "42"),
    ("Thus the answer is $\\frac{3}{4}$. Done", "\\frac{3}{4}"),
    ("Hence, the answer is: 3.5 meters.\nMore text 99", "3.5 meters"),
    ("Final Answer: The final answer is $(1,2)$. I hope it is correct.", "(1,2)"),
    ("the answer is **-7**.", "-7"),
    ("The answer is $\\$18.90$.", "\\$18.90"),
    ("The answer is 11,\\! 111,\\! 100.", "11,\\! 111,\\! 100"),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\nShe makes 9 * 2 = $<<9*2=18>>18\n#### 18", "18"),
    ("Total <<2*3=6>>6\n#### 1,234", "1234"),
    ("#### -5", "-5"),
    ("we get 1,234 apples and 5 pears, so 1,250,000 in all", "1250000"),
    ("the temperature fell to -3.5 degrees", "-3.5"),
    ("5-3 is what is left", "3"),
    ("no digits here at all", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", EXTRACTION)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# --------------------------------------------------------------------------- equivalence

EQUIVALENT = [
    # numbers: separators, currency, decimals, signs
    ("1,000", "1000"),
    ("1000", "1{,}000"),
    ("11111111100", "11,\\! 111,\\! 111,\\! 100"),
    ("$5", "5"),
    ("\\$1,234.50", "1234.5"),
    ("5.0", "5"),
    ("-3", "-3.00"),
    # fractions and decimals, when exact
    ("\\frac{1}{2}", "0.5"),
    ("0.75", "3/4"),
    ("\\dfrac{1}{2}", "\\tfrac12"),
    ("-\\frac{35}{9}", "\\frac{-35}{9}"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("(x+1)^2", "x^2+2x+1"),
    # tuples, intervals, sets, matrices
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("(1,-16,-4,43)", "(1, -16, -4, 43)"),
    ("[-2,7]", "x \\in [-2,7]"),
    ("(-\\infty,2)\\cup(3,\\infty)", "(-\\infty, 2) \\cup (3, \\infty)"),
    ("\\{2,1\\}", "\\{1,2\\}"),
    ("1+\\sqrt{19}, 1-\\sqrt{19}", "1 \\pm \\sqrt{19}"),
    ("\\begin{bmatrix}1\\\\2\\end{bmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}", "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}"),
    # equations
    ("5", "x=5"),
    ("x=5", "5"),
    ("-5x+7y-11z-4=0", "5x - 7y + 11z + 4 = 0"),
    # units, degrees, percentages, text
    ("10", "10\\text{ cm}"),
    ("15", "15\\mbox{ cm}^2"),
    ("5.4", "5.4 \\text{ cents}"),
    ("90", "90^\\circ"),
    ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}"),
    ("50", "50\\%"),
    ("50\\%", "50"),
    ("0.5", "50\\%"),
    ("Evelyn", "\\text{Evelyn}"),
    ("\\text{(C)}", "C"),
]

NOT_EQUIVALENT = [
    ("2", "-2"),
    ("0.33", "\\frac{1}{3}"),
    ("\\frac{1}{3}", "0.33"),
    ("(1,2)", "(2,1)"),
    ("(2,1)", "(1,2)"),
    ("[1,2)", "(1,2]"),
    ("-\\infty", "\\infty"),
    ("\\pi", "3.14159"),
    ("x^2", "x^3"),
    ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}2&1\\end{pmatrix}"),
    ("1,234", "1.234"),
    ("1, 234", "1234"),
    ("1001", "1000"),
    ("51", "50\\%"),
    ("\\sqrt{2}", "2"),
    ("x=6", "5"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("", "0"),
    (None, "5"),
    ("5", None),
]


@pytest.mark.parametrize("pred,ref", EQUIVALENT)
def test_equivalent(pred, ref):
    assert equivalent(pred, ref)


@pytest.mark.parametrize("pred,ref", NOT_EQUIVALENT)
def test_not_equivalent(pred, ref):
    assert not equivalent(pred, ref)


def test_numbers_never_reach_sympy(monkeypatch):
    """The GSM8K common case is decided by the exact fast path, without a helper process."""

    def boom(*args):
        raise AssertionError("symbolic path used")

    monkeypatch.setattr(vmath, "_symbolic_with_timeout", boom)
    vmath._equivalent_cached.cache_clear()
    assert equivalent("1,234", "1234")
    assert equivalent("$18.00", "18")
    assert equivalent("\\frac{1}{2}", "0.5")
    assert not equivalent("0.33", "1/3")
    assert not equivalent("17", "18")


def test_equivalent_from_many_threads():
    vmath._equivalent_cached.cache_clear()
    cases = [(p, r, True) for p, r in EQUIVALENT[:20]] + [(p, r, False) for p, r in NOT_EQUIVALENT[:12]]
    barrier = threading.Barrier(8)

    def work(offset: int) -> list[bool]:
        barrier.wait()
        rotated = cases[offset:] + cases[:offset]
        return [equivalent(p, r) == want for p, r, want in rotated]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(0, 32, 4)))
    assert all(all(r) for r in results)


def test_timeout_is_enforced_off_the_main_thread():
    assert equivalent("\\sqrt{12}", "2\\sqrt{3}")  # a helper is up, so start-up is not timed below
    slow = "2^{2^{2^{2^{100}}}}"
    out: dict[str, object] = {}

    def call() -> None:
        start = time.monotonic()
        out["result"] = equivalent(slow, "3", timeout=1.0)
        out["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "equivalent() hung past its timeout"
    assert out["result"] is False
    assert out["elapsed"] < 1.0 + 2.0
    assert equivalent("\\sqrt{18}", "3\\sqrt{2}")  # the killed helper was replaced


def test_equivalent_from_worker_processes():
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:  # daemonic workers: they may not use multiprocessing children
        got = pool.starmap(equivalent, [("x=5", "5"), ("(1,2)", "(2,1)"), ("1,000", "1000")])
    assert got == [True, False, True]


def test_math_answer_verifier():
    problem = Problem(id="q", task="t", question="1/2?", prompt="1/2?")
    oracle = MathAnswerVerifier("\\frac{1}{2}")
    good = oracle.verify(problem, Candidate(text="... \\boxed{0.5}", answer="0.5"))
    bad = oracle.verify(problem, Candidate(text="... 0.33", answer="0.33"))
    none = oracle.verify(problem, Candidate(text="no idea", answer=None))
    assert (good.verifier, good.score, good.passed) == ("math-answer", 1.0, True)
    assert (bad.score, bad.passed) == (0.0, False)
    assert (none.score, none.passed) == (0.0, False)
    assert MathAnswerVerifier.name == "math-answer" and MathAnswerVerifier.description


# --------------------------------------------------------------------------- benchmark gold answers


def test_gsm8k_gold_solutions():
    records = _records("gsm8k/test.jsonl")
    assert len(records) == 1319
    bad = []
    for i, rec in enumerate(records):
        gold = rec["answer"].split("#### ")[-1].replace(",", "").strip()
        pred = extract_answer(rec["answer"])
        if pred != gold or not equivalent(pred, gold):
            bad.append((i, pred, gold))
    assert not bad, bad[:10]


def test_math500_gold_solutions():
    records = _records("math500/test.jsonl")
    assert len(records) == 500
    bad = []
    for i, rec in enumerate(records):
        pred = extract_answer(rec["solution"])
        if not equivalent(pred, rec["answer"]):
            bad.append((i, pred, rec["answer"]))
    assert not bad, bad[:10]


MODEL_STYLES = [
    "Therefore the answer is ${}$.\n",
    "The final answer is {}.",
    "Final Answer: The final answer is ${}$. I hope it is correct.",
    "so we get \\[\\boxed{{{}}}\\]",
    "The answer is \\({}\\).",
]


@pytest.mark.parametrize("style", MODEL_STYLES)
def test_math500_answers_in_model_styles(style):
    """Every MATH-500 answer survives the phrasings models use (8b: boxed, Minerva, "the answer is")."""
    records = _records("math500/test.jsonl")
    bad = []
    for i, rec in enumerate(records):
        pred = extract_answer("Some work: 2 + 10 = 12.\n" + style.format(rec["answer"]))
        if not equivalent(pred, rec["answer"]):
            bad.append((i, pred, rec["answer"]))
    assert not bad, bad[:10]
