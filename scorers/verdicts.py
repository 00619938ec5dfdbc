"""The code task's blocking verifiers as scorers: their checks run in worker threads."""

from __future__ import annotations

from tts.scorer import VerifierScorer
from tts.verifier import Verifier
from tts.verifiers.code import DocstringExamplesVerifier


class DocstringExamplesScorer(VerifierScorer):
    """Runs each program on the examples in its prompt's docstring (code tasks; a deployed system can)."""

    name = "docstring-examples"
    description = "code: the share of the prompt's own docstring examples a program passes (sandboxed)"

    def build_verifier(self) -> Verifier:
        return DocstringExamplesVerifier()
