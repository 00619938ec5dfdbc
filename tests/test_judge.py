"""The LLM judge scorer on the scripted backend: P(Yes) reading, batching, prompts, votes, explanations, cost."""

import math
import random

import pytest

import tts.registry as registry
from tts.backends.render import prompt_text
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.registry import build_scorer
from tts.scorer import ScoringContext
from tts.scorers.judge import JudgeScorer
from tts.scorers.judge_prompts import DEFAULT_QUESTION, DEFAULT_STEP_QUESTION, p_yes, read_explained
from tts.tasks.gsm8k import GSM8K
from tts.types import Candidate, ChatMessage, Problem, Sample, Usage

CHAT = Problem(id="p", task="t", question="What is 3 + 4?",
               prompt=[ChatMessage(role="system", content="Be brief."),
                       ChatMessage(role="user", content="What is 3 + 4?")])
TEXT = Problem(id="p", task="t", question="What is 3 + 4?", prompt="Question: What is 3 + 4?\nAnswer: ")


def top(**probs: float) -> dict[str, float]:
    return {k: math.log(v) for k, v in probs.items()}


def answer_sample(top_logprobs: list[dict[str, float]] | None, text: str = "Yes",
                  token_logprobs: list[float] | None = None) -> Sample:
    """A judge's answer as an engine returns it (prompt tokens filled in by the scripted backend)."""
    return Sample(text=text, token_count=max(len(top_logprobs or []), 1), top_logprobs=top_logprobs,
                  token_logprobs=token_logprobs, finish_reason="length")


def is_judge(text: str) -> bool:
    return "Answer Yes or No." in text.rsplit("User:", 1)[-1]


def judging(p_correct, answer="The answer is 7.\n#### 7"):
    """A script: judge prompts get P(Yes) = p_correct(prompt text), other prompts `answer`."""
    def script(text, index):
        if is_judge(text):
            p = p_correct(text)
            return answer_sample([{"Yes": math.log(p), "No": math.log(1 - p), "The": -5.0}])
        return answer
    return script


async def score(scorer, problem, candidates, backend):
    usage = Usage()
    verdicts = await scorer.score(problem, candidates, ScoringContext(policy=backend, usage=usage))
    return verdicts, usage


# ---- reading P(Yes) -------------------------------------------------------------------------------

@pytest.mark.parametrize("probs, expected, note", [
    # plain Yes and No: normalised over the two
    ({"Yes": 0.6, "No": 0.2, "The": 0.1}, 0.75, ""),
    # every spelling of a word is summed: leading space, case, GPT-2 and SentencePiece markers
    ({" Yes": 0.3, "yes": 0.2, "YES": 0.1, "\u0120No": 0.1, "\u2581no": 0.1, " NO": 0.2}, 0.6, ""),
    # No is not in the top-k: counted as 0, and said
    ({"Yes": 0.5, "The": 0.3}, 1.0, "No not among the top 2 tokens"),
    # Yes is not in the top-k
    ({" No": 0.4, "I": 0.3}, 0.0, "Yes not among the top 2 tokens"),
    # neither: 0.5, naming the top tokens
    ({"The": 0.5, "I": 0.2}, 0.5, "neither Yes nor No (top tokens: 'The' 0.50, 'I' 0.20)"),
    # words that merely start with yes/no are not answers
    ({"Yesterday": 0.5, "Nope": 0.2, "None": 0.1}, 0.5, "neither"),
    # an empty top-k list (nothing returned at that position)
    ({}, 0.5, "top tokens: none"),
])
def test_p_yes_normalises_over_yes_and_no_variants(probs, expected, note):
    reading = p_yes(top(**probs) if probs else {})
    assert reading.score == pytest.approx(expected)
    assert note in reading.note and bool(reading.note) == bool(note)


async def test_one_engine_call_for_the_whole_batch_with_greedy_one_token_requests():
    backend = ScriptedBackend(judging(lambda text: 0.9 if "#### 7" in text else 0.2))
    candidates = [Candidate(text="3 + 4 = 7\n#### 7"), Candidate(text="3 + 4 = 8\n#### 8"),
                  Candidate(text="It is 7.\n#### 7")]
    verdicts, usage = await score(JudgeScorer(), CHAT, candidates, backend)
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 3
    cfg = backend.calls[0][0].sampling
    assert (cfg.n, cfg.max_tokens, cfg.temperature, cfg.top_logprobs, cfg.logprobs) == (1, 1, 0.0, 20, True)
    assert [v.score for v in verdicts] == pytest.approx([0.9, 0.2, 0.9])
    assert [v.passed for v in verdicts] == [True, False, True]
    assert all(v.verifier == "judge" and v.step_scores is None for v in verdicts)
    assert verdicts[0].feedback == "judge: P(correct) = 0.90"


async def test_threshold_and_top_logprobs_options():
    backend = ScriptedBackend(judging(lambda text: 0.7))
    verdicts, _ = await score(JudgeScorer(threshold=0.8, top_logprobs=5), CHAT, [Candidate(text="7")], backend)
    assert verdicts[0].passed is False and backend.calls[0][0].sampling.top_logprobs == 5


# ---- prompts --------------------------------------------------------------------------------------

async def test_chat_prompt_extends_the_generation_prompt():
    backend = ScriptedBackend(judging(lambda text: 0.5))
    await score(JudgeScorer(), CHAT, [Candidate(text="3 + 4 = 7")], backend)
    (req,) = backend.calls[0]
    assert req.prompt == [*CHAT.prompt, ChatMessage(role="assistant", content="3 + 4 = 7"),
                          ChatMessage(role="user", content=DEFAULT_QUESTION)]
    # the rendered judge prompt starts with the rendered generation prompt: the prefix cache serves it
    assert prompt_text(req.prompt).startswith(prompt_text(CHAT.prompt))


async def test_text_prompt_extends_the_generation_prompt():
    backend = ScriptedBackend(judging(lambda text: 0.5))
    await score(JudgeScorer(), TEXT, [Candidate(text="7")], backend)
    (req,) = backend.calls[0]
    assert req.prompt == f"{TEXT.prompt}7\n\n{DEFAULT_QUESTION}\nAnswer:"
    assert req.prompt.startswith(TEXT.prompt + "7")


async def test_custom_template_is_one_user_message():
    backend = ScriptedBackend(judging(lambda text: 0.5))
    template = "Problem: {question}\nProposed solution: {solution}\nIs it right? Answer Yes or No. {{strict}}"
    await score(JudgeScorer(template=template), TEXT, [Candidate(text="7")], backend)
    (req,) = backend.calls[0]
    assert req.prompt == [ChatMessage(role="user", content="Problem: What is 3 + 4?\nProposed solution: 7\n"
                                      "Is it right? Answer Yes or No. {strict}")]


# ---- process level --------------------------------------------------------------------------------

STEPS = "Add 3 and 4.\n\nThat makes 8.\n\nSo the answer is 8."
STEP_P = {"Add 3 and 4.": 0.9, "That makes 8.": 0.2, "So the answer is 8.": 0.5}


def by_last_step(text: str) -> float:
    """P(Yes) for a prefix: the judge doubts the step the prefix ends with."""
    body = text.rsplit("\n\nUser:", 1)[0]
    return next(p for step, p in STEP_P.items() if body.endswith(step))


@pytest.mark.parametrize("aggregation, expected", [
    ("last", 0.5),  # search-and-learn's default: the last step's score
    ("min", 0.2),  # the weakest step
    ("prod", 0.9 * 0.2 * 0.5),  # all steps right
    ("mean", (0.9 + 0.2 + 0.5) / 3),
])
async def test_process_level_judges_every_prefix_in_one_call(aggregation, expected):
    backend = ScriptedBackend(judging(by_last_step))
    scorer = JudgeScorer(level="process", aggregation=aggregation)
    assert scorer.level == "process"
    verdicts, usage = await score(scorer, CHAT, [Candidate(text=STEPS), Candidate(text="Add 3 and 4.")], backend)
    assert len(backend.calls) == 1 and usage.scorer_calls == 1
    prompts = [r.prompt for r in backend.calls[0]]
    assert [p[-2].content for p in prompts] == ["Add 3 and 4.", "Add 3 and 4.\n\nThat makes 8.", STEPS,
                                                "Add 3 and 4."]
    assert all(p[-1].content == DEFAULT_STEP_QUESTION for p in prompts)
    assert verdicts[0].step_scores == pytest.approx([0.9, 0.2, 0.5])
    assert verdicts[0].score == pytest.approx(expected)
    assert verdicts[1].step_scores == pytest.approx([0.9]) and verdicts[1].score == pytest.approx(0.9)
    assert "per step = 0.90, 0.20, 0.50" in verdicts[0].feedback


@pytest.mark.parametrize("level", ["outcome", "process"])
async def test_step_search_judges_only_the_last_step_prefix(level):
    """Step-level search keeps earlier step scores: one request per partial answer (its last prefix, the
    trailing blank line dropped), the step question at either level, one engine call; empty scores 0."""
    backend = ScriptedBackend(judging(by_last_step))
    scorer = JudgeScorer(level=level)
    usage = Usage()
    partials = [Candidate(text=STEPS), Candidate(text="Add 3 and 4.\n\nThat makes 8.\n\n"), Candidate(text="")]
    scores = await scorer.score_last_steps(CHAT, partials, ScoringContext(policy=backend, usage=usage))
    assert scores == pytest.approx([0.5, 0.2, 0.0])
    assert len(backend.calls) == 1 and usage.scorer_calls == 1
    prompts = [r.prompt for r in backend.calls[0]]
    assert [p[-2].content for p in prompts] == [STEPS, "Add 3 and 4.\n\nThat makes 8."]
    assert all(p[-1].content == DEFAULT_STEP_QUESTION for p in prompts)


async def test_custom_step_separator():
    backend = ScriptedBackend(judging(lambda text: 0.6))
    verdicts, _ = await score(JudgeScorer(level="process", step_separator="\n"), CHAT,
                              [Candidate(text="a\nb\n\nc")], backend)
    assert [r.prompt[-2].content for r in backend.calls[0]] == ["a", "a\nb", "a\nb\n\nc"]
    assert verdicts[0].step_scores == pytest.approx([0.6] * 3)


@pytest.mark.parametrize("level", ["outcome", "process"])
async def test_an_empty_candidate_scores_zero_without_a_request(level):
    backend = ScriptedBackend(judging(lambda text: 0.9))
    verdicts, usage = await score(JudgeScorer(level=level), CHAT, [Candidate(text="  \n\n "), Candidate(text="7")],
                                  backend)
    assert verdicts[0].score == 0.0 and verdicts[0].passed is False and "empty" in verdicts[0].feedback
    assert len(backend.calls[0]) == 1 and verdicts[1].score == pytest.approx(0.9)
    verdicts, usage = await score(JudgeScorer(level=level), CHAT, [Candidate(text="")], backend)
    assert len(backend.calls) == 1 and usage.scorer_calls == 0 and verdicts[0].score == 0.0  # no call at all


# ---- votes and explanations -----------------------------------------------------------------------

async def test_votes_average_the_drawn_judgements():
    dist = [top(Yes=0.6, No=0.3, The=0.1)]
    draws = {0: "Yes", 1: " no", 2: "The"}  # the third judgement drew neither: its P(Yes) = 2/3 counts

    def script(text, index):
        return answer_sample(dist, text=draws[index % 3]) if is_judge(text) else "7"

    backend = ScriptedBackend(script)
    verdicts, usage = await score(JudgeScorer(votes=3, temperature=0.8), CHAT, [Candidate(text="7")], backend)
    cfg = backend.calls[0][0].sampling
    assert (cfg.n, cfg.temperature, cfg.max_tokens) == (3, 0.8, 1)
    assert verdicts[0].score == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert "mean of 3 judgements" in verdicts[0].feedback
    assert usage.scorer_completion_tokens == 3 and usage.scorer_calls == 1


def explained(text_tokens: list[str], answer_top: dict[str, float]) -> Sample:
    """An explanation token by token (each the top choice), with `answer_top` at the Yes/No position."""
    tops = [answer_top if tok.strip() in ("Yes", "No") else {tok: -0.1, "<alt>": -3.0} for tok in text_tokens]
    lps = [t[tok] for t, tok in zip(tops, text_tokens)]
    return answer_sample(tops, text="".join(text_tokens), token_logprobs=lps)


@pytest.mark.parametrize("tokens, answer_top, expected, note", [
    # the Yes after "Answer:" is read: P(Yes) there, normalised
    (["3 + 4 is 7,", " so it", " is right.", "\n", "Answer", ":", " Yes"], top(**{" Yes": 0.8, " No": 0.2}), 0.8, ""),
    # a Yes inside the explanation does not count: the last one after "Answer:" does
    (["Yes", " it adds", " up wrong.", "\nAnswer:", " **", "No", "**"], top(No=0.7, Yes=0.1), 0.125, ""),
    # no "Answer:" line: P(Yes) at the last generated Yes/No token (here only " yes" is in its top-k)
    (["I think", " yes", " it is", " right"], top(), 1.0, "read at its last Yes/No token"),
    # the judge says "No." straight away (SmolLM2 does): the reading stays graded, not a hard 0
    (["No", "."], top(No=0.6, Yes=0.3), 1 / 3, "read at its last Yes/No token"),
    # neither anywhere: 0.5
    (["Hard", " to say."], top(), 0.5, "neither"),
])
def test_explained_judgements_read_the_answer_after_answer_colon(tokens, answer_top, expected, note):
    reading = read_explained(explained(tokens, answer_top))
    assert reading.score == pytest.approx(expected) and note in reading.note


async def test_explain_sends_the_instruction_and_gives_the_explanation_as_feedback():
    tokens = ["The sum", " is 7,", " as claimed.", "\n", "Answer:", " Yes"]

    def script(text, index):
        if "Answer: Yes" in text and "explain" in text:
            return explained(tokens, top(**{" Yes": 0.9, " No": 0.1}))
        return "7"

    backend = ScriptedBackend(script)
    verdicts, _ = await score(JudgeScorer(explain=True, explain_tokens=64), CHAT, [Candidate(text="7")], backend)
    cfg = backend.calls[0][0].sampling
    assert (cfg.max_tokens, cfg.temperature, cfg.top_logprobs) == (64, 0.0, 20)
    assert verdicts[0].score == pytest.approx(0.9)
    assert verdicts[0].feedback.startswith("The sum is 7, as claimed.\n(judge: P(correct) = 0.90")


# ---- errors, cost, identity ------------------------------------------------------------------------

async def test_a_backend_without_top_logprobs_is_a_clear_error():
    backend = ScriptedBackend(lambda text, i: answer_sample(None), model="tiny-judge")
    with pytest.raises(UserError, match="needs top log-probabilities.*'tiny-judge'"):
        await score(JudgeScorer(), CHAT, [Candidate(text="7")], backend)


@pytest.mark.parametrize("options, message", [
    ({"template": "Is {question} right?"}, "needs a {solution} placeholder"),  # nowhere to put the candidate
    ({"template": "{solution} {answer}"}, "unknown placeholder(s) {answer}"),  # a field the judge cannot fill
    ({"template": "{solution} {"}, "not a valid format string"),  # a lone brace
    ({"votes": 0}, "votes"),  # at least one judgement
    ({"top_logprobs": 21}, "top_logprobs"),  # engines return at most 20
    ({"level": "step"}, "level"),  # outcome or process
    ({"aggregation": "max"}, "aggregation"),  # last, min, prod or mean
    ({"threshold": 1.5}, "threshold"),  # a probability
    ({"step_separator": ""}, "step_separator"),  # steps need a separator
    ({"colour": "red"}, "colour"),  # unknown option
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match="bad options for scorer 'judge'") as err:
        build_scorer("judge", **options)
    assert message in str(err.value) and "\n" not in str(err.value)


async def test_judge_cost_is_counted_as_scorer_cost():
    backend = ScriptedBackend(judging(lambda text: 0.9))
    _, usage = await score(JudgeScorer(), CHAT, [Candidate(text="7"), Candidate(text="8")], backend)
    assert usage.scorer_calls == 1 and usage.scorer_completion_tokens == 2 and usage.scorer_prompt_tokens > 0
    assert usage.backend_calls == usage.prompt_tokens == usage.completion_tokens == 0
    assert usage.generator_flops == 0.0


def test_identity_records_the_options_that_change_scores():
    identity = build_scorer("judge", level="process", aggregation="min", votes=3, base_url="http://x/v1").identity()
    assert identity["name"] == "judge"
    options = identity["options"]
    assert (options["level"], options["aggregation"], options["votes"]) == ("process", "min", 3)
    assert options["question"] == DEFAULT_QUESTION and options["model"] is None and "base_url" not in options


async def test_a_judge_model_of_its_own(monkeypatch):
    judge = ScriptedBackend(judging(lambda text: 0.3), model="judge-7b")
    built = []

    def fake_build_backend(backend, model=None, base_url=None, **options):
        built.append((backend, model, base_url, options))
        return judge

    monkeypatch.setattr(registry, "build_backend", fake_build_backend)
    policy = ScriptedBackend(judging(lambda text: 0.9))
    scorer = JudgeScorer(model="judge-7b", backend="openai", base_url="http://h/v1", backend_options={"max_retries": 1})
    for _ in range(2):
        verdicts, _ = await score(scorer, CHAT, [Candidate(text="7")], policy)
        assert verdicts[0].score == pytest.approx(0.3)
    assert built == [("openai", "judge-7b", "http://h/v1", {"max_retries": 1})]  # built once
    assert not policy.calls and len(judge.calls) == 2


# ---- the default scorer of math tasks, inside strategies ------------------------------------------

def gsm8k_script(text: str, index: int):
    """Judge prompts: P(Yes) 0.8 for the answer 18, 0.1 otherwise; refinements answer 18; fresh samples mostly 17."""
    if is_judge(text):
        body = text.rsplit("\n\nUser:", 1)[0]
        p = 0.8 if body.rstrip().endswith("#### 18") else 0.1
        return answer_sample([{"Yes": math.log(p), "No": math.log(1 - p)}])
    if "Re-check" in text:
        return "Let me fix it: 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18"
    return "16 - 3 - 4 = 9, 9 * 2 = 17.\n#### 17" if index % 4 else "9 * 2 = 18.\n#### 18"


def test_math_tasks_default_to_the_judge():
    (scorer,) = GSM8K().default_scorers()
    assert isinstance(scorer, JudgeScorer) and scorer.level == "outcome"


@pytest.mark.parametrize("name", ["mcts", "ab-mcts-a", "ab-mcts-m", "best-of-n"])
async def test_strategies_run_on_gsm8k_with_the_judge(name):
    from tts.strategy import StrategyContext

    task = GSM8K()
    problem = task.load(1)[0].problem
    backend = ScriptedBackend(gsm8k_script)
    ctx = StrategyContext(backend=backend, answers=task, scorers=task.default_scorers(), rng=random.Random(0))
    options = {"n": 4} if name == "best-of-n" else {"n": 8, "batch_size": 2}
    result = await registry.build_strategy(name, **options).run(problem, ctx)
    assert result.answer == "18"
    judged = [v for c in result.candidates for v in c.verdicts]
    assert judged and all(v.verifier == "judge" for v in judged)
    assert {round(v.score, 2) for v in judged} <= {0.8, 0.1}
    assert result.usage.scorer_calls >= 1 and result.usage.scorer_completion_tokens == len(result.candidates)
    if name != "best-of-n":  # the judge's feedback flows into the refinement prompts
        refinements = [r for call in backend.calls for r in call if "Re-check" in prompt_text(r.prompt)]
        assert refinements and all("judge: P(correct) = " in prompt_text(r.prompt) for r in refinements)


@pytest.mark.parametrize("strategy", ["ab-mcts-a", "best-of-n"])
def test_tts_eval_gsm8k_with_the_judge(strategy, monkeypatch, tmp_path, capsys):
    import json

    from tts.cli import main

    class JudgedGSM8K(ScriptedBackend):
        def __init__(self, model=None, **options):
            super().__init__(gsm8k_script)

    real = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: JudgedGSM8K if name == "judged" else real(kind, name))
    monkeypatch.setattr(registry, "_BACKENDS", {})
    out = tmp_path / "run"
    assert main(["eval", "--task", "gsm8k", "--limit", "1", "-n", "4", "-s", strategy, "--backend", "judged",
                 "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert "judge" in json.dumps(config.get("scorers"))
