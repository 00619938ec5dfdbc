"""Runner and run folder on a scripted backend: complete outputs, resume, crash repair, refusal of a changed config."""

import json

import pytest

from tests.fakes import ToyTask
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.runner import evaluate
from tts.runs import RunFolder
from tts.strategies.self_consistency import SelfConsistency
from tts.types import SamplingConfig


def script(prompt: str, index: int) -> str:
    """Problem i: samples alternate between the right answer (i*10) and a wrong one; 3 of 4 right."""
    i = int(prompt.split("problem ")[1].split()[0])
    return f"the answer is {i * 10 + (1 if index % 4 == 3 else 0)}"


CONFIG = {"task": "toy", "strategy": "self-consistency", "strategy_options": {"n": 4}, "model": "scripted",
          "backend": "scripted", "sampling": {}, "seed": 0, "task_options": {}}


async def run_once(tmp_path, backend, size=5, config=CONFIG):
    task = ToyTask(size)
    return await evaluate(task, task.load(), SelfConsistency(n=4), backend, RunFolder(tmp_path), dict(config),
                          SamplingConfig(), progress=False)


async def test_complete_run_folder(tmp_path):
    backend = ScriptedBackend(script)
    metrics = await run_once(tmp_path, backend)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "samples.jsonl", "results.jsonl", "metrics.json"}
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(samples) == 20 and len(results) == 5
    row = samples[0]
    for key in ("problem_id", "text", "answer", "completion_tokens", "mean_logprob", "selection", "correct", "chosen"):
        assert key in row
    assert sum(s["correct"] for s in samples) == 15
    assert all(r["correct"] and r["n_correct_samples"] == 3 for r in results)
    assert metrics["accuracy"] == 1.0
    assert metrics["coverage"]["pass@1"] == pytest.approx(0.75)
    assert metrics["coverage"]["pass@4"] == 1.0
    assert metrics["usage"]["completion_tokens"] == 20 * 4
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


async def test_resume_generates_nothing_new(tmp_path):
    await run_once(tmp_path, ScriptedBackend(script))
    backend = ScriptedBackend(script)
    metrics = await run_once(tmp_path, backend)
    assert backend.calls == []
    assert metrics["problems"] == 5 and metrics["generated_this_session"] == 0
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 20


async def test_resume_extends_a_run_and_repairs_a_crash(tmp_path):
    await run_once(tmp_path, ScriptedBackend(script), size=3)
    # simulate a crash: samples of an unfinished problem and a torn results line
    with (tmp_path / "samples.jsonl").open("a") as fh:
        fh.write(json.dumps({"problem_id": "toy/3", "index": 0}) + "\n")
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write('{"problem_id": "toy/4", "tor')
    backend = ScriptedBackend(script)
    metrics = await run_once(tmp_path, backend, size=5)
    assert len(backend.calls) == 2  # only toy/3 and toy/4
    ids = [json.loads(line)["problem_id"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == [f"toy/{i}" for i in range(5)]
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 20
    assert metrics["problems"] == 5


async def test_changed_config_is_refused(tmp_path):
    await run_once(tmp_path, ScriptedBackend(script))
    with pytest.raises(UserError, match="different run"):
        await run_once(tmp_path, ScriptedBackend(script), config={**CONFIG, "seed": 1})


async def test_problems_run_concurrently(tmp_path):
    backend = ScriptedBackend(script, delay=0.2)
    import time

    t = time.perf_counter()
    await run_once(tmp_path, backend, size=10)
    assert time.perf_counter() - t < 1.5  # 10 problems x 0.2 s overlap instead of 2 s in a row


async def test_engine_batch_stats_cover_this_session_only(tmp_path):
    from tts.backends.vllm import EngineStats

    class CountingBackend(ScriptedBackend):
        """Records one engine step per generate call, batch = sequences requested (like the vLLM backend's stats)."""

        def __init__(self, script):
            super().__init__(script)
            self.stats = EngineStats()

        async def generate(self, requests):
            self.stats.record(0.01, sum(r.sampling.n for r in requests))
            return await super().generate(requests)

    backend = CountingBackend(script)
    backend.stats.record(5.0, 99)  # earlier work on the same engine: not this session's
    metrics = await run_once(tmp_path, backend, size=3)
    assert metrics["engine_this_session"] == {"steps": 3, "step_seconds": 0.03, "mean_batch": 4.0, "max_batch": 99}
    assert backend.stats.steps == 4  # the shared counters were not reset under other users
