"""Turning a `Prompt` into model input: the model's chat template when it has one, plain turns otherwise."""

from __future__ import annotations

from typing import Any

from tts.types import ChatMessage, Prompt


def plain_chat(messages: list[ChatMessage]) -> str:
    """A template-free rendering for base models: "User: ...\\nAssistant: ..." ending on an open assistant turn."""
    lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def render_prompt(prompt: Prompt, tokenizer: Any | None, continuation: str = "") -> str:
    """The text the model continues. Chat messages go through the tokenizer's chat template if it has one.

    `continuation` (a partial answer) is appended after the opened assistant turn, so step-wise
    strategies extend a prefix that the engine's prefix cache already holds.
    """
    if isinstance(prompt, str):
        return prompt + continuation
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [m.model_dump() for m in prompt], tokenize=False, add_generation_prompt=True
        ) + continuation
    return plain_chat(prompt) + (" " + continuation if continuation else "")


def prompt_text(prompt: Prompt, continuation: str = "") -> str:
    """A readable single string for logs and scripted backends."""
    return (prompt if isinstance(prompt, str) else plain_chat(prompt)) + continuation
