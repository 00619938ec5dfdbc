"""What the terminal shows during `tts eval` / `tts solve`: the toolkit's own lines; the engine's go to a log.

Starting vLLM prints ~25 lines that say nothing about the run: its own WARNING log lines (on stdout),
Python FutureWarnings from torch, prints from its Triton probe, C-level messages from torch's CPU
runtime (NUMA binding) that bypass Python entirely, and the progress bars of checkpoint loading and
GGUF conversion. `EngineLog.capture()` sends all of it to a file: file descriptors 1 and 2 are pointed at
the log while the engine starts (the only way to catch C-level writes), and afterwards vLLM's logger
and Python warnings keep writing there. The toolkit's own messages (a first-use download or conversion)
still reach the terminal through `err()`, which is the real stderr while the descriptors are redirected.
`tts eval` moves the log into the run folder as `engine.log`; `--verbose` captures nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_terminal_err: TextIO | None = None


def err() -> TextIO:
    """The terminal's stderr, also while an engine start is being captured."""
    return _terminal_err or sys.stderr


class EngineLog:
    """An engine log file: a temporary file first (the run folder may not exist yet), then `move_to(path)`."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="tts-engine-", suffix=".log")
        os.close(fd)
        self.path = Path(name)
        self._stream: TextIO = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._stream.write(f"---- engine log, {time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()} ----\n")
        self._stream.flush()
        self._handlers: list[logging.StreamHandler] = []
        self._warnings_handler: logging.StreamHandler | None = None

    @contextmanager
    def capture(self) -> Iterator[EngineLog]:
        """Everything written to fd 1 and 2 inside the block goes to the log; `err()` stays the terminal.
        On leaving, vLLM's logger and Python warnings stay routed to the log until `close()`."""
        global _terminal_err
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
        previous, _terminal_err = _terminal_err, terminal
        logging.captureWarnings(True)
        warnings_logger = logging.getLogger("py.warnings")
        self._warnings_handler = logging.StreamHandler(self._stream)
        warnings_logger.addHandler(self._warnings_handler)
        warnings_logger.propagate = False
        python_streams = sys.stdout, sys.stderr  # not always fds 1 and 2 (pytest, notebooks): swapped too
        try:
            for fd in (1, 2):
                os.dup2(self._stream.fileno(), fd)
            sys.stdout = sys.stderr = self._stream
            yield self
        finally:
            sys.stdout, sys.stderr = python_streams
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            _terminal_err = previous
            terminal.close()
            self._route_vllm_logger()

    def _route_vllm_logger(self) -> None:
        """vLLM's handler writes to the stdout it found at import: point it (and its children's) at the log."""
        standard = (self._stream, sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        for name in ("vllm", *[n for n in logging.root.manager.loggerDict if n.startswith("vllm.")]):
            logger = logging.getLogger(name)
            for handler in logger.handlers:
                if type(handler) is logging.StreamHandler and handler.stream in standard:
                    handler.setStream(self._stream)
                    self._handlers.append(handler)

    def move_to(self, path: Path) -> None:
        """Append what was logged so far to `path` (a run folder's engine.log) and keep logging there."""
        self._stream.flush()
        with open(path, "a", encoding="utf-8") as out, open(self.path, encoding="utf-8", errors="replace") as src:
            out.write(src.read())
        stream = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        for handler in self._handlers:
            handler.setStream(stream)
        if self._warnings_handler is not None:
            self._warnings_handler.setStream(stream)
        self._stream.close()
        self.path.unlink(missing_ok=True)
        self._stream, self.path = stream, path

    def close(self, keep_at: Path | None = None) -> None:
        """Back to normal: vLLM's logger to stderr, warnings shown again; the file is kept (moved to `keep_at`,
        replacing what is there, if given)."""
        for handler in self._handlers:
            handler.setStream(sys.stderr)
        if self._warnings_handler is not None:
            logging.getLogger("py.warnings").removeHandler(self._warnings_handler)
            logging.captureWarnings(False)
        self._handlers = []
        self._stream.close()
        if keep_at is not None:
            keep_at.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.path), str(keep_at))
            self.path = keep_at


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def build_quietly(backend_name: str, verbose: bool, build):
    """`build()` (a backend), its engine start captured in an `EngineLog`: (backend, log). The log is None
    with `verbose` or for a backend without an in-process engine (its class's `in_process_engine`)."""
    from tts import registry
    from tts.errors import BackendError

    try:
        in_process = bool(getattr(registry.get("backends", backend_name), "in_process_engine", False))
    except Exception:  # noqa: BLE001 - an unknown name: build() reports it
        in_process = False
    if verbose or not in_process:
        return build(), None
    log = EngineLog()
    try:
        with log.capture():
            backend = build()
    except BackendError as exc:
        log.close()
        raise BackendError(f"{exc} (the engine's output: {log.path})") from exc
    except BaseException:
        log.close()
        log.path.unlink(missing_ok=True)
        raise
    return backend, log
