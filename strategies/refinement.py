"""Refinement prompts for tree search: "improve this answer given its feedback" (docs/algorithms/tree-search.md).

The prompt continues the problem's own conversation: the original messages, the previous answer as the
assistant's turn, then a user turn with the scorers' feedback and the request. Only what the scorers
said is shown (for code: the docstring examples it failed and their output; for math: the judge's
P(correct), or its explanation); the hidden tests are not part of the `Problem`, so they cannot reach
a prompt.
"""

from __future__ import annotations

from tts.types import Candidate, ChatMessage, Problem, Prompt

CODE_FORMAT = "Reply with the complete corrected function (signature included) in a single ```python code block."


def code_request(feedback: str, passed: bool | None) -> str:
    shown = f"Running the examples from the docstring on this function gave:\n{feedback}\n\n" if feedback else ""
    if passed is False:
        ask = "Fix the function so that it meets the specification and passes the examples."
    else:  # the examples pass (or there are none): look for what they do not cover
        ask = ("Re-check the function against the whole specification, including edge cases the examples "
               "do not cover, and fix anything that is wrong.")
    return f"{shown}{ask} {CODE_FORMAT}"


def math_request(feedback: str) -> str:
    checked = f"A check of this solution reported:\n{feedback}\n\n" if feedback else ""
    return (f"{checked}Re-check the solution above step by step and correct any mistake. Then give the final "
            "answer again, in exactly the format the problem asks for.")


def previous_answer(problem: Problem, candidate: Candidate) -> str:
    """What the model is shown of its earlier answer: for code, the program that was tested."""
    if problem.kind == "code" and candidate.answer:
        return f"```python\n{candidate.answer.rstrip()}\n```"
    return candidate.text


def refinement_prompt(problem: Problem, candidate: Candidate, feedback: str) -> Prompt:
    """The prompt asking the model to improve `candidate` (an answer to `problem`) given `feedback`."""
    request = (code_request(feedback, candidate.selection_passed) if problem.kind == "code"
               else math_request(feedback))
    answer = previous_answer(problem, candidate)
    if isinstance(problem.prompt, str):
        return f"{problem.prompt}{answer}\n\n{request}\n\n"
    return [*problem.prompt, ChatMessage(role="assistant", content=answer), ChatMessage(role="user", content=request)]
