"""A deterministic backend for tests and examples (its_hub-style first-class mock).

It returns scripted completions instead of sampling, so strategy logic can be unit-tested exactly.
Token counts are whitespace words; log-probabilities are scripted or derived from the text's hash.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence

from pydantic import Field

from tts.backends.base import Backend, BackendOptions
from tts.backends.render import prompt_text
from tts.types import GenerationRequest, Sample

# A script maps (prompt text, index of this sample among all samples drawn for that prompt) to a completion,
# to (completion, mean token logprob), or to a whole `Sample` (returned as is: fixed logprobs, top logprobs).
Completion = str | tuple[str, float] | Sample
Script = Callable[[str, int], Completion] | Sequence[Completion]


def _default_logprob(text: str) -> float:
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return -0.05 - (h % 1000) / 1000.0  # in (-1.05, -0.05]


class ScriptedOptions(BackendOptions):
    delay: float = Field(0.0, ge=0, description="seconds each generate call waits (to test concurrency)")


class ScriptedBackend(Backend):
    name = "scripted"
    description = "deterministic scripted completions for tests (no model)"
    Options = ScriptedOptions

    def __init__(self, script: Script | None = None, model: str = "scripted", delay: float = 0.0):
        if script is None or isinstance(script, str):
            from tts.errors import UserError

            raise UserError("the scripted backend is for tests: build ScriptedBackend(script) in Python")
        self.script = script
        self.model = model
        self.delay = delay
        self.calls: list[list[GenerationRequest]] = []
        self._drawn: dict[str, int] = defaultdict(int)

    async def served_identity(self) -> dict:
        """The script stands for the model: its function's qualified name, or a hash of a list of completions."""
        if callable(self.script):
            qualname = getattr(self.script, "__qualname__", type(self.script).__name__)
            script = f"{getattr(self.script, '__module__', '?')}.{qualname}"
        else:
            script = "list:" + hashlib.sha256(repr(list(self.script)).encode()).hexdigest()[:12]
        return {"backend": self.name, "model": self.model, "script": script}

    def _complete(self, text: str, index: int) -> Completion:
        if callable(self.script):
            return self.script(text, index)
        return self.script[index % len(self.script)]

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        self.calls.append(list(requests))
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for req in requests:
            text = prompt_text(req.prompt, req.continuation)
            samples = []
            for _ in range(req.sampling.n):
                completion = self._complete(text, self._drawn[text])
                self._drawn[text] += 1
                if isinstance(completion, Sample):
                    update = {} if completion.prompt_tokens else {"prompt_tokens": len(text.split())}
                    samples.append(completion.model_copy(update=update))
                    continue
                if isinstance(completion, tuple):
                    body, mean_lp = completion
                else:
                    body, mean_lp = completion, _default_logprob(completion)
                # Like vLLM: the earliest stop string (searched after min_tokens words) ends the text,
                # is left out of it, and is reported as the stop reason.
                skip = len(" ".join(body.split(" ")[: req.sampling.min_tokens])) if req.sampling.min_tokens else 0
                hits = [(body.index(s, skip), s) for s in req.sampling.stop if s in body[skip:]]
                stop_reason = None
                if hits:
                    at, stop_reason = min(hits)
                    body = body[:at]
                words = body.split()[: req.sampling.max_tokens]
                count = max(len(words), 1)
                samples.append(
                    Sample(
                        text=body,
                        token_count=count,
                        logprob_sum=mean_lp * count,
                        token_logprobs=[mean_lp] * count if req.sampling.logprobs or req.sampling.top_logprobs
                        else None,
                        top_logprobs=_scripted_top(words or [""], mean_lp, req.sampling.top_logprobs),
                        finish_reason="stop",
                        stop_reason=stop_reason,
                        prompt_tokens=len(text.split()),
                    )
                )
            out.append(samples)
        return out


def _scripted_top(words: list[str], mean_lp: float, k: int) -> list[dict[str, float]] | None:
    """Top-k logprobs for a scripted completion: each word at the mean logprob, then k - 1 made-up
    alternatives one nat apart (enough for confidence scorers' plumbing; script a `Sample` for exact values)."""
    if not k:
        return None
    return [{w: mean_lp, **{f"<alt{j}>": mean_lp - j for j in range(1, k)}} for w in words]
