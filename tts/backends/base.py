"""The backend contract: batched, async generation (docs/architecture.md).

Two promises every backend keeps, whatever engine or server is behind it:

* `generate` returns exactly `request.sampling.n` samples per request. The base class enforces this
  for every subclass: a backend (usually a server) that answers with fewer samples is asked again
  for the missing ones (`TOP_UPS` times at most); if samples are still missing the call raises
  `IncompleteGeneration`, so a problem never goes on with (and is never saved with) part of its budget.
* `served_identity` says what was really served (model id, weights, engine version), so a run folder
  is never resumed against another model that happens to answer on the same address.

Watched generation (`generate_watched`) lets a strategy stop a sample while it is being generated: a
`Watcher` sees the DeepConf token confidences of the new tokens as they come and says when to stop (the
`deepconf` strategy's online mode, docs/algorithms/deepconf.md). An engine that can abort a running
request (vLLM in-process, the scripted backend) stops there and returns only the tokens generated; the
default, for a backend that cannot (an HTTP server answering a non-streamed request), generates the whole
sample, replays the watcher on it and cuts the sample at the stop, but counts every token it was paid for.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tts.confidence import token_confidence
from tts.errors import BackendError
from tts.types import GenerationRequest, Sample

log = logging.getLogger(__name__)

# How many times a short answer (fewer samples than requested) is topped up before the call fails.
TOP_UPS = 2
# finish_reason of a watched sample its watcher stopped before the end.
ABORTED = "abort"
# stop_reason of a watched sample generated whole and cut afterwards (its token_count counts every token).
WATCH_REPLAYED = "watch-replayed"


class IncompleteGeneration(BackendError):
    """The backend kept answering with fewer samples than requested."""


@dataclass
class EngineStats:
    """What an in-process engine did: steps, seconds inside its step function, sequences per step.

    Batch sizes come from the in-process scheduler: the sequences still running after each step (those
    that finished in it are not counted, so this slightly undercounts the step's batch). That is how
    strategies can show the engine really saw their requests together. Reset with `reset()`.
    """

    steps: int = 0
    step_seconds: float = 0.0
    sequences: int = 0  # summed over steps
    max_batch: int = 0

    def record(self, seconds: float, batch: int) -> None:
        self.steps += 1
        self.step_seconds += seconds
        self.sequences += batch
        self.max_batch = max(self.max_batch, batch)

    def since(self, earlier: EngineStats) -> EngineStats:
        """What happened after `earlier` (a copy taken then); max_batch is the overall maximum."""
        return EngineStats(self.steps - earlier.steps, self.step_seconds - earlier.step_seconds,
                           self.sequences - earlier.sequences, self.max_batch)

    def reset(self) -> None:
        self.steps, self.step_seconds, self.sequences, self.max_batch = 0, 0.0, 0, 0

    def summary(self) -> dict[str, float]:
        return {"steps": self.steps, "step_seconds": round(self.step_seconds, 3),
                "mean_batch": round(self.sequences / self.steps, 2) if self.steps else 0.0,
                "max_batch": self.max_batch}


class BackendOptions(BaseModel):
    """A backend's declared options; a backend subclasses this (as its `Options`) to declare its own.

    They come from `tts eval --backend-option KEY=VALUE` (and shortcuts such as `--base-url`), are
    validated here (an unknown key or a bad value is one line, exit 2), shown by `tts list` with their
    defaults, and passed to the backend's constructor as keyword arguments (so every field must be one).

    Options given explicitly are part of a run's identity (config.json `backend_options`; resuming with
    other values is refused) unless listed in `outside_identity`: settings that change how the answers
    are fetched (timeouts, retries, memory) but not what they are, and options that config.json records
    as identity keys of their own (vllm: dtype, seed).
    """

    model_config = ConfigDict(extra="forbid")

    outside_identity: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict[str, Any]:
        """The options given that belong in a run's identity: those set, less `outside_identity` (a backend
        whose option mixes both kinds, such as vllm's engine_kwargs, filters it further)."""
        return {k: v for k, v in self.model_dump(mode="json", exclude_unset=True).items()
                if k not in self.outside_identity}


# The problem (or served request) whose requests are being generated. The runner and `tts serve` set it
# around each problem's search; a backend that spreads requests over several servers sends every request
# with the same key to the same server, so one problem's prompts reuse that server's prefix cache.
AFFINITY: contextvars.ContextVar[str | None] = contextvars.ContextVar("tts_affinity", default=None)


class Watcher(ABC):
    """Watches one sample while it is generated and says when to stop it (`Backend.generate_watched`)."""

    @abstractmethod
    def observe(self, confidences: Sequence[float]) -> bool:
        """The DeepConf token confidences (`tts.confidence.token_confidence` of the top-k log-probabilities)
        of the newest tokens, in order; True: stop the sample now. Called once per engine step (or token),
        on the engine's thread for an in-process engine, so it must be quick and touch only its own state."""


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    model: str
    # Weights of the model, where the backend can tell (for FLOPs estimates: 2 x parameters x tokens).
    parameter_count: int | None = None
    # Engine step counters of an in-process engine (the runner reports the batches of its session);
    # None for backends that cannot see the engine (an HTTP server).
    stats: EngineStats | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        impl = cls.__dict__.get("generate")
        if impl is not None and not getattr(impl, "__isabstractmethod__", False):
            cls.generate = _exactly_n(impl)  # type: ignore[method-assign]

    @abstractmethod
    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """One list of `request.sampling.n` samples per request, in request order.

        Implementations must let many concurrent callers reach the engine together. They may return
        fewer samples than asked; the base class then asks again for the rest (see the module docstring).
        """

    async def generate_watched(self, requests: list[GenerationRequest], watchers: list[Watcher]) -> list[Sample]:
        """One sample per request (n = 1, top_logprobs >= 1), each stopped early once its watcher says so.

        A stopped sample has finish_reason "abort" and only the tokens generated up to the stop. This
        default is for a backend that cannot abort a request (an HTTP server's non-streamed answer): the
        samples are generated whole, each watcher is replayed on its sample one token at a time, and a
        stopped sample is cut there (text, log-probabilities) but keeps token_count = every token
        generated, since they were paid for, with stop_reason "watch-replayed". Its text is cut only where
        the backend reported the sampled tokens' texts (`Sample.tokens`); otherwise it stays whole.
        """
        check_watched(requests, watchers)
        out = await self.generate(requests)
        return [replay_watcher(samples[0], watcher) for samples, watcher in zip(out, watchers)]

    async def served_identity(self) -> dict[str, Any]:
        """What is really being served, as flat JSON-able fields (model id, weights fingerprint, engine
        version...). Stored in a run's config.json; resuming the run against a backend whose identity
        differs in any field is refused. Fields that change between calls (timestamps) do not belong here."""
        return {"backend": self.name, "model": self.model}

    async def aclose(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the engine or connection."""

    def info(self) -> dict[str, Any]:
        """What a run's config.json records about this backend."""
        return {"backend": self.name, "model": self.model}


def check_watched(requests: list[GenerationRequest], watchers: list[Watcher]) -> None:
    """Refuse watched requests the contract does not cover (a programming error of the caller)."""
    if len(requests) != len(watchers):
        raise ValueError(f"generate_watched got {len(requests)} requests and {len(watchers)} watchers; "
                         "give one watcher per request")
    for req in requests:
        if req.sampling.n != 1 or req.sampling.top_logprobs < 1:
            raise ValueError("generate_watched needs n = 1 and top_logprobs >= 1 in every request (got "
                             f"n = {req.sampling.n}, top_logprobs = {req.sampling.top_logprobs}): the watcher "
                             "reads each token's top-k log-probabilities")


def sample_confidences(sample: Sample) -> list[float]:
    """The token confidences of a sample drawn with top log-probabilities (BackendError without them)."""
    if not sample.top_logprobs:
        if sample.token_count == 0:
            return []
        raise BackendError("a watched sample came back without top log-probabilities")
    return [token_confidence(top) for top in sample.top_logprobs]


def cut_sample(sample: Sample, tokens: int, text: str, **update: Any) -> Sample:
    """The sample's first `tokens` tokens: the given text, the log-probabilities of those tokens only."""
    lps = sample.token_logprobs[:tokens] if sample.token_logprobs is not None else None
    fields: dict[str, Any] = dict(
        text=text, token_count=tokens, token_logprobs=lps,
        logprob_sum=sum(lps) if lps is not None else None,
        top_logprobs=sample.top_logprobs[:tokens] if sample.top_logprobs is not None else None,
        tokens=sample.tokens[:tokens] if sample.tokens is not None else None,
        finish_reason=ABORTED, stop_reason=None)
    fields.update(update)
    return sample.model_copy(update=fields)


def replay_watcher(sample: Sample, watcher: Watcher) -> Sample:
    """The default `generate_watched` on one finished sample: feed the watcher one token at a time; if it
    stops before the last token, cut the sample there but keep token_count (every token was generated)."""
    confidences = sample_confidences(sample)
    for i, c in enumerate(confidences, start=1):
        if watcher.observe([c]):
            if i == len(confidences):  # stopped on the last token: the sample is whole anyway
                return sample
            if sample.tokens is not None and len(sample.tokens) == len(confidences):
                text = "".join(sample.tokens[:i])
            else:
                log.warning("a watched sample was stopped after %d of %d tokens, but the backend did not say "
                            "which tokens it sampled: its text is left whole", i, len(confidences))
                text = sample.text
            # token_count: every token generated (paid for); no logprob_sum, whose mean would mix the two counts
            return cut_sample(sample, i, text, token_count=sample.token_count, logprob_sum=None,
                              stop_reason=WATCH_REPLAYED)
    return sample


def _exactly_n(impl: Any) -> Any:
    """Wrap a backend's `generate` so that it returns exactly n samples per request (or raises)."""
    if getattr(impl, "_exactly_n", False):
        return impl

    @functools.wraps(impl)
    async def generate(self: Backend, requests: list[GenerationRequest]) -> list[list[Sample]]:
        out = [list(samples) for samples in await impl(self, requests)]
        if len(out) != len(requests):
            raise BackendError(f"{self.name} backend answered {len(out)} sample lists for {len(requests)} requests")
        for attempt in range(1, TOP_UPS + 1):
            short = [i for i, req in enumerate(requests) if len(out[i]) < req.sampling.n]
            if not short:
                break
            log.warning("%s backend returned %s; asking again for the missing samples (top-up %d of %d)",
                        self.name, _shortfall(requests, out, short), attempt, TOP_UPS)
            top_ups = [_top_up_request(requests[i], requests[i].sampling.n - len(out[i]), attempt) for i in short]
            more = await impl(self, top_ups)
            for i, samples in zip(short, more):
                out[i].extend(samples)
        short = [i for i, req in enumerate(requests) if len(out[i]) < req.sampling.n]
        if short:
            raise IncompleteGeneration(
                f"{self.name} backend returned {_shortfall(requests, out, short)} even after {TOP_UPS} top-up "
                "requests; the problem is not finished")
        for i, req in enumerate(requests):
            if len(out[i]) > req.sampling.n:
                log.warning("%s backend returned %d samples for a request of n=%d; keeping the first %d",
                            self.name, len(out[i]), req.sampling.n, req.sampling.n)
                del out[i][req.sampling.n:]
        return out

    generate._exactly_n = True  # type: ignore[attr-defined]
    return generate


def _shortfall(requests: list[GenerationRequest], out: list[list[Sample]], short: list[int]) -> str:
    parts = [f"{len(out[i])} of {requests[i].sampling.n}" for i in short[:3]]
    more = f" (and {len(short) - 3} more requests)" if len(short) > 3 else ""
    return "samples " + ", ".join(parts) + more


def _top_up_request(req: GenerationRequest, missing: int, attempt: int) -> GenerationRequest:
    """The same request for the missing samples; a seeded request gets another seed (else it would
    repeat the samples already drawn)."""
    update: dict[str, Any] = {"n": missing}
    if req.sampling.seed is not None:
        update["seed"] = req.sampling.seed + 7919 * attempt
    return req.model_copy(update={"sampling": req.sampling.model_copy(update=update)})


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def weights_fingerprint(model_dir: str | Path) -> str | None:
    """A cheap fingerprint of a local model folder: the config and tokenizer files' contents and the
    weight files' names and sizes (weights are not read). None when the model is not a local folder."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for name in CONFIG_FILES:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES):
            h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    return h.hexdigest()[:16]
