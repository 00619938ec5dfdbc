"""The backend contract: batched, async generation (DESIGN.md, "Contracts")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from tts.types import GenerationRequest, Sample


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    model: str
    # Weights of the model, where the backend can tell (for FLOPs estimates: 2 x parameters x tokens).
    parameter_count: int | None = None

    @abstractmethod
    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """One list of `request.sampling.n` samples per request, in request order.

        Implementations must let many concurrent callers reach the engine together.
        """

    async def aclose(self) -> None:
        """Release the engine or connection."""

    def info(self) -> dict[str, Any]:
        """What a run's config.json records about this backend."""
        return {"backend": self.name, "model": self.model}
