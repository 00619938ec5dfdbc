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

from tts.backends.base import Backend, BackendOptions, Watcher, check_watched, cut_sample, sample_confidences
from tts.backends.render import prompt_text
from tts.errors import UserError
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
            out.append([self._draw(req, text) for _ in range(req.sampling.n)])
        return out

    async def generate_watched(self, requests: list[GenerationRequest], watchers: list[Watcher]) -> list[Sample]:
        """Like an engine that aborts: the scripted sample's words go to its watcher one at a time, and a stop
        keeps only the words up to it (text, token_count, log-probabilities); the call is in `calls`.

        A scripted `Sample` needs one whitespace-separated word of text per top_logprobs position."""
        check_watched(requests, watchers)
        self.calls.append(list(requests))
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for req, watcher in zip(requests, watchers):
            sample = self._draw(req, prompt_text(req.prompt, req.continuation))
            confidences = sample_confidences(sample)
            words = sample.text.split() or [""]
            if len(words) < len(confidences):
                raise UserError(f"scripted sample {sample.text[:40]!r} has {len(words)} words for "
                                f"{len(confidences)} top_logprobs positions; a watched one needs a word per token")
            for i, c in enumerate(confidences, start=1):
                if watcher.observe([c]) and i < len(confidences):
                    sample = cut_sample(sample, i, " ".join(words[:i]))
                    break
            out.append(sample)
        return out

    def _draw(self, req: GenerationRequest, text: str) -> Sample:
        """The next scripted completion of this prompt as a Sample."""
        completion = self._complete(text, self._drawn[text])
        self._drawn[text] += 1
        if isinstance(completion, Sample):
            update = {} if completion.prompt_tokens else {"prompt_tokens": len(text.split())}
            return completion.model_copy(update=update)
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
        return Sample(
            text=body,
            token_count=count,
            logprob_sum=mean_lp * count,
            token_logprobs=[mean_lp] * count if req.sampling.logprobs or req.sampling.top_logprobs else None,
            top_logprobs=_scripted_top(words or [""], mean_lp, req.sampling.top_logprobs),
            finish_reason="stop",
            stop_reason=stop_reason,
            prompt_tokens=len(text.split()),
        )


def _scripted_top(words: list[str], mean_lp: float, k: int) -> list[dict[str, float]] | None:
    """Top-k logprobs for a scripted completion: each word at the mean logprob, then k - 1 made-up
    alternatives one nat apart (enough for confidence scorers' plumbing; script a `Sample` for exact values)."""
    if not k:
        return None
    return [{w: mean_lp, **{f"<alt{j}>": mean_lp - j for j in range(1, k)}} for w in words]
