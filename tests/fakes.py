"""Test doubles shared by the unit tests. The toy task and the exact-match verifier live in `tts.testing`
(for plugin authors too); they are re-exported here under the names the tests have always used."""

from __future__ import annotations

from tts.testing import AnswerPresentVerifier, ExactMatchVerifier, ToyTask
from tts.types import Candidate, Problem, Verdict
from tts.verifier import Verifier

ExactVerifier = ExactMatchVerifier

__all__ = ["AnswerPresentVerifier", "EvenVerifier", "ExactMatchVerifier", "ExactVerifier", "ToyTask"]


class EvenVerifier(Verifier):
    """A selection verifier that sees only the candidate: passes even answers."""

    name = "even"
    description = "answer is an even integer"

    def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        ok = candidate.answer is not None and int(candidate.answer) % 2 == 0
        return Verdict(verifier=self.name, score=float(ok), passed=ok)
