"""Running untrusted Python programs: a separate, limited process whose pass requires running to the end.

The execution check follows ALGORITHMS.md section 8d (openai/human-eval): program = prompt +
completion + test code + `check(<entry_point>)`, run in a separate process with a time limit,
a fresh temporary directory and resource limits. human-eval forks the caller
(multiprocessing) and neuters dangerous functions inside the child; this module instead
starts a fresh interpreter (`sys.executable -I`) and relies on the kernel (rlimits, a
process group, a dedicated user id where it can get one) so that nothing a program does can
reach the caller. It is still not a security boundary against a determined attacker (see
"Limits" below); run untrusted models inside a container or VM without network.

How one run works (`run_program`):

* The caller writes the program into a fresh temporary directory and starts a small driver,
  `python -I -B -c _DRIVER`, with a clean environment, stdin a pipe (closed after use),
  stdout+stderr one pipe, a second "status" pipe, `start_new_session=True`.
* The driver reads a random per-run token from stdin (then points fd 0 at /dev/null), reads
  and deletes the program file (so the working directory is empty), sets rlimits (address
  space, CPU, file size, core 0, processes), and, when the caller is root, drops to a
  random unprivileged uid (see "Modes") so RLIMIT_NPROC applies and the program can neither
  signal the caller nor write the caller's files.
* It forks: the parent half stays as a *supervisor* (a child subreaper, so orphaned
  descendants are reparented to it); the child half puts itself in its own process group and
  executes the program in a fresh `__main__` module. Only if the program's code runs to its
  end does the child write `<token> done <pid>` on the status pipe. The supervisor reports
  the child's wait status, kills and reaps every descendant, and exits.
* A program passes only if its own process wrote `done` and then exited 0. `sys.exit(0)`,
  `os._exit(0)`, signals, killing the supervisor, closing the status fd: all fail, because
  the program cannot write a line that starts with the token it never saw.
* The caller reads both pipes incrementally (output keeps the first and last few KB and
  discards the rest, so 200 MB of prints cost nothing but pipe bandwidth), stops the run at
  the wall-clock limit (SIGTERM to the supervisor, then SIGKILL to both process groups and
  to every process of the sandbox uid), and deletes the directory.

Modes (chosen once per process by a probe, overridable with TTS_SANDBOX_MODE):

* ``uid``: the caller is root and the interpreter is readable by an unprivileged user: drop
  to a random uid in [1e9, 2e9) (one per concurrent run, so RLIMIT_NPROC counts only this
  run's processes).
* ``uid+read``: as ``uid`` but the interpreter lives somewhere an unprivileged user cannot
  read (here: /root/.pyenv): the sandbox keeps CAP_DAC_READ_SEARCH (read any file, write
  none) as an ambient capability so it can import the standard library and start Python
  subprocesses. It can read files it could not otherwise read; it cannot modify them.
* ``none``: the caller is not root (or cannot change uid): the program runs as the caller's
  user; RLIMIT_NPROC is set to the user's current task count plus `max_procs`.

Limits (not solved here): in ``none`` mode as root RLIMIT_NPROC is not enforced by the
kernel (root is exempt), so fork bombs are bounded only by the time limit and
`sandbox_limits_processes()` is False; in ``none`` mode a program that kills its supervisor
and whose descendants leave its process group (setsid) can leave those descendants behind;
a program that deliberately searches its own memory for the token (frame introspection) can
forge a pass; in ``uid+read`` mode a program can read (not write) any file on the machine;
there is no network or filesystem isolation beyond the uid (files under /tmp
outside the run directory are left behind); the disk is bounded per file (RLIMIT_FSIZE),
not in total.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Literal

from pydantic import BaseModel


log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Sandbox
# --------------------------------------------------------------------------------------------

Status = Literal["passed", "failed", "timeout", "error"]


class ProgramResult(BaseModel):
    """Outcome of one sandboxed run.

    status: "passed" (the program's code ran to its end and its process exited 0),
    "failed" (an exception, a failed assert, an early exit of any kind, a signal),
    "timeout" (still running at the wall-clock limit, then killed), "error" (the program never
    started: it does not compile, or the harness could not launch it).
    """

    status: Status
    passed: bool
    output: str = ""
    returncode: int | None = None
    duration: float = 0.0


_DRIVER = r'''
import os, sys


def _main():
    (status_fd, prog_path, uid, keep_read, mem, nproc, fsize, cpu, watchdog) = (
        int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5]),
        int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]))
    token = b""
    while not token.endswith(b"\n"):
        chunk = os.read(0, 256)
        if not chunk:
            os._exit(3)
        token += chunk
    token = token.strip().decode()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    def report(line):
        try:
            os.write(status_fd, ("%s %s\n" % (token, line)).encode())
        except OSError:
            pass

    try:
        with open(prog_path, "rb") as f:
            source = f.read()
        os.unlink(prog_path)
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG

        def limit(which, value):
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))

        limit(resource.RLIMIT_CORE, 0)
        limit(resource.RLIMIT_FSIZE, fsize)
        limit(resource.RLIMIT_CPU, cpu)
        limit(resource.RLIMIT_NOFILE, 1024)
        if mem > 0:
            limit(resource.RLIMIT_AS, mem)
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        except Exception:
            libc = None
        if uid >= 0:
            limit(resource.RLIMIT_NPROC, nproc)
            if keep_read and libc.prctl(8, 1, 0, 0, 0) != 0:  # PR_SET_KEEPCAPS
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if keep_read:
                class Header(ctypes.Structure):
                    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

                class Data(ctypes.Structure):
                    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                                ("inheritable", ctypes.c_uint32)]

                bit = 1 << 2  # CAP_DAC_READ_SEARCH
                data = (Data * 2)()
                data[0].effective = data[0].permitted = data[0].inheritable = bit
                if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
                    raise OSError(ctypes.get_errno(), "capset")
                if libc.prctl(47, 2, 2, 0, 0) != 0:  # PR_CAP_AMBIENT_RAISE CAP_DAC_READ_SEARCH
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT)")
        elif nproc > 0 and os.getuid() != 0:
            me, tasks = os.getuid(), 0
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        if os.stat("/proc/" + d).st_uid == me:
                            tasks += len(os.listdir("/proc/%s/task" % d))
                    except OSError:
                        pass
            limit(resource.RLIMIT_NPROC, tasks + nproc)
        if libc is not None:
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries stay powerless
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to us
    except BaseException as e:
        report("error sandbox setup failed: %r" % (e,))
        os._exit(4)

    import traceback
    try:
        code = compile(source, "program.py", "exec", dont_inherit=True)
    except BaseException as e:
        traceback.print_exception(type(e), e, None)
        sys.stderr.flush()
        report("error program does not compile")
        os._exit(2)

    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.set_inheritable(status_fd, False)
        import builtins, faulthandler, linecache, types
        faulthandler.enable()
        text = source.decode("utf-8", "replace")
        linecache.cache["program.py"] = (len(text), None, text.splitlines(True), "program.py")
        module = types.ModuleType("__main__")
        module.__file__ = "program.py"
        module.__builtins__ = builtins
        sys.modules["__main__"] = module
        sys.argv = ["program.py"]
        report("start %d" % os.getpid())
        try:
            exec(code, module.__dict__)
            threading = sys.modules.get("threading")
            if threading is not None:  # like interpreter shutdown: wait for non-daemon threads
                for t in threading.enumerate():
                    if t is not threading.main_thread() and not t.daemon:
                        t.join()
        except BaseException as e:
            try:
                traceback.print_exception(type(e), e, e.__traceback__.tb_next)
            except BaseException:
                pass
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(1)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        report("done %d" % os.getpid())
        os._exit(0)

    import signal

    class Stop(BaseException):
        pass

    def stop(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)  # watchdog, in case the caller vanished
    signal.alarm(watchdog)
    report("child %d" % pid)
    try:
        _, status = os.waitpid(pid, 0)
        report("exit %d %d" % (pid, status))
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.alarm(0)

    def children():
        me, found = str(os.getpid()), []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d, "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if fields[1].decode() == me:
                    found.append(int(d))
        return found

    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if uid >= 0:
        try:
            os.kill(-1, signal.SIGKILL)  # every process of this run's uid but us
        except OSError:
            pass
    for _ in range(200):
        kids = children()
        if not kids:
            break
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
    report("clean")
    os._exit(0)


_main()
'''

_MIN_PATH = "/usr/local/bin:/usr/bin:/bin"
_UID_LO, _UID_HI = 1_000_000_000, 2_000_000_000
_mode_lock = threading.Lock()
_mode: str | None = None
_uids_lock = threading.Lock()
_uids_in_use: set[int] = set()


def sandbox_mode() -> str:
    """The isolation mode this process uses ("uid", "uid+read" or "none"); probed once."""
    global _mode
    with _mode_lock:
        if _mode is None:
            _mode = _probe_mode()
            log.info("code sandbox mode: %s", _mode)
        return _mode


def sandbox_limits_processes() -> bool:
    """Whether RLIMIT_NPROC actually bounds a program's processes (the kernel exempts root)."""
    return sandbox_mode() != "none" or os.getuid() != 0


def _probe_mode() -> str:
    forced = os.environ.get("TTS_SANDBOX_MODE")
    if forced in ("uid", "uid+read", "none"):
        return forced
    if os.geteuid() != 0:
        return "none"
    probe = (
        "import decimal, fractions, json, os, subprocess, sys\n"
        "subprocess.run([sys.executable, '-I', '-c', 'import json'], check=True)\n"
        "open('probe.txt', 'w').write('ok')\n"
        "assert os.getuid() != 0\n"
    )
    for mode in ("uid", "uid+read"):
        try:
            result = _run(probe, timeout=20.0, memory_mb=1024, mode=mode)
        except Exception as e:  # noqa: BLE001 - any failure means "this mode does not work here"
            log.debug("sandbox mode %s failed: %r", mode, e)
            continue
        if result.passed:
            return mode
        log.debug("sandbox mode %s probe failed: %s %s", mode, result.status, result.output[-500:])
    log.warning("code sandbox: running as root but cannot drop privileges; programs run as root")
    return "none"


class _UidSlot:
    """A random unprivileged uid reserved for one run (unique among this process's runs)."""

    def __enter__(self) -> int:
        with _uids_lock:
            while True:
                uid = secrets.randbelow(_UID_HI - _UID_LO) + _UID_LO
                if uid not in _uids_in_use:
                    _uids_in_use.add(uid)
                    self.uid = uid
                    return uid

    def __exit__(self, *exc: object) -> None:
        with _uids_lock:
            _uids_in_use.discard(self.uid)


class _CappedBuffer:
    """Keeps the first and last `cap // 2` bytes of a stream and counts what it dropped."""

    def __init__(self, cap: int):
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            extra = len(self.tail) - self.half
            if extra > 0:
                del self.tail[:extra]
                self.dropped += extra

    def text(self) -> str:
        mid = f"\n... [{self.dropped} bytes of output truncated] ...\n" if self.dropped else ""
        return self.head.decode("utf-8", "replace") + mid + self.tail.decode("utf-8", "replace")


def run_program(
    source: str,
    timeout: float = 3.0,
    memory_mb: int = 1024,
    *,
    max_output: int = 8192,
    max_procs: int = 64,
    max_file_mb: int = 64,
) -> ProgramResult:
    """Run a Python program in a sandboxed subprocess (see the module docstring).

    `timeout` is wall-clock seconds for the program; `memory_mb` caps its address space (0: no
    cap); `max_output` bytes of stdout+stderr are kept (head and tail); `max_procs` bounds
    its processes and threads; `max_file_mb` bounds each file it writes. Thread-safe.
    A failure of the harness itself (no disk for the temporary directory, no interpreter)
    comes back as status "error", never as an exception.
    """
    start = time.monotonic()
    try:
        return _run(source, timeout, memory_mb, max_output=max_output, max_procs=max_procs,
                    max_file_mb=max_file_mb, mode=sandbox_mode())
    except Exception as e:  # noqa: BLE001 - the caller gets a result, whatever broke
        log.exception("code sandbox failed")
        return ProgramResult(status="error", passed=False, output=f"[sandbox] harness failure: {e!r}",
                             duration=time.monotonic() - start)


def _run(
    source: str,
    timeout: float,
    memory_mb: int,
    *,
    mode: str,
    max_output: int = 8192,
    max_procs: int = 64,
    max_file_mb: int = 64,
) -> ProgramResult:
    start = time.monotonic()
    if mode == "none":
        return _run_as(source, timeout, memory_mb, -1, False, max_output, max_procs, max_file_mb, start)
    with _UidSlot() as uid:
        return _run_as(source, timeout, memory_mb, uid, mode == "uid+read", max_output,
                       max_procs, max_file_mb, start)


def _run_as(
    source: str, timeout: float, memory_mb: int, uid: int, keep_read: bool, max_output: int,
    max_procs: int, max_file_mb: int, start: float,
) -> ProgramResult:
    token = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="tts-run-")
    out = _CappedBuffer(max_output)
    status_lines: list[list[str]] = []
    proc: subprocess.Popen | None = None
    fds: list[int] = []
    try:
        prog_path = os.path.join(workdir, ".program.py")
        fd = os.open(prog_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(source.encode("utf-8", "surrogatepass"))
        if uid >= 0:
            os.chown(workdir, uid, uid)
        out_r, out_w = os.pipe()
        st_r, st_w = os.pipe()
        fds += [out_r, out_w, st_r, st_w]
        try:
            import fcntl

            fcntl.fcntl(out_r, fcntl.F_SETPIPE_SZ, 1 << 20)
        except (ImportError, AttributeError, OSError):
            pass
        env = {"PATH": _MIN_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
               "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        args = [sys.executable, "-I", "-B", "-c", _DRIVER, str(st_w), prog_path, str(uid),
                "1" if keep_read else "0", str(memory_mb << 20 if memory_mb > 0 else 0),
                str(max_procs), str(max_file_mb << 20), str(math.ceil(timeout) + 1),
                str(math.ceil(timeout) + 5)]
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=out_w, stderr=out_w, pass_fds=(st_w,),
                cwd=workdir, env=env, start_new_session=True, close_fds=True)
        except OSError as e:
            return ProgramResult(status="error", passed=False, output=f"[sandbox] cannot start: {e}",
                                 duration=time.monotonic() - start)
        for fd in (out_w, st_w):
            os.close(fd)
            fds.remove(fd)
        try:
            proc.stdin.write(token.encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass
        timed_out = _pump(proc, out_r, st_r, out, status_lines, token, start + timeout)
    finally:
        child_pid = _first_int(status_lines, "child")
        if proc is not None:
            clean = any(f[0] == "clean" for f in status_lines)
            _kill_everything(proc, child_pid, uid, clean)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if sys.version_info >= (3, 12):
            shutil.rmtree(workdir, onexc=_force_remove)
        else:
            shutil.rmtree(workdir, onerror=_force_remove)
    return _result(status_lines, proc, timed_out, child_pid, out, timeout, time.monotonic() - start)


def _pump(proc: subprocess.Popen, out_r: int, st_r: int, out: _CappedBuffer,
          status_lines: list[list[str]], token: str, deadline: float) -> bool:
    """Read output and status until the supervisor exits; stop it at the deadline.

    Returns whether the program was still running at the deadline.
    """
    sel = selectors.DefaultSelector()
    pending = bytearray()
    prefix = token.encode() + b" "

    def on_status(data: bytes) -> None:
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.startswith(prefix):
                status_lines.append(line[len(prefix):].decode("utf-8", "replace").split())
        if len(pending) > 4096:  # junk the program wrote to the status fd
            del pending[:-256]

    sel.register(out_r, selectors.EVENT_READ, out.add)
    sel.register(st_r, selectors.EVENT_READ, on_status)
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, None)
    except (AttributeError, OSError):
        pidfd = None
    timed_out = False
    stop_sent_at: float | None = None
    hard_stop = deadline + 5.0  # the supervisor's cleanup is bounded; this bounds the caller too
    try:
        while True:
            now = time.monotonic()
            program_ended = any(f[0] == "exit" for f in status_lines)
            if stop_sent_at is None and now >= deadline and not program_ended:
                timed_out = True
                stop_sent_at = now
                try:
                    proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass
            if (stop_sent_at is not None and now - stop_sent_at > 2.0) or now > hard_stop:
                break  # the supervisor does not answer: the caller kills everything
            if _exited(proc, pidfd):
                # drain what is already buffered, without waiting for stragglers
                _drain(sel, time.monotonic() + 0.5)
                break
            # until the deadline, sleep until it (the pidfd and pipes wake us); after it, poll
            step = deadline - now if stop_sent_at is None and not program_ended else 0.05
            wait = max(0.0, min(step, 0.05 if pidfd is None else 1.0))
            _read_ready(sel, sel.select(wait))
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    return timed_out


def _read_ready(sel: selectors.BaseSelector, ready: list) -> None:
    """Hand each ready pipe's bytes to its sink; unregister pipes at EOF."""
    for key, _ in ready:
        if key.data is None:
            continue
        try:
            data = os.read(key.fd, 1 << 16)
        except OSError:
            data = b""
        if data:
            key.data(data)
        else:
            sel.unregister(key.fd)


def _drain(sel: selectors.BaseSelector, until: float) -> None:
    """Read the pipes until EOF or `until` (a leftover grandchild may keep them open)."""
    while time.monotonic() < until:
        keys = [k for k in sel.get_map().values() if k.data is not None]
        if not keys:
            return
        ready = sel.select(max(0.0, until - time.monotonic()))
        if not ready:
            return
        _read_ready(sel, ready)


def _exited(proc: subprocess.Popen, pidfd: int | None) -> bool:
    """Whether the supervisor has exited, without reaping it (its pid keeps the group id safe)."""
    if pidfd is not None:
        import select

        return bool(select.select([pidfd], [], [], 0)[0])
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_everything(proc: subprocess.Popen, child_pid: int | None, uid: int, clean: bool) -> None:
    """Make sure nothing of the run survives, then reap the supervisor."""
    if proc.returncode is None:
        for pgid in (proc.pid, child_pid):
            if pgid and not clean:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
    if uid >= 0:
        for _ in range(100):
            pids = _pids_of_uid(uid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes owned by `uid`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat(f"/proc/{d}").st_uid != uid:
                continue
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            found.append(int(d))
    return found


def _force_remove(func, path, exc) -> None:  # noqa: ANN001 - shutil.rmtree onerror/onexc signature
    """rmtree fallback for entries the program made read-only."""
    try:
        parent = os.path.dirname(path)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _first_int(lines: list[list[str]], kind: str) -> int | None:
    for f in lines:
        if f[0] == kind and len(f) > 1 and f[1].lstrip("-").isdigit():
            return int(f[1])
    return None


def _result(status_lines: list[list[str]], proc: subprocess.Popen | None, timed_out: bool,
            child_pid: int | None, out: _CappedBuffer, timeout: float, duration: float) -> ProgramResult:
    """Turn what the driver reported into a status (see `ProgramResult`)."""
    kinds = {f[0] for f in status_lines}
    errors = [" ".join(f[1:]) for f in status_lines if f[0] == "error"]
    exit_status = next((int(f[2]) for f in status_lines
                        if f[0] == "exit" and len(f) == 3 and child_pid is not None and f[1] == str(child_pid)), None)
    done = child_pid is not None and ["done", str(child_pid)] in status_lines
    returncode = os.waitstatus_to_exitcode(exit_status) if exit_status is not None else None
    notes = []
    if errors:
        status: Status = "error"
        notes.append(f"[sandbox] {errors[0]}")
    elif timed_out:
        status = "timeout"
        notes.append(f"[sandbox] time limit of {timeout:g} s exceeded")
    elif done and exit_status == 0:
        status = "passed"
    elif "start" not in kinds:
        status = "error"
        notes.append("[sandbox] the program did not start (driver exit code %s)"
                     % (proc.returncode if proc is not None else None))
    else:
        status = "failed"
        if exit_status is None:
            notes.append("[sandbox] the program's supervisor was killed")
        elif returncode is not None and returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = str(-returncode)
            notes.append(f"[sandbox] the program was killed by {name}")
        elif not done:
            notes.append(f"[sandbox] the program exited before reaching its end (exit code {returncode})")
    text = out.text()
    if notes:
        text = (text + ("\n" if text and not text.endswith("\n") else "") + "\n".join(notes))
    return ProgramResult(status=status, passed=status == "passed", output=text,
                         returncode=returncode, duration=duration)


