"""Running untrusted Python programs: an isolated, limited process tree whose pass requires running to the end.

The execution check follows openai/human-eval (docs/code-verification.md): a program runs in a
separate process with a time limit and resource limits. human-eval forks the caller and neuters
dangerous functions inside the child; here a fresh interpreter runs the program inside
bubblewrap (namespaces), in a per-run cgroup, as an unprivileged user without capabilities, so
that nothing a program does can reach the caller, its files, its network or the machine.

How one run works (`run_program`):

* The caller starts `bwrap ... python -I -S -B -c <tts/sandbox/driver.py> <args>`, stdout +
  stderr on one pipe, a second "status" pipe, and the caller's `extra_fds` (same numbers). With a
  writable cgroup a tiny `sh` first writes its own pid into the run's fresh cgroup
  (`tts-<caller pid>-<n>`: memory = `memory_mb` for the whole tree, tasks = `max_procs` + ours) and
  then execs bwrap, so every process of the run is inside from the start.
* bwrap builds an empty root: read-only binds of /usr (and the /bin, /lib* links or dirs), a few
  /etc files (loader cache, time zone, passwd/group, alternatives) and the interpreter's real
  prefix (`sys.base_prefix`: the standard library only; not the venv, not the repository, not
  /root or /home; the package's tasks/data, which holds the hidden tests, and the package itself
  are masked if they lie under a bound path); private size-capped tmpfs for /tmp, /var/tmp,
  /dev/shm and the working directory /sandbox; a new /proc and a minimal /dev; new pid, net
  (a loopback of its own), ipc, uts and cgroup namespaces; `--die-with-parent`, `--new-session`,
  `--clearenv` + a minimal env; no_new_privs.
* The driver reads a random per-run token and then the program from stdin (nothing is written to
  disk), sets rlimits (address space per process, CPU, file size, core 0, processes), drops to a
  random unprivileged uid (root callers: every capability goes with it) and forks: the
  *supervisor* stays, the child runs the program in a fresh `__main__`. Only if the program's
  code runs to its end does the child write `<token> done <pid>` on the status pipe; the
  supervisor reports the wait status (and, without a memory cgroup, sums the tree's RSS every
  50 ms and kills it when over `memory_mb`), kills every other process of the run, and exits.
* A program passes only if its own process wrote `done` and then exited 0. `sys.exit(0)`,
  `os._exit(0)`, signals, killing the supervisor, closing the status fd: all fail.
* The caller reads both pipes (output keeps the first and last few KB), kills the run at the
  wall-clock limit (SIGKILL to bwrap: its pid namespace dies with it), and removes the cgroup.
  A cgroup OOM kill reads as a failed run ("out of memory"), never as a harness error.

Nothing outlives a run, even if the caller is SIGKILLed: bwrap dies with its parent and takes
the pid namespace with it; the tmpfs mounts vanish with the mount namespace; a small janitor
(`sh`, one per caller process, waiting for EOF on a pipe only the caller holds) removes the
caller's cgroups once it is gone, and the next caller removes `tts-<dead pid>-*` cgroups that a
caller killed together with its janitor left behind.

Modes (probed once per process; `TTS_SANDBOX_MODE=<mode>[+<memory>]` forces them, e.g.
`bwrap+rss-watch`, `uid`); `sandbox_isolation()` and `ProgramResult.isolation` say which ran:

* ``bwrap`` (root caller): privileged bubblewrap as above; the driver drops the uid.
* ``bwrap-userns`` (other users): bubblewrap in a user namespace of its own (`--unshare-all
  --unshare-user --disable-userns`); RLIMIT_NPROC counts per user namespace (Linux >= 5.14).
* No bubblewrap, or no namespaces: the older, weaker harness, with a loud warning: ``uid``
  (root: a random uid), ``uid+read`` (also CAP_DAC_READ_SEARCH, for an interpreter under /root:
  the program can read any file), ``none`` (the caller's user). The interpreter is the venv's,
  a host temp dir is the working dir; the file system, /tmp, the network and (in ``none`` mode)
  the caller's processes are not isolated.
* Memory: ``cgroup-v2`` or ``cgroup-v1`` (memory + pids controllers, under our own cgroup) when
  writable, else ``rss-watch`` (the supervisor's RSS sum: anonymous memory, checked every 50 ms;
  the tmpfs mounts are bounded by their size instead).

Limits (not solved here): no seccomp filter (the kernel's whole syscall surface is reachable,
e.g. a program may create user namespaces of its own in ``bwrap`` mode); a program that searches
its own memory for the token can forge a pass (verifiers/code_judge.py decides verdicts outside
the program for that reason); CPU is bounded per process (RLIMIT_CPU) and by the wall clock, not
shared fairly; in ``rss-watch`` mode a fast allocator can briefly exceed the limit between two
checks, and memory shared copy-on-write after fork counts once per process.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tts.sandbox.host import (
    CappedBuffer,
    cg_create,
    cg_oom_kills,
    cg_remove,
    cgroup_parents,
    first_int,
    force_remove,
    kill_everything,
    pump,
    remove_stale,
    start_janitor,
)

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "error"]


class ProgramResult(BaseModel):
    """Outcome of one sandboxed run.

    status: "passed" (the program's code ran to its end and its process exited 0),
    "failed" (an exception, a failed assert, an early exit of any kind, a signal, out of memory),
    "timeout" (still running at the wall-clock limit, then killed), "error" (the program never
    started: it does not compile, or the harness could not launch it). isolation: the sandbox
    that ran it (`sandbox_isolation()`).
    """

    status: Status
    passed: bool
    output: str = ""
    returncode: int | None = None
    duration: float = 0.0
    isolation: str = ""


_MIN_PATH = "/usr/local/bin:/usr/bin:/bin"
_UID_LO, _UID_HI = 1_000_000_000, 2_000_000_000
_WORKDIR = "/sandbox"
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "alternatives",
        "nsswitch.conf", "passwd", "group", "hosts", "mime.types")
_MODES = ("bwrap", "bwrap-userns", "uid", "uid+read", "none")
_MEMORY = ("cgroup-v2", "cgroup-v1", "rss-watch")
_DRIVER = (Path(__file__).with_name("driver.py")).read_text()
_lock = threading.Lock()
_uids_lock = threading.Lock()
_config: _Config | None = None
_uids_in_use: set[int] = set()
_bwrap_cache: dict[str, list[str]] = {}


@dataclass
class _Config:
    mode: str
    memory: str
    cgroups: dict[str, str] = field(default_factory=dict)  # "unified" | "memory" | "pids" -> parent dir

    @property
    def isolation(self) -> str:
        weaker = "" if self.mode.startswith("bwrap") else " (no bwrap: weaker)"
        return f"{self.mode}+{self.memory}{weaker}"


def sandbox_mode() -> str:
    """The process isolation this process uses: "bwrap", "bwrap-userns", "uid", "uid+read" or "none"."""
    return _configuration().mode


def sandbox_isolation() -> str:
    """What actually isolates a run here, e.g. "bwrap+cgroup-v1" or "uid+rss-watch (no bwrap: weaker)"."""
    return _configuration().isolation


def sandbox_limits_processes() -> bool:
    """Whether a program's process count is bounded (the kernel exempts root from RLIMIT_NPROC)."""
    cfg = _configuration()
    return cfg.mode != "none" or "pids" in cfg.cgroups or "unified" in cfg.cgroups or os.getuid() != 0


def _configuration() -> _Config:
    global _config
    with _lock:
        if _config is None:
            _config = _probe()
            log.info("code sandbox isolation: %s", _config.isolation)
        elif _config.cgroups:
            start_janitor(_config.cgroups)  # no-op unless we are a forked child of the prober
        return _config


# ------------------------------------------------------------------------------------------
# Probing: which isolation works here
# ------------------------------------------------------------------------------------------

_PROBE = (
    "import os, subprocess, sys, tempfile\n"
    "subprocess.run([sys.executable, '-I', '-c', 'import json'], check=True)\n"
    "open('probe.txt', 'w').write('ok')\n"
    "tempfile.TemporaryFile().close()\n"
    "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')]\n"
    "print('uid', os.getuid(), 'caps', caps[0])\n"
)


def _probe() -> _Config:
    forced = os.environ.get("TTS_SANDBOX_MODE", "").strip()
    forced_mode, forced_memory = forced, ""
    for m in _MEMORY:
        if forced.endswith("+" + m):
            forced_mode, forced_memory = forced[: -len(m) - 1], m
    if forced and forced_mode not in _MODES:
        raise ValueError(f"TTS_SANDBOX_MODE={forced!r}: expected <mode>[+<memory>], mode in {_MODES}, "
                         f"memory in {_MEMORY}")
    root = os.geteuid() == 0
    modes = [forced_mode] if forced_mode else ((["bwrap" if root else "bwrap-userns"] if shutil.which("bwrap") else [])
                                 + (["uid", "uid+read", "none"] if root else ["none"]))
    cfg = _Config("none", "rss-watch")
    for mode, memory in itertools.product(modes, [forced_memory] if forced_memory else _MEMORY):
        parents = cgroup_parents(memory)
        if memory != "rss-watch" and not parents:
            continue
        remove_stale(parents)
        candidate = _Config(mode, memory, parents)
        if (mode, memory) == ("none", "rss-watch") or _works(candidate):
            cfg = candidate
            break
    if cfg.cgroups:
        start_janitor(cfg.cgroups)
    if not cfg.mode.startswith("bwrap"):
        why = ("forced off (TTS_SANDBOX_MODE)" if forced else "not usable here" if shutil.which("bwrap")
               else "not installed")
        msg = (f"code sandbox: bubblewrap is {why}; untrusted programs run with the weaker '{cfg.isolation}'"
               f" isolation (no file system or network isolation). Install bubblewrap (apt-get install bubblewrap).")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
    elif cfg.memory == "rss-watch":
        log.warning("code sandbox: no writable cgroup; memory is bounded by an RSS watch (%s)", cfg.isolation)
    return cfg


def _works(cfg: _Config) -> bool:
    """Whether the probe program passes under `cfg` (unprivileged and, with bwrap, without capabilities)."""
    try:
        result = _run(_PROBE, cfg, 20.0, 1024, 8192, 64, 64, ())
    except Exception as e:  # noqa: BLE001 - any failure means "this does not work here"
        log.debug("sandbox %s probe failed: %r", cfg.isolation, e)
        return False
    words = result.output.split()
    ok = (result.passed and len(words) >= 4 and (cfg.mode == "none" or words[1] != "0")
          and (not cfg.mode.startswith("bwrap") or words[3] == "0000000000000000"))
    if not ok:
        log.debug("sandbox %s probe failed: %s %s", cfg.isolation, result.status, result.output[-500:])
    return ok


# ------------------------------------------------------------------------------------------
# bubblewrap
# ------------------------------------------------------------------------------------------


def _bwrap_binds(interp: str, userns: bool) -> list[str]:
    """The static part of the bwrap command line for `interp` (computed once per interpreter)."""
    key = f"{interp}:{userns}"
    if key in _bwrap_cache:
        return _bwrap_cache[key]
    args = [shutil.which("bwrap") or "bwrap"]
    args += (["--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(os.getuid()), "--gid",
              str(os.getgid())] if userns
             else ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup"])
    args += ["--die-with-parent", "--new-session"]
    bound = []
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
            bound.append(d)
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    prefixes = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(interp))}
    for prefix in sorted(prefixes):
        if any(prefix == b or prefix.startswith(b + "/") for b in bound):
            continue
        parts = Path(prefix).parts
        for i in range(2, len(parts)):
            args += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
        args += ["--ro-bind", prefix, prefix]
        bound.append(prefix)
    for secret in _secret_dirs():
        s = str(secret)
        if any(s.startswith(b + "/") for b in bound):
            args += ["--tmpfs", s]
    args += ["--proc", "/proc", "--dev", "/dev"]
    _bwrap_cache[key] = args
    return args


def _secret_dirs() -> list[Path]:
    """The task data (hidden tests and answers), the package and the checkout it may sit in."""
    found = []
    spec = importlib.util.find_spec("tts.tasks")  # located, not imported: no plugin code runs here
    if spec is not None and spec.submodule_search_locations:
        found += [Path(p).resolve() / "data" for p in spec.submodule_search_locations]
    package = Path(__file__).resolve().parents[1]
    return found + [package, package.parent]


def _bwrap_command(cfg: _Config, interp: str, memory_mb: int, env: dict[str, str]) -> list[str]:
    size = str(max(memory_mb, 64) << 20)
    args = list(_bwrap_binds(interp, cfg.mode == "bwrap-userns"))
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--size", size, "--tmpfs", d]
    args += ["--perms", "0755", "--size", size, "--tmpfs", _WORKDIR, "--clearenv"]
    for k, v in env.items():
        args += ["--setenv", k, v]
    return args + ["--"]


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------


class _UidSlot:
    """A random unprivileged uid reserved for one run (unique among this process's runs)."""

    def __enter__(self) -> int:
        with _uids_lock:
            while True:
                self.uid = secrets.randbelow(_UID_HI - _UID_LO) + _UID_LO
                if self.uid not in _uids_in_use:
                    _uids_in_use.add(self.uid)
                    return self.uid

    def __exit__(self, *exc: object) -> None:
        with _uids_lock:
            _uids_in_use.discard(self.uid)


def run_program(
    source: str,
    timeout: float = 3.0,
    memory_mb: int = 1024,
    *,
    max_output: int = 8192,
    max_procs: int = 64,
    max_file_mb: int = 64,
    extra_fds: Sequence[int] = (),
) -> ProgramResult:
    """Run a Python program in the sandbox (see the module docstring).

    `timeout` is wall-clock seconds for the program; `memory_mb` caps each process's address
    space and, with a cgroup or the RSS watch, the whole tree (0: no cap); `max_output` bytes of
    stdout+stderr are kept (head and tail); `max_procs` bounds its processes and threads;
    `max_file_mb` bounds each file it writes. `extra_fds`: open file descriptors of the caller
    that the program's process inherits under the same numbers (e.g. a pipe pair to a judge).
    Thread-safe. A failure of the harness itself comes back as status "error", never raised.
    """
    start = time.monotonic()
    if any(fd < 3 for fd in extra_fds):
        raise ValueError(f"extra_fds must be >= 3, got {list(extra_fds)}")
    isolation = ""
    try:
        cfg = _configuration()
        isolation = cfg.isolation
        return _run(source, cfg, timeout, memory_mb, max_output, max_procs, max_file_mb, extra_fds)
    except Exception as e:  # noqa: BLE001 - the caller gets a result, whatever broke
        log.exception("code sandbox failed")
        return ProgramResult(status="error", passed=False, output=f"[sandbox] harness failure: {e!r}",
                             duration=time.monotonic() - start, isolation=isolation)


def _run(source: str, cfg: _Config, timeout: float, memory_mb: int, max_output: int, max_procs: int,
         max_file_mb: int, extra_fds: Sequence[int]) -> ProgramResult:
    start = time.monotonic()
    bwrap = cfg.mode.startswith("bwrap")
    interp = os.path.realpath(sys.executable) if bwrap else sys.executable
    if not os.access(interp, os.X_OK):
        return ProgramResult(status="error", passed=False, output=f"[sandbox] cannot start: no interpreter {interp}",
                             duration=time.monotonic() - start, isolation=cfg.isolation)
    token = secrets.token_hex(16)
    out = CappedBuffer(max_output)
    status_lines: list[list[str]] = []
    proc: subprocess.Popen | None = None
    fds: list[int] = []
    cgroups: list[str] = []
    workdir = None if bwrap else tempfile.mkdtemp(prefix=f"tts-run-{os.getpid()}-")
    timed_out, oom_kills = False, 0
    with _UidSlot() if cfg.mode in ("bwrap", "uid", "uid+read") else nullcontext(-1) as uid:
        try:
            out_r, out_w = os.pipe()
            st_r, st_w = os.pipe()
            fds += [out_r, out_w, st_r, st_w]
            try:
                import fcntl

                fcntl.fcntl(out_r, fcntl.F_SETPIPE_SZ, 1 << 20)
            except (ImportError, AttributeError, OSError):
                pass
            env = {"PATH": _MIN_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir or _WORKDIR,
                   "TMPDIR": workdir or "/tmp", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1"}
            nproc = ("set:%d" % max_procs if uid >= 0 or (cfg.mode == "bwrap-userns" and _kernel() >= (5, 14))
                     else "count:%d" % max_procs if cfg.mode == "none" else "none")
            rss = memory_mb << 20 if cfg.memory == "rss-watch" and memory_mb > 0 else 0
            # -S under bwrap: the base interpreter's .pth files can cost tens of ms per start (the
            # driver gives the program exit()/quit()/help() itself); the venv fallback keeps its site
            cmd = [interp, *(("-I", "-S", "-B") if bwrap else ("-I", "-B")), "-c", _DRIVER, str(st_w), str(uid),
                   "1" if cfg.mode == "uid+read" else "0", str(memory_mb << 20 if memory_mb > 0 else 0), nproc,
                   str(max_file_mb << 20), str(math.ceil(timeout) + 1), str(math.ceil(timeout) + 5), str(rss),
                   workdir or _WORKDIR, ",".join(map(str, extra_fds)) or "-", "1" if bwrap else "0", str(os.getpid())]
            if bwrap:
                cmd = _bwrap_command(cfg, interp, memory_mb, env) + cmd
            if cfg.cgroups:
                # pids: the program's budget plus the harness's own tasks (bwrap, its init, the supervisor)
                cgroups = cg_create(cfg.cgroups, memory_mb, max_procs + (3 if bwrap else 1))
                join = "".join(f'echo $$ > "${i + 1}" || exit 125; ' for i in range(len(cgroups)))
                cmd = ["/bin/sh", "-c", f'{join}shift {len(cgroups)}; exec "$@"', "sh",
                       *(os.path.join(d, "cgroup.procs") for d in cgroups), *cmd]
            try:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=out_w, stderr=out_w, pass_fds=(st_w, *extra_fds),
                    cwd=workdir or "/", env=env, start_new_session=True, close_fds=True)
            except OSError as e:
                return ProgramResult(status="error", passed=False, output=f"[sandbox] cannot start: {e}",
                                     duration=time.monotonic() - start, isolation=cfg.isolation)
            for fd in (out_w, st_w):
                os.close(fd)
                fds.remove(fd)
            assert proc.stdin is not None  # stdin=subprocess.PIPE
            try:
                proc.stdin.write(token.encode() + b"\n" + source.encode("utf-8", "surrogatepass"))
                proc.stdin.close()
            except OSError:
                pass
            timed_out = pump(proc, out_r, st_r, out, status_lines, token, start + timeout, hard_kill=bwrap)
        finally:
            child_pid = first_int(status_lines, "child")
            if proc is not None:
                kill_everything(proc, None if bwrap else child_pid, uid if not bwrap else -1,
                                 any(f[0] == "clean" for f in status_lines))
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if cgroups:
                oom_kills = cg_oom_kills(cgroups)
                cg_remove(cgroups)
            if workdir:
                if sys.version_info >= (3, 12):
                    shutil.rmtree(workdir, onexc=force_remove)
                else:
                    shutil.rmtree(workdir, onerror=force_remove)
    return _result(status_lines, proc, timed_out, child_pid, out, timeout, time.monotonic() - start,
                   cfg, oom_kills, memory_mb)


def _kernel() -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])


def _result(status_lines: list[list[str]], proc: subprocess.Popen | None, timed_out: bool, child_pid: int | None,
            out: CappedBuffer, timeout: float, duration: float, cfg: _Config, oom_kills: int,
            memory_mb: int) -> ProgramResult:
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
        code = proc.returncode if proc is not None else None
        notes.append("[sandbox] the program did not start (driver exit code %s%s)"
                     % (code, ": cannot join the run's cgroup" if code == 125 else ""))
    else:
        status = "failed"
        if "oom" in kinds or oom_kills:
            notes.append(f"[sandbox] out of memory: the run's processes together exceeded {memory_mb} MB")
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
    return ProgramResult(status=status, passed=status == "passed", output=text, returncode=returncode,
                         duration=duration, isolation=cfg.isolation)
