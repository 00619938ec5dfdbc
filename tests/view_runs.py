"""Run folders of each strategy kind, made by the real runner on scripted backends, for the viewer's tests
(tests/test_view.py, tests/test_view_browser.py). Problem 0's candidates and verdicts carry hostile text."""

from __future__ import annotations

import re
from pathlib import Path

from tests.step_worlds import SEP, FnScorer, by_last_option, stepper
from tts.backends.scripted import ScriptedBackend
from tts.runner import evaluate
from tts.runs import RunFolder
from tts.scorer import as_scorer
from tts.strategies.ab_mcts_a import ABMCTSA
from tts.strategies.beam_search import BeamSearch
from tts.strategies.repeated_sampling import RepeatedSampling
from tts.strategies.self_consistency import SelfConsistency
from tts.strategy import Strategy
from tts.testing import ToyTask, toy_script
from tts.types import Candidate, Problem, SamplingConfig, Verdict
from tts.verifier import Verifier

# Model text that would run code if the page ever put it into the document as markup.
HOSTILE = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=1"><b>&amp;</b>'


def config(strategy: str, **options: object) -> dict[str, object]:
    return {"task": "toy", "strategy": strategy, "strategy_options": options, "model": "scripted",
            "backend": "scripted", "sampling": {}, "seed": 0, "task_options": {}}


class TensVerifier(Verifier):
    """Score = answer / 10, capped at 1; the feedback of a low score quotes hostile text."""

    name = "tens"
    description = "answer / 10"

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        value = int(candidate.answer) if candidate.answer else 0
        score = min(max(value, 0), 10) / 10
        return Verdict(verifier=self.name, score=score, passed=score == 1.0,
                       feedback="ok" if score == 1.0 else f"{value} is too small {HOSTILE}")


def hostile_script(text: str, index: int) -> tuple[str, float]:
    """toy_script, except that the second sample of problem 0 carries hostile text before its answer, and
    problem 3 is answered wrong (so the list has an incorrect problem)."""
    body, logprob = toy_script(text, index)
    if re.search(r"problem 3\b", text):
        body = f"Ten times three is thirty-one.\nThe answer is {31 + index % 2}."
    if index == 1 and re.search(r"problem 0\b", text):
        body = f"Careful: {HOSTILE}\n{body}"
    return body, logprob


def improving_model(text: str, index: int) -> str:
    """Fresh answers are 2; a refinement adds 2 to the answer it was shown (tree search deepens)."""
    shown = re.findall(r"Assistant: answer (\d+)", text)
    if shown and "Re-check" in text:
        return f"answer {int(shown[-1]) + 2}"
    return f"answer 2 {HOSTILE}" if "problem 0" in text and index == 0 else "answer 2"


async def sampling_run(path: Path, problems: int = 4) -> Path:
    """self-consistency, n=4, with a scorer (TensVerifier) whose verdicts are recorded."""
    task = ToyTask(problems)
    await evaluate(task, task.load(), SelfConsistency(n=4), ScriptedBackend(hostile_script), RunFolder(path),
                   config("self-consistency", n=4), SamplingConfig(), progress=False, scorers=[as_scorer(TensVerifier())])
    return path


async def tree_run(path: Path, problems: int = 2) -> Path:
    """ab-mcts-a, 8 nodes a problem, scored by TensVerifier (refinements improve the answer)."""
    task = ToyTask(problems, selection=[TensVerifier()])
    await evaluate(task, task.load(), ABMCTSA(n=8, batch_size=2), ScriptedBackend(improving_model),
                   RunFolder(path), config("ab-mcts-a", n=8, batch_size=2), SamplingConfig(), progress=False)
    return path


def _hostile_stepper():
    """stepper(3), except that the fourth first step of problem 0 (the best, so it survives) carries hostile text."""
    base = stepper(3)

    def script(text: str, index: int) -> str:
        out = base(text, index)
        if index == 3 and out.startswith("step 0") and re.search(r"problem 0\b", text):
            return out.replace(SEP, f" {HOSTILE}{SEP}", 1)
        return out

    return script


async def step_run(path: Path, problems: int = 2, strategy: Strategy | None = None) -> Path:
    """A step-level search (default beam-search, n=4 beams of width 2), three steps, scored by the last step's
    option number."""
    task = ToyTask(problems)
    strategy = strategy or BeamSearch(n=4, beam_width=2)
    await evaluate(task, task.load(), strategy, ScriptedBackend(_hostile_stepper()), RunFolder(path),
                   config(strategy.name, **strategy.config.model_dump()), SamplingConfig(max_tokens=64),
                   progress=False, scorers=[FnScorer(by_last_option())])
    return path


async def pool_run(path: Path, problems: int = 3) -> Path:
    """repeated-sampling, n=4: the pool a `tts scale` study reads."""
    task = ToyTask(problems)
    await evaluate(task, task.load(), RepeatedSampling(n=4), ScriptedBackend(toy_script), RunFolder(path),
                   config("repeated-sampling", n=4), SamplingConfig(), progress=False, scorers=[])
    return path


def write_study(run: Path, out: Path) -> Path:
    """`tts scale RUN --out OUT` with small settings: scaling.json, scaling.csv, the plots and report.md."""
    from tts.study import ScalingFile, study_run
    from tts.study.report import write_report

    study = study_run(run, draws=20, bootstrap=20, adaptive=None, equivalent=ToyTask().equivalent)
    write_report(ScalingFile(studies=[study]), out)
    return out
