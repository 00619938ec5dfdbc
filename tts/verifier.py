"""The verifier contract: a blocking check of one candidate, shared by scorers and oracles (docs/architecture.md).

Behind a scorer (`tts.scorer.VerifierScorer`, which runs each check in a worker thread) a verifier sees
only the `Problem`, never the reference; an oracle is a verifier that the task builds around the hidden
`Reference` and that only the runner calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from tts.types import Candidate, Problem, Verdict


class Verifier(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        """Score one candidate in [0, 1]. Blocking: callers run it in a worker thread."""
