"""The terminal during `tts eval`: the toolkit's progress and summary; the engine's start-up noise (its log
lines, Python warnings, C-level writes to fd 2) goes to the run folder's engine.log, `--verbose` shows it."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import pytest

from tts import registry
from tts.backends.scripted import ScriptedBackend
from tts.console import EngineLog, err
from tts.models.cache import stderr_progress

LOGGER = "vllm.fake"
NOISE = ("vllm-style log line", "C-level NUMA line", "FutureWarning: reduce_op", "print at import")


def make_noise() -> None:
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:  # like vLLM: a handler bound to the stdout it found at import
        logger.addHandler(logging.StreamHandler(sys.stdout))
        logger.propagate = False
    logger.warning("vllm-style log line")
    os.write(2, b"[W] C-level NUMA line\n")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown every time, not once per location
        warnings.warn("FutureWarning: reduce_op", FutureWarning, stacklevel=1)
    print("print at import")


class NoisyBackend(ScriptedBackend):
    name = "noisy"
    in_process_engine = True

    def __init__(self, model=None, **options):
        make_noise()
        stderr_progress("Converting the model (one-time) ...")  # the toolkit's own: stays on the terminal
        super().__init__(lambda text, i: ("#### 7", -0.1) if i % 2 else ("#### 3", -0.2))

    async def generate(self, requests):
        logging.getLogger(LOGGER).warning("vllm-style runtime line")
        return await super().generate(requests)


@pytest.fixture(autouse=True)
def fresh_logger():
    yield
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.propagate = True


@pytest.fixture
def noisy(monkeypatch):
    real = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: NoisyBackend if name == "noisy" else real(kind, name))
    monkeypatch.setattr(registry, "_BACKENDS", {})


def test_capture_sends_fd_level_and_python_noise_to_the_log(capfd):
    log = EngineLog()
    with log.capture():
        make_noise()
        print("ours", file=err(), flush=True)
    logging.getLogger(LOGGER).warning("after the start")
    log.close()
    out, error = capfd.readouterr()
    assert error == "ours\n" and out == ""
    text = log.path.read_text()
    assert all(n in text for n in NOISE) and "after the start" in text
    log.path.unlink()


def test_eval_shows_progress_and_summary_and_keeps_engine_output_in_the_run_folder(noisy, tmp_path, capfd):
    from tts.cli import main

    out = tmp_path / "run"
    assert main(["eval", "--task", "gsm8k", "--limit", "2", "-n", "4", "--backend", "noisy", "--out", str(out)]) == 0
    stdout, stderr = capfd.readouterr()
    for noise in (*NOISE, "runtime line"):
        assert noise not in stdout + stderr
    assert "Converting the model (one-time)" in stderr and "gsm8k/self-consistency" in stderr  # progress bar
    assert "engine output: engine.log" in stdout
    assert "the answer the strategy chose is correct" in stdout
    assert "coverage@4  " in stdout and "at least one of 4 samples is correct" in stdout
    log = (out / "engine.log").read_text()
    assert all(n in log for n in NOISE) and "vllm-style runtime line" in log


def test_verbose_shows_the_engine_output(noisy, tmp_path, capfd):
    from tts.cli import main

    out = tmp_path / "run"
    assert main(["eval", "--task", "gsm8k", "--limit", "1", "-n", "2", "--backend", "noisy", "--out", str(out),
                 "--verbose", "--no-progress"]) == 0
    stdout, stderr = capfd.readouterr()
    assert "C-level NUMA line" in stderr and "vllm-style log line" in stdout + stderr
    assert not (out / "engine.log").exists()
