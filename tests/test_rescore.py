"""`tts rescore`: a finished run's candidates scored again with other scorers, into a new run folder."""

import json

import pytest

from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.registry import build_scorer
from tts.rescore import read_source, rescore
from tts.runner import evaluate
from tts.runs import RunFolder
from tts.strategies.repeated_sampling import RepeatedSampling
from tts.testing import ToyTask, toy_script
from tts.types import SamplingConfig

CONFIG = {"task": "toy", "strategy": "repeated-sampling", "strategy_options": {"n": 4}, "model": "scripted",
          "backend": "scripted", "sampling": {}, "seed": 0, "task_options": {}}


async def make_pool(path, top_logprobs=5):
    task = ToyTask(3)
    await evaluate(task, task.load(), RepeatedSampling(n=4), ScriptedBackend(toy_script), RunFolder(path),
                   dict(CONFIG), SamplingConfig(top_logprobs=top_logprobs), progress=False, scorers=[])
    return task


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def run_rescore(src, out, task, scorers, backend=None):
    config, rows, samples = read_source(src, out, scorers)
    problems = {it.problem.id: it.problem for it in task.load()}
    return await rescore(RunFolder(out), config, rows, samples, problems, task, scorers,
                         backend or ScriptedBackend(toy_script), concurrency=4, progress=False)


async def test_rescore_adds_verdicts_and_keeps_everything_else(tmp_path):
    src, out = tmp_path / "pool", tmp_path / "scored"
    task = await make_pool(src)
    scorers = [build_scorer("group-confidence", top_k=5), build_scorer("mean-logprob")]
    assert await run_rescore(src, out, task, scorers) == 3
    before, after = lines(src / "samples.jsonl"), lines(out / "samples.jsonl")
    assert len(after) == len(before) == 12
    for b, a in zip(before, after):
        assert b["selection"] == []
        assert [v["verifier"] for v in a["selection"]] == ["group-confidence", "mean-logprob"]
        for key in ("problem_id", "index", "text", "answer", "correct", "chosen", "trace", "mean_logprob"):
            assert a[key] == b[key], key
    results_before, results_after = lines(src / "results.jsonl"), lines(out / "results.jsonl")
    for b, a in zip(results_before, results_after):
        assert (a["answer"], a["chosen"], a["correct"]) == (b["answer"], b["chosen"], b["correct"])
        assert a["usage"]["completion_tokens"] == b["usage"]["completion_tokens"]  # generation counts unchanged
    config = json.loads((out / "config.json").read_text())
    assert [s["name"] for s in config["scorers"]] == ["group-confidence", "mean-logprob"]
    assert config["rescored_from"] == str(src.resolve())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problems"] == 3


async def test_rescore_resumes_and_refuses_a_taken_label(tmp_path):
    src, out = tmp_path / "pool", tmp_path / "scored"
    task = await make_pool(src)
    scorers = [build_scorer("mean-logprob")]
    await run_rescore(src, out, task, scorers)
    assert await run_rescore(src, out, task, scorers) == 0  # the same command again: nothing left to score
    with pytest.raises(UserError, match="already holds verdicts named mean-logprob"):
        read_source(out, tmp_path / "again", [build_scorer("mean-logprob")])
    # another label records the same scorer twice
    again = tmp_path / "again"
    await run_rescore(out, again, task, [build_scorer("mean-logprob", label="mean-logprob-2")])
    assert [v["verifier"] for v in lines(again / "samples.jsonl")[0]["selection"]] == ["mean-logprob",
                                                                                       "mean-logprob-2"]


async def test_scoring_cost_is_added_to_the_usage(tmp_path):
    """A judge asks the policy model: its tokens land in the scorer fields, generation's stay as they were."""
    src, out = tmp_path / "pool", tmp_path / "scored"
    task = await make_pool(src)
    await run_rescore(src, out, task, [build_scorer("judge")])
    for b, a in zip(lines(src / "results.jsonl"), lines(out / "results.jsonl")):
        assert a["usage"]["scorer_calls"] >= 1 and a["usage"]["scorer_prompt_tokens"] > 0
        assert a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"]


def test_bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is not a run folder"):
        read_source(tmp_path / "empty", tmp_path / "out", [])
    with pytest.raises(UserError, match="--out must be a new folder"):
        read_source(tmp_path / "empty", tmp_path / "empty", [])


async def test_scorers_that_call_no_model_rescore_without_an_engine(tmp_path):
    """Confidence scorers read the stored tokens: `tts rescore` stands a RecordedPolicy in for the model (no
    engine start) that keeps the source's served identity and refuses to generate."""
    from tts.errors import BackendError
    from tts.rescore import RecordedPolicy
    from tts.runs import SERVED_KEY

    src, out = tmp_path / "pool", tmp_path / "scored"
    task = await make_pool(src)
    scorers = [build_scorer("group-confidence", top_k=5), build_scorer("mean-logprob")]
    assert not any(s.calls_model for s in scorers) and build_scorer("judge").calls_model
    source_config = json.loads((src / "config.json").read_text())
    assert await run_rescore(src, out, task, scorers, backend=RecordedPolicy(source_config)) == 3
    assert json.loads((out / "config.json").read_text())[SERVED_KEY] == source_config[SERVED_KEY]
    with pytest.raises(ExceptionGroup) as refused:  # one per problem, from the rescore's task group
        await run_rescore(out, tmp_path / "judged", task, [build_scorer("judge")],
                          backend=RecordedPolicy(source_config))
    assert refused.group_contains(BackendError, match="without an engine")
