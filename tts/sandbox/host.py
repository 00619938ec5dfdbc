"""The caller's side of a sandboxed run: pipes, per-run cgroups, cleanup (used by tts/sandbox/process.py)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger("tts.sandbox")
_serial = itertools.count(1)
_janitor: subprocess.Popen | None = None
_janitor_pid: int | None = None


class CappedBuffer:
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


def pump(proc: subprocess.Popen, out_r: int, st_r: int, out: CappedBuffer, status_lines: list[list[str]],
         token: str, deadline: float, hard_kill: bool = False) -> bool:
    """Read output and status until the driver exits; stop it at the deadline.

    At the deadline the driver gets SIGTERM (it then kills the program's processes itself), or
    SIGKILL with `hard_kill` (bwrap: its pid namespace dies with it). Returns whether the program
    was still running at the deadline.
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
    hard_stop = deadline + 5.0  # the driver's cleanup is bounded; this bounds the caller too
    try:
        while True:
            now = time.monotonic()
            program_ended = any(f[0] == "exit" for f in status_lines)
            if stop_sent_at is None and now >= deadline and not program_ended:
                timed_out = True
                stop_sent_at = now
                try:
                    proc.send_signal(signal.SIGKILL if hard_kill else signal.SIGTERM)
                except OSError:
                    pass
            if (stop_sent_at is not None and now - stop_sent_at > 2.0) or now > hard_stop:
                break  # the driver does not answer: the caller kills everything
            if _exited(proc, pidfd):
                _drain(sel, time.monotonic() + 0.5)  # what is already buffered, not stragglers
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
    """Whether the driver has exited, without reaping it (its pid keeps the group id safe)."""
    if pidfd is not None:
        import select

        return bool(select.select([pidfd], [], [], 0)[0])
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def pids_of_uid(uid: int) -> list[int]:
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


def force_remove(func, path, exc) -> None:  # noqa: ANN001 - shutil.rmtree onerror/onexc signature
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


def kill_everything(proc: subprocess.Popen, child_pid: int | None, uid: int, clean: bool) -> None:
    """Make sure nothing of the run survives, then reap the driver (or bwrap)."""
    if proc.returncode is None:
        for pgid in (proc.pid, child_pid):
            if pgid and not clean:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
    if uid >= 0:
        for _ in range(100):
            pids = pids_of_uid(uid)
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


def first_int(lines: list[list[str]], kind: str) -> int | None:
    for f in lines:
        if f[0] == kind and len(f) > 1 and f[1].lstrip("-").isdigit():
            return int(f[1])
    return None


def cgroup_parents(memory: str) -> dict[str, str]:
    """Our own cgroup directories where per-run cgroups can be made, by controller; {} if none."""
    if memory == "rss-watch":
        return {}
    try:
        mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    except OSError:
        return {}
    found: dict[str, str] = {}
    for m in mounts:
        sep = m.index("-")
        fstype, opts, root, point = m[sep + 1], m[sep + 3].split(","), m[3], m[4]
        for hid, controllers, path in own:
            if memory == "cgroup-v2" and fstype == "cgroup2" and hid == "0" and not controllers:
                names = ["unified"]
            elif memory == "cgroup-v1" and fstype == "cgroup":
                names = [c for c in ("memory", "pids") if c in opts and c in controllers.split(",")]
            else:
                continue
            rel = os.path.relpath(path, root) if path.startswith(root) else None
            parent = os.path.normpath(os.path.join(point, rel)) if rel is not None else None
            for name in names:
                if parent and os.path.isdir(parent) and os.access(parent, os.W_OK):
                    found.setdefault(name, parent)
    if "unified" in found:  # v2: our children need the memory controller (pids if it can be had)
        sub = Path(found["unified"], "cgroup.subtree_control")
        for controller in ("memory", "pids"):
            try:
                if controller not in sub.read_text().split():
                    sub.write_text(f"+{controller}")  # EBUSY where our cgroup holds processes itself
            except OSError:
                pass
        try:
            if "memory" not in sub.read_text().split():
                return {}
        except OSError:
            return {}
    return found if ("unified" in found or "memory" in found) else {}


def cg_create(parents: dict[str, str], memory_mb: int, tasks: int) -> list[str]:
    """A fresh cgroup per controller hierarchy, its limits written: memory of the whole tree, tasks."""
    name = f"tts-{os.getpid()}-{next(_serial)}"
    dirs = []
    try:
        for kind, parent in parents.items():
            d = os.path.join(parent, name)
            os.mkdir(d)
            dirs.append(d)
            limits = {"unified": {"memory.max": memory_mb << 20, "memory.swap.max": 0, "pids.max": tasks},
                      "memory": {"memory.limit_in_bytes": memory_mb << 20,
                                 "memory.memsw.limit_in_bytes": memory_mb << 20},
                      "pids": {"pids.max": tasks}}[kind]
            for key, value in limits.items():
                if memory_mb <= 0 and key.startswith("memory"):
                    continue
                try:
                    Path(d, key).write_text(str(value))
                except OSError:
                    if key in ("memory.max", "memory.limit_in_bytes") or kind == "pids":
                        raise
    except BaseException:
        cg_remove(dirs)
        raise
    return dirs


def cg_oom_kills(dirs: list[str]) -> int:
    for d in dirs:
        for name in ("memory.events", "memory.oom_control"):
            try:
                for line in Path(d, name).read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            except (OSError, ValueError):
                continue
    return 0


def cg_remove(dirs: list[str], wait: float = 2.0) -> bool:
    """Kill what is left in the cgroups and remove them; False if some are still busy."""
    until = time.monotonic() + wait
    left = list(dirs)
    while left:
        for d in list(left):
            try:
                os.rmdir(d)
                left.remove(d)
                continue
            except FileNotFoundError:
                left.remove(d)
                continue
            except OSError:
                pass
            try:
                for pid in Path(d, "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
            except OSError:
                pass
        if left and time.monotonic() > until:
            log.warning("code sandbox: cgroups still busy: %s", left)
            return False
        if left:
            time.sleep(0.002)
    return True


def remove_stale(parents: dict[str, str]) -> None:
    """Remove `tts-<pid>-*` cgroups (and fallback temp dirs) of callers that are gone."""
    def dead(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return False

    for parent in parents.values():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        stale = [os.path.join(parent, n) for n in names
                 if (m := re.fullmatch(r"tts-(\d+)-\d+", n)) and dead(int(m.group(1)))]
        if stale:
            log.info("code sandbox: removing %d stale cgroups", len(stale))
            cg_remove(stale, wait=1.0)
    tmp = tempfile.gettempdir()
    for n in os.listdir(tmp):
        if (m := re.fullmatch(r"tts-run-(\d+)-\w+", n)) and dead(int(m.group(1))):
            shutil.rmtree(os.path.join(tmp, n), ignore_errors=True)


def start_janitor(parents: dict[str, str]) -> None:
    """A tiny `sh` that removes this process's cgroups once this process is gone (even by SIGKILL).

    It waits for EOF on a pipe whose write end only this process holds; one per process (a
    forked child that uses the sandbox gets its own).
    """
    global _janitor, _janitor_pid
    if _janitor_pid == os.getpid():
        return
    script = ('read _; i=0; while [ $i -lt 100 ]; do left=0; for d in "$@"; do for c in "$d"/tts-%d-*; do '
              '[ -d "$c" ] || continue; for p in $(cat "$c/cgroup.procs" 2>/dev/null); do kill -9 $p 2>/dev/null;'
              ' done; rmdir "$c" 2>/dev/null || left=1; done; done; [ $left = 0 ] && exit 0; sleep 0.05;'
              ' i=$((i+1)); done') % os.getpid()
    try:
        _janitor = subprocess.Popen(["/bin/sh", "-c", script, "sh", *parents.values()],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True, cwd="/")
        _janitor_pid = os.getpid()
    except OSError as e:
        log.warning("code sandbox: no cgroup janitor (%r); stale cgroups go at the next start", e)
