"""Step-wise generation pieces (tts.stepwise): steps, states, requests, finish detection, FLOPs accounting."""

import random

import pytest

from tts.backends.scripted import ScriptedBackend
from tts.stepwise import (
    Step,
    StepFormat,
    StepState,
    ended_without_text,
    flops_report,
    next_step_requests,
    rollout_requests,
    step_from_sample,
    with_request_seeds,
)
from tts.types import Sample, SamplingConfig, Usage

FMT = StepFormat()


def sample(text, finish="stop", tokens=3, lp=-0.3, **kw):
    return Sample(text=text, token_count=tokens, logprob_sum=lp * tokens, finish_reason=finish, **kw)


async def test_steps_concatenate_back_into_the_exact_text():
    """A model that writes DOC: stepping line by line from the prefix rebuilds DOC exactly; a blank line
    joins the next step (steps ask for at least one token before the delimiter may stop them)."""
    doc = "First, 3 + 4 = 7.\n\nThen 7 * 2 = 14.\nThe answer is 14."
    prompt = "Q: what?\nA: "

    def rest_of_doc(text, index):
        return doc[len(text) - len(prompt):]

    backend = ScriptedBackend(rest_of_doc)
    state = StepState()
    sampling = SamplingConfig(n=1, temperature=0.0)
    while not state.finished:
        (req,) = next_step_requests(prompt, [state], sampling, FMT)
        assert req.sampling.stop == ("\n",) and req.continuation == state.text
        ((s,),) = await backend.generate([req])
        state = state.extend(step_from_sample(s, FMT))
        assert state.depth < 10
    assert state.text == doc
    assert [st.text for st in state.steps] == ["First, 3 + 4 = 7.", "\nThen 7 * 2 = 14.", "The answer is 14."]
    assert [st.delimiter for st in state.steps] == ["\n", "\n", ""]


@pytest.mark.parametrize(
    "text, finish, reason, delimiter, finished",
    [
        ("x = 3 + 4 = 7", "stop", "\n", "\n", False),  # stopped on the delimiter
        ("x = 3 + 4 = 7", "stop", None, "", True),  # EOS: the answer ended without an answer line
        ("a line cut by the tok", "length", None, "", False),  # continues on the same line
        ("The answer is 14.", "stop", None, "", True),
        ("So the final answer is 9", "stop", "\n", "\n", True),  # exact text kept on a finished step
        ("Hence \\boxed{14}.", "stop", None, "", True),
        ("#### 14", "stop", "\n", "\n", True),
        ("The answer is 14 and more", "length", None, "", True),
        ("answer: 14", "stop", "\n", "\n", False),
        ("x = 7", "stop", "</s>", "", False),  # another stop string: no delimiter written
    ],
)
def test_step_from_sample_delimiter_and_finish(text, finish, reason, delimiter, finished):
    step = step_from_sample(sample(text, finish, stop_reason=reason), FMT)
    assert step.text == text and step.delimiter == delimiter and step.finished is finished
    assert step.written == text + delimiter


def test_end_marker_cuts_the_step_and_ends_the_answer():
    fmt = StepFormat(end_marker="<end_of_reasoning>", answer_pattern=None)
    step = step_from_sample(sample("So 14. <end_of_reasoning> trailing"), fmt)
    assert (step.text, step.delimiter, step.finished) == ("So 14. ", "", True)
    assert fmt.rollout_stop == ("<end_of_reasoning>",)
    assert StepFormat().rollout_stop == ()


def test_no_answer_pattern_never_finishes_by_text():
    fmt = StepFormat(answer_pattern=None)
    assert not step_from_sample(sample("The answer is 14.", stop_reason="\n"), fmt).finished


def test_invalid_answer_pattern_is_refused():
    with pytest.raises(ValueError, match="regular expression"):
        StepFormat(answer_pattern="(unclosed")


@pytest.mark.parametrize(
    "text, finish, ended",
    [("", "stop", True), ("  \n", "stop", True), ("", "length", False), ("more", "stop", False)],
)
def test_ended_without_text(text, finish, ended):
    assert ended_without_text(sample(text, finish)) is ended


def test_state_accumulates_steps_and_logprobs():
    s1 = Step(text="a", delimiter="\n", token_count=2, logprob_sum=-1.0)
    s2 = Step(text="b", delimiter="", token_count=3, logprob_sum=-0.5, finished=True)
    state = StepState(prefix="P:").extend(s1)
    assert state.text == "P:a\n" and not state.finished and state.depth == 1
    done = state.extend(s2)
    assert done.text == "P:a\nb" and done.finished
    assert done.token_count == 5 and done.logprob_sum == pytest.approx(-1.5)
    assert done.cumulative_logprobs == pytest.approx([-1.0, -1.5])
    assert state.depth == 1  # states are immutable
    with pytest.raises(ValueError):
        done.extend(s1)
    assert Step(text="").mean_logprob == 0.0
    assert s1.mean_logprob == pytest.approx(-0.5)


def test_requests_one_per_state_and_rollouts_to_the_end():
    states = [StepState(prefix="P"), StepState(prefix="Q")]
    sampling = SamplingConfig(n=4, temperature=0.6, max_tokens=50, stop=("ignored",))
    reqs = next_step_requests("prompt", states, sampling, StepFormat(delimiter="\n\n"))
    assert [r.continuation for r in reqs] == ["P", "Q"]
    assert all(r.sampling.stop == ("\n\n",) and r.sampling.n == 4 and r.sampling.max_tokens == 50 for r in reqs)
    rolls = rollout_requests("prompt", ["P x\n", "Q y\n"], sampling.model_copy(update={"n": 1}),
                             StepFormat(end_marker="<end>"))
    assert [r.continuation for r in rolls] == ["P x\n", "Q y\n"]
    assert all(r.sampling.stop == ("<end>",) and r.sampling.n == 1 for r in rolls)


def test_request_seeds_are_distinct_and_reproducible():
    reqs = next_step_requests("p", [StepState()] * 4, SamplingConfig(seed=7), FMT)
    a = [r.sampling.seed for r in with_request_seeds(reqs, random.Random(1))]
    b = [r.sampling.seed for r in with_request_seeds(reqs, random.Random(1))]
    assert a == b and len(set(a)) == 4
    unseeded = next_step_requests("p", [StepState()] * 2, SamplingConfig(), FMT)
    assert [r.sampling.seed for r in with_request_seeds(unseeded, random.Random(1))] == [None, None]


def test_flops_report_with_and_without_the_prefix_cache():
    usage = Usage(prompt_tokens=1000, cached_tokens=600, completion_tokens=250)
    report = flops_report(usage, 500_000_000)
    assert report["processed_tokens_with_prefix_cache"] == 650
    assert report["processed_tokens_without_prefix_cache"] == 1250
    assert report["flops_with_prefix_cache"] == 2 * 500_000_000 * 650
    assert report["flops_without_prefix_cache"] == 2 * 500_000_000 * 1250
    assert report["cached_prompt_tokens"] == 600 and report["generated_tokens"] == 250
    unknown = flops_report(usage, None)
    assert unknown["flops_with_prefix_cache"] is None and unknown["flops_without_prefix_cache"] is None
