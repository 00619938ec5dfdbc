"""How each reward-model family wants a solution written, and where its scores are read (docs/scorers/reward-models.md).

A family fixes four things: the step separator written between steps (a tag token after each step),
the pooling (where the model's outputs become step scores), the prompt format (chat template or plain
text) and the vLLM runner. The candidate's text is first cut into steps with the scorer's
`step_separator` (`tts.scorer.split_steps`); a family's own tag is removed from the steps' text so
that a candidate cannot add scored positions.

- `qwen2.5-math-prm` (Qwen2.5-Math-PRM-7B, `Qwen2ForProcessRewardModel`; Zhang et al. 2025): chat
  template, system "Please reason step by step, and put your final answer within \\boxed{}.", user = the
  question, assistant = the steps each followed by `<extra_0>`. Pooling runner, token-classify task,
  STEP pooling at the `<extra_0>` positions; step score = softmax probability of label 1 (correct).
- `skywork-prm` (Skywork-o1-Open-PRM-Qwen-2.5-1.5B, `Qwen2ForPrmModel`): no chat template;
  `bos + question + "\\n"`, then each step's tokens followed by the token of "\\n" (Skywork's step token).
  Pooling runner, token-classify over all tokens (a value head, one output a token); step score =
  sigmoid of the value at each appended step token.
- `rlhflow-prm` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, `LlamaForCausalLM`): a causal LM. Multi-turn chat:
  user turn k is step k (the first prefixed with the question and a space), each assistant turn "+".
  Generate runner: one request per step prefix (the conversation up to user turn k, then the opened
  assistant turn), one token, with the log-probabilities of "+" and "-"; step score =
  P(+) / (P(+) + P(-)). Prefixes share the prefix cache.
- `math-shepherd` (peiyi9979/math-shepherd-mistral-7b-prm, `MistralForCausalLM`; Wang et al. 2024): a
  causal LM. Plain text `question + " " + step_1 + " ки\\n" + step_2 + " ки" ...` (steps joined with "\\n",
  each ending with the tag "ки"). Generate runner: one request per prefix ending with step k's tag; step
  score = softmax over the "+"/"-" logits of the next token (the logits at the tag position, as the
  model card reads them).
- `orm`: an outcome reward model (`*ForSequenceClassification`, `*ForRewardModel`): chat template with
  user = question and assistant = the whole solution (plain "question\\n\\nsolution" without a template).
  Pooling runner, last-token pooling (classify task; token-classify's last row for models that only
  offer that); one score: sigmoid of the logit (one label) or softmax probability of label 1 (two).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tts.errors import UserError
from tts.scorer import split_steps

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

Pooling = Literal["step-tag", "flagged", "last", "next-token"]


@dataclass(frozen=True)
class Family:
    name: str
    runner: Literal["pooling", "generate"]
    pooling: Pooling
    step_tag: str | None  # the text whose single token is written after each step
    architectures: tuple[str, ...]  # accepted config.json architectures ("*Suffix": any name ending so)
    summary: str


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2.5-math-prm", "pooling", "step-tag", "<extra_0>", ("Qwen2ForProcessRewardModel",),
           "Qwen2.5-Math-PRM: chat, <extra_0> after each step, P(label 1) at each tag"),
    Family("skywork-prm", "pooling", "flagged", "\n", ("Qwen2ForPrmModel",),
           "Skywork-o1-Open-PRM: bos+question+newline, newline token after each step, sigmoid(value) there"),
    Family("rlhflow-prm", "generate", "next-token", None, ("*ForCausalLM",),
           "RLHFlow PRM: chat turns step/'+', P(+)/(P(+)+P(-)) of each assistant token"),
    Family("math-shepherd", "generate", "next-token", "ки", ("*ForCausalLM",),
           "Math-Shepherd: 'ки' after each step, softmax over '+'/'-' logits at each tag"),
    Family("orm", "pooling", "last", None, ("*ForSequenceClassification", "*ForRewardModel", "*RewardModel"),
           "outcome reward model: last-token pooling, one score (sigmoid of a logit)"),
)}

AUTO: dict[str, str] = {"Qwen2ForProcessRewardModel": "qwen2.5-math-prm", "Qwen2ForPrmModel": "skywork-prm"}


def read_architectures(model: str) -> list[str]:
    path = Path(model) / "config.json"
    if not path.is_file():
        raise UserError(f"reward model {model} has no config.json; expected a local Hugging Face reward-model folder")
    try:
        archs = json.loads(path.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"reward model {model}: config.json is unreadable ({exc})") from None
    return [str(a) for a in archs]


def _matches(arch: str, patterns: tuple[str, ...]) -> bool:
    return any(arch.endswith(p[1:]) if p.startswith("*") else arch == p for p in patterns)


def detect_family(model: str, family: str) -> Family:
    """The family to use for `model` (config.json's architectures checked against it); UserError if it is not one."""
    archs = read_architectures(model)
    if family == "auto":
        for arch in archs:
            if arch in AUTO:
                return FAMILIES[AUTO[arch]]
            if _matches(arch, FAMILIES["orm"].architectures):
                return FAMILIES["orm"]
        if any(a.endswith("ForCausalLM") for a in archs):
            raise UserError(f"reward model {model} is a causal LM ({', '.join(archs)}); say which PRM it is "
                            f"with family=rlhflow-prm or family=math-shepherd")
        raise UserError(f"reward model {model} has architectures {archs or 'none'}; expected a reward model "
                        f"({', '.join(sorted(AUTO))}, *ForSequenceClassification) or an explicit family")
    spec = FAMILIES[family]
    if not any(_matches(a, spec.architectures) for a in archs):
        raise UserError(f"reward model {model} has architectures {archs or 'none'}, not a {family} reward model "
                        f"(expected {' or '.join(spec.architectures)})")
    return spec


def single_token(tokenizer: Any, text: str, family: str, model: str) -> int:
    """The id of `text` as one token of the tokenizer (its last token, as the families' own code reads it)."""
    vocab = tokenizer.get_vocab()
    if text in vocab:
        return int(vocab[text])
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 and not (text in ("+", "-") and ids):
        raise UserError(f"reward model {model}: the {family} step tag {text!r} is not one token of its tokenizer "
                        f"(it encodes as {len(ids)}); is this a {family} model?")
    return int(ids[-1])


@dataclass
class Encoded:
    """A candidate as the engine gets it: prompts (token ids) and, for pooling, the positions to read."""

    prompts: list[list[int]]
    positions: list[int] | None = None  # "flagged": the token indices of the step scores in prompts[0]


def _chat(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer.encode(text, add_special_tokens=False))


def clean_steps(steps: list[str], tag: str | None) -> list[str]:
    """Steps without the family's tag in their text (empty steps dropped): only the scorer writes tags."""
    if not tag or tag == "\n":
        return steps
    return [s for s in (step.replace(tag, "").strip() for step in steps) if s]


def encode_candidate(
    spec: Family, tokenizer: Any, question: str, text: str, separator: str
) -> tuple[list[str], Encoded]:
    """A candidate's steps (cut at `separator`, cleaned of the family's tag) and its prompts under `spec`."""
    steps = clean_steps(split_steps(text, separator), spec.step_tag)
    return steps, encode(spec, tokenizer, question, steps, text)


def encode(spec: Family, tokenizer: Any, question: str, steps: list[str], text: str) -> Encoded:
    """Token ids for one candidate under `spec` (steps already cleaned of the tag)."""
    name = spec.name
    if name == "qwen2.5-math-prm":
        messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": "".join(s + "<extra_0>" for s in steps)}]
        return Encoded([_chat(tokenizer, messages, False)])
    if name == "skywork-prm":
        bos = tokenizer.bos_token or ""
        ids = list(tokenizer.encode(bos + question + "\n", add_special_tokens=False))
        step_id = tokenizer.encode("\n", add_special_tokens=False)[-1]
        positions = []
        for step in steps:
            ids += list(tokenizer.encode(step, add_special_tokens=False)) + [step_id]
            positions.append(len(ids) - 1)
        return Encoded([ids], positions)
    if name == "rlhflow-prm":
        prompts, turns = [], []
        for k, step in enumerate(steps):
            turns.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
            prompts.append(_chat(tokenizer, turns, True))
            turns.append({"role": "assistant", "content": "+"})
        return Encoded(prompts)
    if name == "math-shepherd":
        prefixes = [question + " " + "\n".join(s + " ки" for s in steps[:k]) for k in range(1, len(steps) + 1)]
        return Encoded([list(tokenizer.encode(p, add_special_tokens=True)) for p in prefixes])
    if name == "orm":
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            return Encoded([_chat(tokenizer, messages, False)])
        return Encoded([list(tokenizer.encode(f"{question}\n\n{text}", add_special_tokens=True))])
    raise ValueError(f"unknown reward-model family {name!r}")
