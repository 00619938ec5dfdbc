"""tts-toolkit: test-time scaling and search for LLM reasoning.

    import tts
    result = tts.solve("What is 7 * 8?", strategy="self-consistency", n=8)
    result.answer, result.confidence, result.candidates, result.usage
"""

from tts.api import asolve, solve
from tts.metrics import pass_at_k
from tts.types import (
    Candidate,
    ChatMessage,
    GenerationRequest,
    Problem,
    Result,
    Sample,
    SamplingConfig,
    Usage,
    Verdict,
)

__all__ = [
    "solve", "asolve", "pass_at_k", "Candidate", "ChatMessage", "GenerationRequest", "Problem", "Result",
    "Sample", "SamplingConfig", "Usage", "Verdict",
]
