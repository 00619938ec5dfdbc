"""A real pool (3 GSM8K problems x 4 samples, default model) through the scaling study and its report."""

import json

import pytest

from tts.runner import evaluate
from tts.runs import RunFolder
from tts.strategies.repeated_sampling import RepeatedSampling
from tts.study import ScalingFile, report, study_run
from tts.tasks.gsm8k import GSM8K
from tts.types import SamplingConfig

pytestmark = pytest.mark.integration


async def test_scale_a_small_real_pool(engine, tmp_path):
    task = GSM8K()
    items = task.load(3)
    strategy = RepeatedSampling(n=4)
    sampling = SamplingConfig(temperature=0.7, max_tokens=64)
    folder = tmp_path / "run"
    config = {"task": "gsm8k", "task_options": {"seed": 0}, "strategy": "repeated-sampling",
              "strategy_options": strategy.config.model_dump(), "model": engine.model, "backend": "vllm",
              "sampling": sampling.model_dump(mode="json"), "seed": 0}
    await evaluate(task, items, strategy, engine, RunFolder(folder), config, sampling, progress=False)

    study = study_run(folder, bootstrap=200)
    assert study.problems == 3 and study.n_min == study.n_max == 4 and study.ks == [1, 2, 4]
    assert 0 < study.mean_tokens_per_sample <= 64
    assert {c.name for c in study.selectors} >= {"majority", "rpc", "perplexity"}  # real log-probs
    values = [p.value for c in [study.coverage, *study.selectors] for p in c.points]
    assert all(0.0 <= v <= 1.0 for v in values)
    cover = [p.value for p in study.coverage.points]
    assert cover == sorted(cover)  # coverage never falls with k
    for curve in study.selectors:  # no selector beats coverage
        assert all(p.value <= c + 1e-12 for p, c in zip(curve.points, cover))
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    share_correct = sum(bool(s["correct"]) for s in samples) / len(samples)
    assert study.coverage.at(1).value == pytest.approx(share_correct)

    written = report.write_report(ScalingFile(studies=[study]), folder)
    assert {p.name for p in written} == {"scaling.json", "scaling.csv", "scaling_k.png", "scaling_tokens.png",
                                         "report.md"}
    assert report.load_scaling(folder).studies[0] == study
    assert (folder / "scaling_k.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "scaling_tokens.png").stat().st_size > 10_000
    md = (folder / "report.md").read_text()
    assert "Coverage (unbiased pass@k) is" in md and "RPC accuracy:" in md and "![" in md
    metrics = [row.split(",")[2] for row in (folder / "scaling.csv").read_text().splitlines()[1:]]
    curves = ["coverage", *(c.name for c in study.selectors)]  # the judge (gsm8k's default scorer) adds its own
    assert all(metrics.count(name) == 3 for name in curves), metrics
    assert set(metrics) - set(curves) <= {"flaws-predicted"}  # the judge's pass flags: the fLaws prediction
