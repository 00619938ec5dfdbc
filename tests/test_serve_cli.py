"""The `tts serve` command itself, as a user runs it: a subprocess on a free 127.0.0.1 port (--port 0), its
backend the fake OpenAI-compatible server, answered through the openai client, then Ctrl-C (SIGINT): the
server exits 0 and the port is free again."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import openai
import pytest

from tests.fake_openai_server import ANSWER, FakeOpenAIServer


def test_tts_serve_answers_through_the_client_and_stops_on_sigint(tmp_path):
    with FakeOpenAIServer(lifetime=120) as fake:
        cmd = [sys.executable, "-m", "tts.cli", "serve", "--port", "0", "--backend", "openai", "--base-url",
               fake.url, "--scorer", "none", "--api-key", "k3y", "--max-budget", "4"]
        env = {**os.environ, "TTS_CACHE_DIR": str(tmp_path / "cache")}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=tmp_path)
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()  # printed once the engine (here: the fake server) is ready
            found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", banner)
            assert found, banner
            port = int(found.group(1))
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k3y", max_retries=0, timeout=30)
            deadline = time.monotonic() + 30
            while True:  # uvicorn starts listening just after the banner
                try:
                    response = client.chat.completions.create(
                        model="self-consistency:n=3", messages=[{"role": "user", "content": "6 * 7?"}], max_tokens=32)
                    break
                except openai.APIConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert response.choices[0].message.content == ANSWER
            assert response.model_extra["tts"]["answer"] == "42"
            assert response.usage is not None and response.usage.completion_tokens > 0
            with pytest.raises(openai.BadRequestError, match="budget cap of 4"):  # --max-budget reached the app
                client.chat.completions.create(model="self-consistency:n=5", messages=[{"role": "user", "content": "x"}])
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        with socket.socket() as s:  # nothing listens there any more (TIME_WAIT of closed connections aside)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
