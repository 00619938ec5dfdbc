"""Tree search on HumanEval with the real model: the tree is kept, the oracle grades, selection sees only
the docstring examples, and the hidden tests never reach a prompt."""

import pytest

from tts.api import build_strategy
from tts.backends.render import prompt_text
from tts.runner import evaluate
from tts.runs import RunFolder
from tts.tasks.humaneval import HumanEval
from tts.types import SamplingConfig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["mcts", "ab-mcts-a", "ab-mcts-m"])
async def test_tree_search_on_two_humaneval_problems(engine, tmp_path, monkeypatch, name):
    monkeypatch.setenv("TTS_DATA_SOURCE", "local")
    task = HumanEval()
    items = task.load(2)
    requests = []
    original = engine.generate

    async def recording(batch):
        requests.extend(batch)
        return await original(batch)

    monkeypatch.setattr(engine, "generate", recording)
    strategy = build_strategy(name, n=4, batch_size=2)
    run = RunFolder(tmp_path / name)
    config = {"task": "humaneval", "strategy": name, "strategy_options": strategy.config.model_dump()}
    metrics = await evaluate(task, items, strategy, engine, run, config,
                             SamplingConfig(temperature=0.8, max_tokens=128), progress=False)

    results, samples = run.results(), list(run.samples())
    assert metrics["problems"] == 2 and len(results) == 2 and len(samples) == 8
    for row in results:
        info = row["info"]
        tree = info["tree"]
        assert info["algorithm"] == name and info["generations"] == 4 and len(tree) == 5
        assert sum(info["batch_sizes"]) == 4 and max(info["batch_sizes"]) <= 2
        assert tree[0]["parent"] is None
        for node in tree[1:]:
            assert node["depth"] == tree[node["parent"]]["depth"] + 1 and 0.0 <= node["score"] <= 1.0
        rows = sorted((s for s in samples if s["problem_id"] == row["problem_id"]), key=lambda s: s["index"])
        scores = [node["score"] for node in tree[1:]]
        assert row["chosen"] == scores.index(max(scores))  # the best node by the docstring examples
        assert [s["info"]["node"] for s in rows] == [1, 2, 3, 4]
        assert row["correct"] == rows[row["chosen"]]["correct"]  # graded by the hidden tests, afterwards
    for s in samples:
        assert [v["verifier"] for v in s["selection"]] == ["docstring-examples"]
        assert isinstance(s["correct"], bool)
        assert s["selection"][0]["score"] == s["info"]["score"]
    assert requests and all(r.sampling.max_tokens == 128 for r in requests)
    prompts = [prompt_text(r.prompt, r.continuation) for r in requests]
    for item in items:
        hidden = [ln.strip() for ln in item.reference.tests.splitlines()
                  if len(ln.strip()) >= 12 and ln.strip() not in item.problem.question]
        for p in prompts:
            assert item.reference.tests not in p and "def check(" not in p
            assert not [line for line in hidden if line in p]
        for s in samples:
            assert not [line for line in hidden if line in s["selection"][0]["feedback"]]
