"""Scripted worlds for the step-level searches (beam search, DVTS, particle filtering and Gibbs): a backend
whose steps are known in advance and a scorer whose step scores are a function of the text."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from tests.fakes import ToyTask
from tts.backends.scripted import ScriptedBackend
from tts.scorer import Scorer, ScoringContext
from tts.strategy import Strategy, StrategyContext
from tts.types import Candidate, Problem, SamplingConfig, Verdict

SEP = "\n\n"


def answer_of(text: str) -> str:
    """The answer part of a scripted backend's prompt text (what comes after the open assistant turn)."""
    return text.split("Assistant:", 1)[1]


def depth_of(answer: str) -> int:
    return answer.count(SEP)


def options_of(answer: str) -> list[int]:
    """The option numbers of the steps written so far ("step D option I" steps)."""
    return [int(x) for x in re.findall(r"option (\d+)", answer)]


def stepper(depth: int = 3, finish_at: Callable[[str, int], bool] | None = None,
            final: Callable[[str], str] | None = None) -> Callable[[str, int], str]:
    """A script: at answer depth d < depth - 1 the i-th sample of a prefix writes "step d option i" and a
    blank line; at depth - 1 (or when `finish_at(answer, i)`) it writes the final answer, which ends the
    track (the answer pattern). The final answer is `final(answer)`, default the sum of the options."""

    def script(text: str, index: int) -> str:
        answer = answer_of(text)
        d = depth_of(answer)
        if d >= depth - 1 or (finish_at is not None and finish_at(answer, index)):
            value = final(answer) if final else str(sum(options_of(answer)) + index)
            return f"The answer is {value}."
        return f"step {d} option {index}{SEP}ignored tail"

    return script


class FnScorer(Scorer):
    """An outcome scorer scripted as fn(partial answer text) -> score; it records every batch it scores."""

    name = "fn-scorer"
    description = "scripted scores for tests"

    def __init__(self, fn: Callable[[str], float], **options: object):
        super().__init__(**options)
        self.fn = fn
        self.batches: list[list[str]] = []

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        self.batches.append([c.text for c in candidates])
        return [Verdict(verifier=self.name, score=self.fn(c.text)) for c in candidates]


def by_last_option(scale: float = 10.0) -> Callable[[str], float]:
    """Scores rise with the last step's option number (a higher option is a better step)."""

    def fn(text: str) -> float:
        opts = options_of(text)
        return min(0.05 + (opts[-1] if opts else 0) / scale, 0.95)

    return fn


async def search(strategy: Strategy, script: Callable[[str, int], str], scorer: Scorer | list[Scorer],
                 seed: int = 0, problem: int = 0, max_tokens: int = 64,
                 backend: ScriptedBackend | None = None):
    """Run a step-level strategy on one ToyTask problem; returns (result, backend)."""
    task = ToyTask()
    backend = backend or ScriptedBackend(script)
    item = task.load(problem + 1)[problem]
    scorers = scorer if isinstance(scorer, list) else [scorer]
    ctx = StrategyContext(backend=backend, answers=task, sampling=SamplingConfig(max_tokens=max_tokens),
                          scorers=scorers, rng=random.Random(seed))
    return await strategy.run(item.problem, ctx), backend
