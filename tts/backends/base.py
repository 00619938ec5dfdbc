"""The backend contract: batched, async generation (docs/architecture.md).

Two promises every backend keeps, whatever engine or server is behind it:

* `generate` returns exactly `request.sampling.n` samples per request. The base class enforces this
  for every subclass: a backend (usually a server) that answers with fewer samples is asked again
  for the missing ones (`TOP_UPS` times at most); if samples are still missing the call raises
  `IncompleteGeneration`, so a problem never goes on with (and is never saved with) part of its budget.
* `served_identity` says what was really served (model id, weights, engine version), so a run folder
  is never resumed against another model that happens to answer on the same address.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tts.errors import BackendError
from tts.types import GenerationRequest, Sample

log = logging.getLogger(__name__)

# How many times a short answer (fewer samples than requested) is topped up before the call fails.
TOP_UPS = 2


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
