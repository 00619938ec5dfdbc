"""Prompt perturbation (DivSampling; Wang et al. 2025, "Diversified Sampling Improves Scaling LLM Inference").

Samples drawn from one fixed prompt tend to repeat the same mistakes; drawing each sample from a slightly
different prompt decorrelates them (docs/perturb.md). A perturber *adds* text to the last user message of
the prompt (or to a raw-text prompt) and never removes any, so the question and the task's answer-format
instruction survive every perturbation.

- Task-agnostic (`role`, `instruction`, `prefix`): drawn from the caller's seeded RNG, so the same seed
  gives the same perturbations; no model call.
- Task-specific (`hint`, `rephrase`): the model writes them. One generation request per kind and problem
  asks for k texts with n = k (k = the samples that need one), through the caller's `generate`, so their
  tokens count in the problem's usage. Unusable output (empty, no letters or digits, cut off, stating a
  final answer) leaves that sample's prompt unperturbed by that kind, and the record says why.

A spec names one perturber, several joined by '+' (each sample gets all of them), or `mix` (each sample
gets one perturber picked at random).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from tts.errors import UserError
from tts.types import ChatMessage, GenerationRequest, Problem, Prompt, Sample, SamplingConfig

TASK_AGNOSTIC = ("role", "instruction", "prefix")
TASK_SPECIFIC = ("hint", "rephrase")
PERTURBERS = TASK_AGNOSTIC + TASK_SPECIFIC
MIX = "mix"

ROLES = (
    "You are a careful mathematician who checks every step.",
    "You are a patient teacher explaining the solution to a student.",
    "You are an engineer who estimates first and then computes exactly.",
    "You are a puzzle enthusiast who looks for the key insight before calculating.",
    "You are a meticulous accountant who double-checks every number.",
    "You are a competition coach who solves problems quickly but rigorously.",
    "You are a scientist who states assumptions explicitly before reasoning.",
    "You are a software developer who breaks every task into small, testable pieces.",
    "You are a logician who makes sure each conclusion follows from the previous one.",
    "You are a curious student who reads the question twice before starting.",
    "You are a tutor who writes clear, well-organised solutions.",
    "You are an expert problem solver who considers more than one approach.",
)

INSTRUCTIONS = (
    "Before solving, restate what is being asked in your own words.",
    "List the given facts first, then reason from them.",
    "Work backwards from what is asked if that is easier.",
    "Check your result against the original question before you finish.",
    "Break the problem into smaller parts and solve each one.",
    "Keep each step short and write down every intermediate result.",
    "Identify the unknown quantities before you start.",
    "Consider a second approach and make sure both agree.",
    "Watch out for traps and easily missed details in the wording.",
    "Write down a short plan first, then follow it.",
    "Try your reasoning on a simple case first.",
    "Explain why each step is valid as you go.",
)

PREFIX_WORDS = (4, 8)  # a prefix has this many nonsense words (inclusive range) ...
PREFIX_LETTERS = (2, 8)  # ... each of this many lowercase ASCII letters

HINT_LABEL = "Hint: "
REPHRASE_LABEL = "The same question in other words: "
HINT_REQUEST = ("Here is a problem:\n\n{question}\n\nDo not solve it. Write one short hint (one or two sentences) "
                "with an idea that could help solve it. Reply with the hint only.")
REPHRASE_REQUEST = ("Here is a problem:\n\n{question}\n\nRewrite the problem in your own words, keeping every "
                    "number and condition. Do not solve it. Reply with the rewritten problem only.")
MAX_TOKENS = {"hint": 128, "rephrase": 320}  # caps on the generated texts (also capped by the run's max_tokens)

# A label the model may put before its text ("Hint:", "**Rephrased problem:**"), dropped when parsing.
_LABEL = re.compile(r"^\W*(?:hint|idea|(?:rephrased|rewritten|restated)(?: problem| question)?|rephrasing)"
                    r"\W*?:[\s*_]*", re.IGNORECASE)
# A text that states a final answer would pull every sample towards that one (possibly wrong) answer.
_ANSWER = re.compile(r"\\boxed\{|\bthe (?:final )?answer is\b", re.IGNORECASE)
# A plain-rendered chat (no template) can run on into a new turn: cut there.
_NEW_TURN = re.compile(r"\n\s*(?:User|Assistant|System):", re.IGNORECASE)

Generate = Callable[[list[GenerationRequest]], Awaitable[list[list[Sample]]]]


@dataclass(frozen=True)
class Addition:
    """One perturber's effect on one sample: the exact text added and where (empty text = fell back)."""

    name: str
    text: str
    position: Literal["before", "after"]
    fallback: str | None = None  # why a task-specific perturber added nothing

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "text": self.text, "position": self.position}
        if self.fallback is not None:
            out["fallback"] = self.fallback
        return out


POSITION: dict[str, Literal["before", "after"]] = {
    "role": "before", "prefix": "before", "instruction": "after", "hint": "after", "rephrase": "after"}


def parse_spec(spec: str) -> tuple[str, ...]:
    """The perturber names of a spec ('role', 'role+instruction', 'mix'); a UserError names the valid ones."""
    valid = (f"valid: {', '.join(PERTURBERS)}, or {MIX} (one picked at random per sample); "
             "combine names with '+', e.g. role+instruction")
    names = tuple(part.strip() for part in spec.split("+"))
    for name in names:
        if name not in (*PERTURBERS, MIX):
            shown = repr(name) if name else f"(empty name in {spec!r})"
            raise UserError(f"unknown perturber {shown}; {valid}")
    if MIX in names and len(names) > 1:
        raise UserError(f"perturber spec {spec!r}: '{MIX}' picks one perturber per sample and stands alone")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"perturber spec {spec!r} names {repeated[0]!r} twice")
    return names


def checked_spec(spec: str | None) -> str | None:
    """A pydantic validator for a `perturb` field: the spec as given, or a ValueError naming the valid ones."""
    if spec is not None:
        try:
            parse_spec(spec)
        except UserError as exc:
            raise ValueError(str(exc)) from None
    return spec


# The type of a `perturb` option (strategy configs, mixture components).
PerturbSpec = Annotated[str | None, AfterValidator(checked_spec)]


def draw(name: str, rng: random.Random) -> Addition:
    """A task-agnostic perturbation drawn from `rng` (same RNG state, same text)."""
    if name == "role":
        text = rng.choice(ROLES)
    elif name == "instruction":
        text = rng.choice(INSTRUCTIONS)
    elif name == "prefix":
        text = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(*PREFIX_LETTERS)))
                        for _ in range(rng.randint(*PREFIX_WORDS)))
    else:
        raise ValueError(f"{name!r} is not a task-agnostic perturber")
    return Addition(name, text, POSITION[name])


def apply(prompt: Prompt, additions: list[Addition]) -> Prompt:
    """The prompt with the additions around the last user message's text (a raw-text prompt: around all of it).

    Texts placed before go first in the given order, then the original text unchanged, then texts placed
    after; paragraphs are separated by a blank line. Fallen-back (empty) additions add nothing.
    """
    before = [a.text for a in additions if a.position == "before" and a.text]
    after = [a.text for a in additions if a.position == "after" and a.text]
    if isinstance(prompt, str):
        return "\n\n".join([*before, prompt, *after])
    users = [i for i, m in enumerate(prompt) if m.role == "user"]
    if not users:
        raise UserError("cannot perturb a chat prompt without a user message")
    last = users[-1]
    content = "\n\n".join([*before, prompt[last].content, *after])
    return [*prompt[:last], ChatMessage(role="user", content=content), *prompt[last + 1:]]


def parse_generated(name: str, sample: Sample) -> tuple[str, str | None]:
    """(text to add, None) from a model-written hint or rephrasing, or ("", why it is unusable)."""
    parts = _NEW_TURN.split(sample.text, maxsplit=1)
    cut = sample.finish_reason == "length" and len(parts) == 1  # ended at the cap, not at a new turn
    text = _LABEL.sub("", parts[0].strip(), count=1).strip()
    if name == "hint" and "\n\n" in text:  # a hint is one paragraph; what follows tends to be a solution
        text, cut = text.split("\n\n", 1)[0].strip(), False
    if cut:
        return "", "cut off at the token cap"
    if not text:
        return "", "empty output"
    if not any(ch.isalnum() for ch in text):
        return "", "no letters or digits"
    if _ANSWER.search(text):
        return "", "states a final answer"
    return (HINT_LABEL if name == "hint" else REPHRASE_LABEL) + text, None


async def written(problem: Problem, counts: dict[str, int], generate: Generate,
                  sampling: SamplingConfig) -> dict[str, list[Addition]]:
    """counts[kind] model-written additions per task-specific kind, all kinds in one engine call."""
    kinds = [k for k in TASK_SPECIFIC if counts.get(k, 0) > 0]
    if not kinds:
        return {}
    templates = {"hint": HINT_REQUEST, "rephrase": REPHRASE_REQUEST}
    requests = [GenerationRequest(
        prompt=[ChatMessage(role="user", content=templates[k].format(question=problem.question))],
        sampling=sampling.model_copy(update={"n": counts[k], "max_tokens": min(sampling.max_tokens, MAX_TOKENS[k]),
                                             "stop": (), "min_tokens": 0, "logprobs": False, "top_logprobs": 0}))
        for k in kinds]
    out: dict[str, list[Addition]] = {}
    for kind, samples in zip(kinds, await generate(requests), strict=True):
        parsed = [parse_generated(kind, s) for s in samples]
        parsed += [("", "the engine returned fewer texts than asked")] * (counts[kind] - len(parsed))
        out[kind] = [Addition(kind, text, POSITION[kind], why) for text, why in parsed[:counts[kind]]]
    return out


@dataclass(frozen=True)
class Perturbed:
    """One sample's prompt and the record stored in its candidate's info["perturbation"]."""

    prompt: Prompt
    record: dict[str, Any]


async def perturbed_prompts(problem: Problem, n: int, spec: str, *, rng: random.Random, generate: Generate,
                            sampling: SamplingConfig) -> list[Perturbed]:
    """n perturbed copies of the problem's prompt, drawn from `rng` (the problem's seeded RNG).

    The RNG is read in a fixed order (for `mix` every sample's pick first, then each sample's task-agnostic
    texts in sample order), so one seed always gives the same prompts. Model-written texts go to the samples
    that need them in sample order.
    """
    names = parse_spec(spec)
    plan = [(rng.choice(PERTURBERS),) for _ in range(n)] if names == (MIX,) else [names] * n
    drawn = [{name: draw(name, rng) for name in p if name in TASK_AGNOSTIC} for p in plan]
    counts = {kind: sum(kind in p for p in plan) for kind in TASK_SPECIFIC}
    pool = await written(problem, counts, generate, sampling)
    out = []
    for p, agnostic in zip(plan, drawn):
        additions = [agnostic[name] if name in agnostic else pool[name].pop(0) for name in p]
        record = {"spec": spec, "name": "+".join(p), "parts": [a.as_dict() for a in additions]}
        out.append(Perturbed(apply(problem.prompt, additions), record))
    return out


def requests_for(perturbed: list[Perturbed], sampling: SamplingConfig) -> list[GenerationRequest]:
    """One request with n = 1 per perturbed prompt. A fixed per-request seed becomes seed + i, so prompts
    that came out identical (e.g. after fallbacks) still give different samples, as n > 1 would."""
    def seeded(i: int) -> SamplingConfig:
        return sampling.model_copy(update={"n": 1, **({} if sampling.seed is None else {"seed": sampling.seed + i})})
    return [GenerationRequest(prompt=p.prompt, sampling=seeded(i)) for i, p in enumerate(perturbed)]
