"""The judge's prompts and how its answers are read (docs/scorers/judge.md).

A judge request repeats the generation's prompt exactly and appends the candidate after it, so the
engine's prefix cache serves the shared part: chat prompts become `[*prompt, assistant(solution),
user(question)]`, text prompts `prompt + solution + "\\n\\n" + question + "\\nAnswer:"`. The verdict is
read from the next token's top-k log-probabilities: P(Yes) / (P(Yes) + P(No)), every spelling of each
word summed (" Yes", "YES", "\\u0120yes", ...).
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

from tts.types import ChatMessage, Problem, Prompt, Sample

DEFAULT_QUESTION = "Is the answer above correct? Answer Yes or No."
DEFAULT_STEP_QUESTION = "Is the reasoning above correct so far? Answer Yes or No."
EXPLAIN_INSTRUCTION = ("First explain briefly whether it is correct, then end with a last line that says "
                       "\"Answer: Yes\" or \"Answer: No\".")
TEMPLATE_FIELDS = ("question", "solution")
# Markers some tokenizers leave on a token's text for a leading space or newline (GPT-2 BPE, SentencePiece).
_MARKERS = "\u0120\u2581\u010a"
_AFTER_ANSWER = re.compile(r"answer\W*$", re.IGNORECASE)
_LAST_WORD = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"answer\s*[:\uff1a]", re.IGNORECASE)


def template_error(template: str) -> str | None:
    """Why a custom judge template is unusable, or None: it needs {solution}, may use {question}, and
    nothing else in braces (write literal braces as {{ and }})."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"template is not a valid format string ({exc}); write literal braces as {{{{ and }}}}"
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        return (f"template has unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)}; "
                "use {question} and {solution} (literal braces as {{ and }})")
    if "solution" not in fields:
        return "template needs a {solution} placeholder (where the candidate goes)"
    return None


def judge_prompt(problem: Problem, solution: str, question: str, *, explain: bool = False,
                 template: str | None = None) -> Prompt:
    """The judge's prompt for one candidate (or one step prefix of it).

    With a `template`: one user message, {question} = the problem's question, {solution} = the candidate.
    Otherwise the generation's own prompt comes first, unchanged, so the judge shares its cached prefix.
    """
    if explain:
        question = f"{question} {EXPLAIN_INSTRUCTION}"
    if template is not None:
        content = template.format(question=problem.question, solution=solution)
        if explain:
            content = f"{content}\n\n{EXPLAIN_INSTRUCTION}"
        return [ChatMessage(role="user", content=content)]
    if isinstance(problem.prompt, str):
        return f"{problem.prompt}{solution}\n\n{question}\n" + ("Explanation:" if explain else "Answer:")
    return [*problem.prompt, ChatMessage(role="assistant", content=solution),
            ChatMessage(role="user", content=question)]


# ---- reading the answer ---------------------------------------------------------------------------

def word(token: str) -> str:
    """A token's text as a word: tokenizer markers and whitespace stripped, lower-cased."""
    return token.strip().lstrip(_MARKERS).strip().lower()


@dataclass(frozen=True)
class Reading:
    """What one judge sample said. `score`: P(Yes) / (P(Yes) + P(No)) (0.5 when it said neither)."""

    score: float
    note: str = ""  # what was missing or odd (one side not in the top-k, neither, the fallback used)
    explanation: str = ""


def p_yes(top: dict[str, float]) -> Reading:
    """P(Yes) normalised over Yes and No at one position, all spellings of each summed. A word absent
    from the top-k counts as probability 0 (noted); both absent: 0.5, noting the top tokens instead."""
    yes = sum(math.exp(lp) for tok, lp in top.items() if word(tok) == "yes")
    no = sum(math.exp(lp) for tok, lp in top.items() if word(tok) == "no")
    if yes + no <= 0.0:
        shown = ", ".join(f"{tok!r} {math.exp(lp):.2f}" for tok, lp in list(top.items())[:5])
        return Reading(0.5, f"the judge answered neither Yes nor No (top tokens: {shown or 'none'})")
    note = ""
    if yes == 0.0:
        note = f"Yes not among the top {len(top)} tokens"
    elif no == 0.0:
        note = f"No not among the top {len(top)} tokens"
    return Reading(yes / (yes + no), note)


def drawn_tokens(sample: Sample) -> list[str]:
    """The text of each generated token, recovered from the top-k: the entry whose log-probability is the
    sampled token's (the most likely one when that is unknown; "" when the sampled token is not listed)."""
    top = sample.top_logprobs or []
    lps = sample.token_logprobs if sample.token_logprobs is not None and len(sample.token_logprobs) == len(top) \
        else None
    out = []
    for i, options in enumerate(top):
        if not options:
            out.append("")
            continue
        if lps is None:
            out.append(next(iter(options)))
            continue
        tok, lp = min(options.items(), key=lambda kv: abs(kv[1] - lps[i]))
        out.append(tok if abs(lp - lps[i]) < 1e-3 else "")
    return out


def read_direct(sample: Sample, vote: bool) -> Reading:
    """A one-token judgement: P(Yes) at the first generated position. With `vote` (several judgements
    sampled at a temperature, which all share that one distribution) the sample's score is its drawn word
    (Yes 1, No 0), or its P(Yes) when it drew neither."""
    assert sample.top_logprobs is not None
    if not sample.top_logprobs:
        return Reading(0.5, "the judge generated no token")
    reading = p_yes(sample.top_logprobs[0])
    if vote:
        drawn = word(sample.text)
        if drawn in ("yes", "no"):
            return Reading(1.0 if drawn == "yes" else 0.0, reading.note)
    return reading


def read_explained(sample: Sample) -> Reading:
    """An explained judgement ending in "Answer: Yes|No": P(Yes) at the last generated Yes/No that follows
    "Answer:"; failing that, P(Yes) at its last generated Yes/No token; failing that, the text's last Yes or
    No word as 1.0 or 0.0 (a word split over tokens); failing that, 0.5."""
    assert sample.top_logprobs is not None
    tokens = drawn_tokens(sample)
    text = sample.text
    cut = [m.start() for m in _ANSWER_LINE.finditer(text)]
    explanation = (text[: cut[-1]] if cut else text).strip()
    for i in range(len(tokens) - 1, -1, -1):
        if word(tokens[i]) in ("yes", "no") and _AFTER_ANSWER.search("".join(tokens[:i])):
            reading = p_yes(sample.top_logprobs[i])
            return Reading(reading.score, reading.note, explanation)
    for i in range(len(tokens) - 1, -1, -1):  # no "Answer:" line: P(Yes) where it last said Yes or No
        if word(tokens[i]) in ("yes", "no"):
            reading = p_yes(sample.top_logprobs[i])
            note = "; ".join(x for x in ("no \"Answer:\" line: read at its last Yes/No token", reading.note) if x)
            return Reading(reading.score, note, explanation)
    words = _LAST_WORD.findall(text)
    if words:
        return Reading(1.0 if words[-1].lower() == "yes" else 0.0,
                       "no \"Answer: Yes/No\" token found: the text's last Yes/No was taken", explanation)
    return Reading(0.5, "the judge's explanation ended in neither Yes nor No", explanation)
