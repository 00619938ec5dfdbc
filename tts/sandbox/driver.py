"""The driver of one sandboxed run: the trusted code that starts a program (see tts/sandbox/process.py).

This file is never imported: `tts.sandbox` passes its text to `python -I -B -c`, inside
bubblewrap when it can, so the program's mount namespace needs no copy of the repository.
Arguments (all strings): status fd, uid to drop to (-1: keep), keep CAP_DAC_READ_SEARCH (0/1),
address-space limit in bytes (0: none), RLIMIT_NPROC mode and value ("set:N", "count:N",
"none"), file-size limit, CPU seconds, watchdog seconds, RSS limit in bytes for the whole tree
(0: a cgroup does it), the working directory (given to the uid), the caller's extra fds
("3,4" or "-"), whether we run in our own pid namespace (0/1), and the caller's pid (its
death, even before we set PR_SET_PDEATHSIG, ends us). stdin: a random token line, then the program until EOF.

Status lines on the status fd, each "<token> <kind> ...": "error <why>", "start <pid>",
"child <pid>", "done <pid>" (written by the program's own process after its code ran to its
end), "exit <pid> <wait status>", "oom <bytes>" (the RSS watch killed the tree), "clean".
"""

import os
import sys


def _main():
    (status_fd, uid, keep_read, mem, nproc, fsize, cpu, watchdog, rss_limit, cwd, extra,
     own_pidns, caller) = sys.argv[1:14]
    status_fd, uid, mem, fsize, cpu = int(status_fd), int(uid), int(mem), int(fsize), int(cpu)
    watchdog, rss_limit, own_pidns = int(watchdog), int(rss_limit), own_pidns == "1"
    keep_read = keep_read == "1"
    extra_fds = [int(x) for x in extra.split(",")] if extra != "-" else []
    data = bytearray()
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        data += chunk
    token, sep, source = bytes(data).partition(b"\n")
    if not sep:
        os._exit(3)
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
        import _signal as signal  # not `signal`: its enums cost ~15 ms of startup per run
        import resource
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
        libc = None
        if not own_pidns or keep_read:  # bwrap already set no_new_privs and owns the namespace
            try:
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
            except Exception:
                pass
        how, _, count = nproc.partition(":")
        if how == "set":
            limit(resource.RLIMIT_NPROC, int(count))
        elif how == "count" and os.getuid() != 0:  # our user's current tasks + the budget
            me, tasks = os.getuid(), 0
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        if os.stat("/proc/" + d).st_uid == me:
                            tasks += len(os.listdir("/proc/%s/task" % d))
                    except OSError:
                        pass
            limit(resource.RLIMIT_NPROC, tasks + int(count))
        try:
            with open("/proc/self/oom_score_adj", "w") as f:  # the OOM killer takes the run first
                f.write("1000")
        except OSError:
            pass
        os.chdir(cwd)
        os.environ.pop("PWD", None)  # bwrap sets it; the program sees only the caller's minimal env
        if uid >= 0:
            os.chown(cwd, uid, uid)
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
                caps = (Data * 2)()
                caps[0].effective = caps[0].permitted = caps[0].inheritable = bit
                if libc.capset(ctypes.byref(Header(0x20080522, 0)), caps) != 0:
                    raise OSError(ctypes.get_errno(), "capset")
                if libc.prctl(47, 2, 2, 0, 0) != 0:  # PR_CAP_AMBIENT_RAISE CAP_DAC_READ_SEARCH
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT)")
        if libc is not None:
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries stay powerless
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to us
            libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: the caller's death ends us
            if not own_pidns and os.getppid() != int(caller):
                os._exit(5)  # the caller is already gone
    except BaseException as e:
        report("error sandbox setup failed: %r" % (e,))
        os._exit(4)

    def print_exception(e, tb):
        import linecache
        import traceback  # only when needed: they cost ~10 ms of startup
        text = source.decode("utf-8", "replace")
        linecache.cache["program.py"] = (len(text), None, text.splitlines(True), "program.py")
        traceback.print_exception(type(e), e, tb)

    try:
        code = compile(source, "program.py", "exec", dont_inherit=True)
    except BaseException as e:
        print_exception(e, None)
        sys.stderr.flush()
        report("error program does not compile")
        os._exit(2)

    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.set_inheritable(status_fd, False)
        if libc is not None:
            libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: die with the supervisor
        import builtins
        import faulthandler
        faulthandler.enable()
        if sys.flags.no_site:  # python -S (the site-packages' .pth files are slow): the builtins only
            import site
            site.setquit()
            site.setcopyright()
            site.sethelper()
        class Loader:  # tracebacks and inspect find the program's lines through linecache.lazycache
            @staticmethod
            def get_source(name):
                return source.decode("utf-8", "replace")

        module = type(sys)("__main__")
        module.__loader__ = Loader()
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
                print_exception(e, e.__traceback__.tb_next)
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

    for fd in extra_fds:  # only the program holds the caller's fds: EOF when it is gone
        try:
            os.close(fd)
        except OSError:
            pass

    class Stop(BaseException):
        pass

    def stop(signum, frame):
        raise Stop()

    def procs():
        """(pid, ppid, uid) of every live process we can see."""
        found = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d, "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                    if fields[0] not in (b"Z", b"X"):
                        found.append((int(d), int(fields[1]), os.stat("/proc/" + d).st_uid))
                except (OSError, IndexError, ValueError):
                    continue
        return found

    def tree():
        """The run's processes but us: the pid namespace, the uid, or our descendants."""
        me, every = os.getpid(), procs()
        if own_pidns:
            return [p for p, _, _ in every if p not in (1, me)]
        if uid >= 0:
            return [p for p, _, u in every if u == uid and p != me]
        kids, found, todo = {}, [], [me]
        for p, pp, _ in every:
            kids.setdefault(pp, []).append(p)
        while todo:
            more = kids.get(todo.pop(), [])
            found += more
            todo += more
        return found

    def rss(pids):
        total, page = 0, os.sysconf("SC_PAGE_SIZE")
        for p in pids:
            try:
                with open("/proc/%d/statm" % p, "rb") as f:
                    fields = f.read().split()
                total += (int(fields[1]) - int(fields[2])) * page  # resident minus file/shmem
            except (OSError, IndexError, ValueError):
                pass
        return total

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)  # watchdog, in case the caller vanished
    signal.alarm(watchdog)
    report("child %d" % pid)
    try:
        if rss_limit > 0:
            import select
            pidfd = os.pidfd_open(pid)
            while not select.select([pidfd], [], [], 0.05)[0]:
                used = rss(tree())
                if used > rss_limit:
                    report("oom %d" % used)
                    os.killpg(pid, signal.SIGKILL)
                    break
        _, status = os.waitpid(pid, 0)
        report("exit %d %d" % (pid, status))
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.alarm(0)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if uid >= 0 or own_pidns:
        try:
            os.kill(-1, signal.SIGKILL)  # every process of this run's uid or namespace but us
        except OSError:
            pass
    for _ in range(200):
        left = tree()
        if not left:
            break
        for k in left:
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
