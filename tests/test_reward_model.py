"""The `reward-model` scorer: per-family formats (no engine), clear errors, and the plumbing end to end through
vLLM on tiny randomly initialised models of the real architectures (tests/tiny_reward_models.py).

The scores of random weights mean nothing; what is checked is that they come from the right positions
(against a direct transformers computation), one per step, the same batched as one at a time, the
same twice, and counted as scorer cost. No real reward model is run here (docs/scorers/reward-models.md).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil

import pytest

from tests import tiny_reward_models as tiny
from tts.errors import UserError
from tts.scorer import ScoringContext
from tts.types import Candidate, Problem, Usage

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[cpu]')")

SOLUTION = "Add 2 and 3.\n\nThat makes 5.\n\nSo the answer is \\boxed{5}."
QUESTION = "What is 2 + 3?"


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The tiny models, built once per session (about a second)."""
    root = tmp_path_factory.mktemp("reward-models")
    built = {
        "prm": tiny.build_qwen2_prm(root / "prm"),
        "orm": tiny.build_qwen2_orm(root / "orm"),
        "lm": tiny.build_llama_lm(root / "lm"),
    }
    # a Qwen2ForProcessRewardModel config whose tokenizer lacks <extra_0>
    notag = root / "prm-notag"
    shutil.copytree(built["prm"], notag)
    tiny.build_tokenizer(notag, with_step_tag=False)
    built["notag"] = notag
    (root / "empty").mkdir()
    built["empty"] = root / "empty"
    return built


def problem(question: str = QUESTION, pid: str = "p0") -> Problem:
    return Problem(id=pid, task="t", question=question, prompt=question)


def scorer(model, **options):
    from tts.scorers.reward_model import RewardModelScorer

    return RewardModelScorer(model=str(model), **options)


# ---- formats, without an engine ------------------------------------------------------------

CHATML_QWEN = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
               "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")

FORMAT_ROWS = [
    # Qwen2.5-Math-PRM: its system prompt, the question as user, every step followed by <extra_0> in one turn
    ("qwen2.5-math-prm", "prm", "a\n\nb", [CHATML_QWEN + "a<extra_0>b<extra_0><|im_end|>\n"]),
    # a candidate's own <extra_0> is removed: only the scorer writes scored positions
    ("qwen2.5-math-prm", "prm", "a<extra_0>\n\nb", [CHATML_QWEN + "a<extra_0>b<extra_0><|im_end|>\n"]),
    # Skywork: bos + question + newline, each step followed by the newline step token (positions flagged)
    ("skywork-prm", "prm", "a\n\nb", ["<|endoftext|>Q?\na\nb\n"]),
    # RLHFlow: one prompt per step prefix; user turn k = step k (first after the question and a space),
    # earlier assistant turns "+", the assistant turn opened for the scored "+"/"-"
    ("rlhflow-prm", "lm", "a\n\nb", [
        "<|im_start|>user\nQ? a<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nQ? a<|im_end|>\n<|im_start|>assistant\n+<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"
        "<|im_start|>assistant\n"]),
    # Math-Shepherd: plain text, question + space, steps joined by newlines, each ending " ки"; one prompt
    # per prefix ending at a tag (the tokenizer adds no BOS here)
    ("math-shepherd", "lm", "a\n\nb", ["Q? a ки", "Q? a ки\nb ки"]),
    # ORM: chat template, the whole solution as the assistant turn
    ("orm", "orm", "a\n\nb", ["<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\na\n\nb<|im_end|>\n"]),
]


@pytest.mark.parametrize("family,model,text,expected", FORMAT_ROWS)
def test_family_formats(models, family, model, text, expected):
    from transformers import AutoTokenizer

    from tts.scorers.prm_formats import FAMILIES, encode_candidate

    tokenizer = AutoTokenizer.from_pretrained(str(models[model]))
    steps, enc = encode_candidate(FAMILIES[family], tokenizer, "Q?", text, "\n\n")
    assert [tokenizer.decode(ids) for ids in enc.prompts] == expected
    if family == "skywork-prm":  # the flagged positions are the appended step tokens, one per step
        ids = enc.prompts[0]
        assert len(enc.positions) == len(steps) == 2
        assert all(tokenizer.decode([ids[i]]) == "\n" for i in enc.positions)
        assert enc.positions[-1] == len(ids) - 1


def test_step_tag_count_equals_steps(models):
    s = scorer(models["prm"])
    for text in ["one", "one\n\ntwo", "one\n\ntwo\n\n\n\nthree\n\n"]:
        steps, enc = s.encode(problem(), Candidate(text=text))
        assert enc.prompts[0].count(s.tag_id) == len(steps) == len(text.split("\n\n")) - text.split("\n\n").count("")


def test_auto_detection(models):
    assert scorer(models["prm"]).family.name == "qwen2.5-math-prm"
    orm = scorer(models["orm"])
    assert orm.family.name == "orm" and orm.level == "outcome"
    assert scorer(models["prm"]).level == "process"


@pytest.mark.parametrize("model,family,message", [
    ("empty", "auto", "has no config.json"),  # a folder that is no model at all
    ("lm", "qwen2.5-math-prm", "not a qwen2.5-math-prm reward model"),  # a plain causal LM given to a pooling family
    ("lm", "orm", "not a orm reward model"),  # the same, for the outcome family
    ("lm", "auto", "say which PRM it is"),  # a causal LM cannot be told apart: the family must be named
    ("prm", "rlhflow-prm", "not a rlhflow-prm reward model"),  # a pooling PRM given to an LM family
    ("notag", "auto", "step tag '<extra_0>' is not one token"),  # the tokenizer lacks the family's tag
])
def test_errors(models, model, family, message):
    with pytest.raises(UserError, match=message) as info:
        scorer(models[model], family=family)
    assert "\n" not in str(info.value) and str(models[model]) in str(info.value)


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        scorer(tmp_path / "nowhere")


def test_options_are_validated(models):
    from tts.registry import build_scorer

    with pytest.raises(UserError):
        build_scorer("reward-model", model=str(models["prm"]), aggregation="median")
    s = build_scorer("reward-model", model=str(models["prm"]), aggregation="min")
    assert s.identity()["options"]["aggregation"] == "min" and "kv_cache_gb" not in s.identity()["options"]


# ---- end to end through vLLM's pooling runner (a tiny engine starts in seconds) -----------------

def _reference_step_probs(model_dir, ids: list[int]) -> list[float]:
    """P(label 1) at each <extra_0>, computed directly: transformers' Qwen2Model + the score MLP by hand."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config.from_pretrained(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    body = Qwen2Model(config)
    body.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    body.eval()
    with torch.no_grad():
        hidden = body(torch.tensor([ids])).last_hidden_state[0]
        h = torch.relu(hidden @ weights["score.0.weight"].T + weights["score.0.bias"])
        logits = h @ weights["score.2.weight"].T + weights["score.2.bias"]
        probs = torch.softmax(logits, dim=-1)[:, 1]
    tag = json.loads((model_dir / "tokenizer.json").read_text())
    tag_id = next(t["id"] for t in tag["added_tokens"] if t["content"] == "<extra_0>")
    return [float(probs[i]) for i, t in enumerate(ids) if t == tag_id]


@pytest.fixture(scope="module")
def prm(models):
    s = scorer(models["prm"], max_model_len=1024)
    yield s
    from tts.backends.vllm_pooling import close_scoring_engines

    close_scoring_engines()


def _ctx(usage: Usage) -> ScoringContext:
    return ScoringContext(policy=None, usage=usage)  # type: ignore[arg-type]  # no policy needed


async def test_prm_end_to_end(prm, models):
    cands = [Candidate(text=SOLUTION), Candidate(text="Guess.\n\n\\boxed{6}"), Candidate(text="")]
    usage = Usage()
    verdicts = await prm.score(problem(), cands, _ctx(usage))
    # shapes: one score per step, each in [0, 1]; an empty candidate has no step and scores 0
    assert [len(v.step_scores) for v in verdicts] == [3, 2, 0]
    assert all(0.0 <= x <= 1.0 for v in verdicts for x in v.step_scores)
    assert verdicts[0].score == verdicts[0].step_scores[-1]  # aggregation "last"
    assert verdicts[0].feedback.startswith("PRM step scores: [")
    assert all(v.passed == (v.score >= 0.5) for v in verdicts)
    # alignment: the scores are P(label 1) at the <extra_0> positions, as a direct computation gives them
    for cand, verdict in zip(cands[:2], verdicts[:2]):
        _, enc = prm.encode(problem(), cand)
        expected = _reference_step_probs(models["prm"], enc.prompts[0])
        assert verdict.step_scores == pytest.approx(expected, abs=2e-4)
    # cost: one engine submission; every prompt token counted; FLOPs with the reward model's size
    engine = await prm.engine()
    tokens = sum(len(prm.encode(problem(), c)[1].prompts[0]) for c in cands[:2])
    assert usage.scorer_calls == 1 and usage.scorer_prompt_tokens == tokens and usage.scorer_completion_tokens == 0
    assert engine.parameter_count and usage.scorer_flops == pytest.approx(
        2.0 * engine.parameter_count * (tokens - usage.scorer_cached_tokens))
    assert usage.prompt_tokens == 0 and usage.generator_flops == 0.0  # nothing counted as generation


async def test_prm_batching_and_determinism(prm):
    texts = [SOLUTION, "Step A.\n\nStep B.", "x\n\ny\n\nz\n\nw", "only one step"]
    problems = [problem(f"Question {i}: what is {i} + {i}?", f"p{i}") for i in range(3)]
    # one at a time
    single = {}
    for p in problems:
        for t in texts:
            (v,) = await prm.score(p, [Candidate(text=t)], _ctx(Usage()))
            single[p.id, t] = v.step_scores
    engine = await prm.engine()
    before = engine.batches
    # all candidates of three problems at once, concurrently: one submission per problem, same scores
    usages = [Usage() for _ in problems]
    results = await asyncio.gather(*(prm.score(p, [Candidate(text=t) for t in texts], _ctx(u))
                                     for p, u in zip(problems, usages)))
    assert engine.batches - before == len(problems)
    assert all(u.scorer_calls == 1 for u in usages)
    for p, verdicts in zip(problems, results):
        for t, v in zip(texts, verdicts):
            assert v.step_scores == pytest.approx(single[p.id, t], abs=1e-5)
    # the same input scores the same again
    again = await prm.score(problems[0], [Candidate(text=t) for t in texts], _ctx(Usage()))
    assert [v.step_scores for v in again] == [v.step_scores for v in results[0]]


async def test_prm_aggregations(prm):
    cand = Candidate(text=SOLUTION)
    (base,) = await prm.score(problem(), [cand], _ctx(Usage()))
    steps = base.step_scores
    expected = {"last": steps[-1], "min": min(steps), "prod": math.prod(steps), "mean": sum(steps) / len(steps)}
    for how, value in expected.items():
        other = scorer(prm.model, aggregation=how, max_model_len=1024)
        (v,) = await other.score(problem(), [cand], _ctx(Usage()))
        assert v.score == pytest.approx(value, abs=1e-6)


async def test_prm_too_long_candidate_scores_zero(prm):
    (v,) = await prm.score(problem(), [Candidate(text="word " * 2000)], _ctx(Usage()))
    assert v.score == 0.0 and v.passed is False and "too long" in v.feedback


# ---- the other runners: an outcome model (classify) and causal-LM PRMs (generate + logprobs) ----

async def test_orm_end_to_end(models):
    s = scorer(models["orm"], max_model_len=1024)
    usage = Usage()
    verdicts = await s.score(problem(), [Candidate(text=SOLUTION), Candidate(text="\\boxed{6}")], _ctx(usage))
    assert all(len(v.step_scores) == 1 and 0.0 <= v.score <= 1.0 for v in verdicts)
    assert verdicts[0].feedback.startswith("ORM score: [")
    assert usage.scorer_calls == 1 and usage.scorer_prompt_tokens > 0
    again = await s.score(problem(), [Candidate(text=SOLUTION)], _ctx(Usage()))
    assert again[0].score == pytest.approx(verdicts[0].score, abs=1e-5)


async def test_causal_lm_prms_end_to_end(models):
    import torch
    from transformers import LlamaForCausalLM

    shepherd = scorer(models["lm"], family="math-shepherd", max_model_len=1024)
    rlhflow = scorer(models["lm"], family="rlhflow-prm", max_model_len=1024)
    usage = Usage()
    cands = [Candidate(text=SOLUTION), Candidate(text="Guess.\n\n\\boxed{6}")]
    verdicts = await shepherd.score(problem(), cands, _ctx(usage))
    assert [len(v.step_scores) for v in verdicts] == [3, 2]
    assert usage.scorer_calls == 1 and usage.scorer_completion_tokens == 5  # one token per step prefix
    # the score is softmax over the "+"/"-" logits at each tag, as the model card computes it
    lm = LlamaForCausalLM.from_pretrained(str(models["lm"]), torch_dtype=torch.float32).eval()
    _, enc = shepherd.encode(problem(), cands[0])
    plus, minus = shepherd.label_ids
    with torch.no_grad():
        logits = lm(torch.tensor([enc.prompts[-1]])).logits[0]
    tag_positions = [i for i, t in enumerate(enc.prompts[-1]) if t == shepherd.tag_id]
    expected = [float(torch.softmax(logits[i, [plus, minus]], dim=-1)[0]) for i in tag_positions]
    assert verdicts[0].step_scores == pytest.approx(expected, abs=2e-4)
    # RLHFlow on the same weights (the same engine): one score per step
    (v,) = await rlhflow.score(problem(), cands[:1], _ctx(Usage()))
    assert len(v.step_scores) == 3 and all(0.0 <= x <= 1.0 for x in v.step_scores)
