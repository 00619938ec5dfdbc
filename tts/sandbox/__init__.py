"""Running untrusted programs: bubblewrap, per-run cgroups, and a weaker fallback (see process.py).

Infrastructure, not a verifier: code verifiers (tts.verifiers.code) build on `run_program`.
"""

from tts.sandbox.process import (  # noqa: F401 - the public API
    ProgramResult,
    run_program,
    sandbox_isolation,
    sandbox_limits_processes,
    sandbox_mode,
)
