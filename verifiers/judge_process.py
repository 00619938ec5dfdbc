"""The judge: runs trusted test code against a candidate function it reaches only through a pipe.

Started by verifiers/code_judge.py as `python -I -S -B judge_process.py` with a JSON job on stdin;
prints one JSON report on stdout. No candidate code ever runs in this process: the function under
test is a proxy whose calls travel to the sandboxed candidate as plain values and come back as
plain values (verifiers/wire.py), so the candidate cannot patch builtins here, trace these
frames, find or call the reporting code, or hand over an object with a forged `__eq__`.

Modes:
* ``hidden``: exec the problem's own prompt (trusted: it defines the helpers the tests use), then
  the hidden test code, then `check(candidate)`; passed iff it returns without an exception and
  no call failed at the protocol level (timeout, malformed answer, the program ended).
* ``examples``: the public docstring examples one at a time, each with its own time limit; per
  example pass/fail with "expected X, got Y" feedback. After a call times out or the program
  ends, the remaining examples are reported as not run.
* ``loads``: only whether the program loaded and its entry point is callable.

Stdlib only; stdout carries the report and nothing else (the tests' own prints are captured).
"""

import ast
import builtins
import contextlib
import importlib.util
import io
import json
import os
import reprlib
import sys
import time


def _load_wire(path):
    spec = importlib.util.spec_from_file_location("_tts_wire", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Fault(BaseException):
    """A call that did not produce an answer: timeout, protocol violation, or the program ended.

    A BaseException so that test code's `except Exception` cannot swallow it.
    """

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind  # "timeout" | "ended" | "protocol"


class Channel:
    """The judge's end of the pipe pair; remembers the first fault so the verdict can see it."""

    def __init__(self, wire, req_fd, resp_fd, deadline):
        self.wire, self.req_fd, self.resp_fd = wire, req_fd, resp_fd
        self.deadline = deadline
        self.call_deadline = deadline
        self.fault = None
        self.next_id = 0
        self.captured = None  # the candidate's stdout during the current example (examples mode)

    def ready(self):
        try:
            message = self.wire.read_frame(self.resp_fd, self.deadline)
        except self.wire.TimedOut:
            raise self._fail("timeout", "the program did not finish loading in time") from None
        except self.wire.Closed:
            raise self._fail("ended", "the program crashed or exited before serving its function") from None
        except self.wire.WireError as e:
            raise self._fail("protocol", "the program broke the call protocol: %s" % e) from None
        if message.get("ready") is not True:
            raise self._fail("protocol", "the program broke the call protocol: no ready message") from None
        return message.get("callable") is True

    def _fail(self, kind, message):
        if self.fault is None:
            self.fault = Fault(kind, message)
        return self.fault

    def call(self, args, kwargs):
        if self.fault is not None:
            raise self.fault
        wire = self.wire
        try:
            request = {"id": self.next_id, "args": wire.encode(list(args)), "kwargs": wire.encode(dict(kwargs))}
        except wire.WireError as e:  # the test passed something that is not a plain value
            raise TypeError("judge: cannot pass this argument to the candidate: %s" % e) from None
        try:
            wire.write_frame(self.req_fd, request)
            reply = wire.read_frame(self.resp_fd, min(self.deadline, self.call_deadline))
            if reply.get("id") != self.next_id:
                raise wire.WireError("answer to the wrong call")
            self.next_id += 1
            out = reply.get("out")
            if self.captured is not None and type(out) is str and out:
                self.captured = (self.captured + out[-300:])[-300:]  # clipped here, whatever was sent
            if "ok" in reply:
                return wire.decode(reply["ok"])
            err = reply.get("err")
            if not (type(err) is list and len(err) == 2 and all(type(x) is str for x in err)):
                raise wire.WireError("malformed error answer")
        except wire.TimedOut:
            raise self._fail("timeout", "a call did not return in time") from None
        except (wire.Closed, BrokenPipeError):
            raise self._fail("ended", "the program ended during a call") from None
        except (wire.WireError, OSError) as e:
            raise self._fail("protocol", "the program broke the call protocol: %s" % e) from None
        raise _as_exception(err[0], err[1])


# Raised inside map(), filter(), iter(f, sentinel) or a generator, these end a loop quietly instead
# of failing the test: a candidate's StopIteration must never become one here.
_CONTROL_FLOW = (StopIteration, StopAsyncIteration)


def _as_exception(name, message):
    """The candidate's exception as a fresh builtin exception of the same name (never its object)."""
    name, message = name[:100], message[:500]  # clipped here: the candidate's own clip is only a claim
    cls = getattr(builtins, name, None)
    if (isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins"
            and not issubclass(cls, _CONTROL_FLOW)):
        try:
            exc = cls(message)
        except Exception:  # noqa: BLE001 - constructors with other signatures
            exc = RuntimeError("%s: %s" % (name, message))
    else:
        exc = RuntimeError("%s: %s" % (name, message))
    exc.candidate_type = name[:100]
    exc.candidate_message = message[:500]
    return exc


def _proxy(channel):
    def candidate(*args, **kwargs):
        return channel.call(args, kwargs)

    return candidate


def _namespace(context, entry_point, proxy):
    ns = {"__name__": "__judge__", "__builtins__": builtins}
    if context:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(context, "<prompt>", "exec"), ns)
        except Exception:  # noqa: BLE001 - a prompt that is not runnable Python defines nothing
            pass
    if entry_point:
        ns[entry_point] = proxy
    return ns


def _describe(e):
    name = getattr(e, "candidate_type", type(e).__name__)
    message = getattr(e, "candidate_message", str(e))
    return "%s: %s" % (name, message) if message else name


def run_hidden(channel, job):
    ns = _namespace(job.get("context"), job.get("entry_point"), _proxy(channel))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(job["tests"], "<tests>", "exec"), ns)
            ns[job.get("check", "check")](_proxy(channel))
    except Fault:
        pass
    except AssertionError as e:
        line = _test_line(e, job["tests"])
        return "failed", "assertion failed" + (" at " + line if line else "") + (": %s" % e if str(e) else "")
    except Exception as e:  # noqa: BLE001 - the candidate's exception surfaced through a test
        return "failed", "raised " + _describe(e)
    if channel.fault is not None:
        return ("timeout" if channel.fault.kind == "timeout" else "failed"), str(channel.fault)
    return "passed", "all hidden tests passed"


def _test_line(e, tests):
    tb = e.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<tests>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return ""
    lines = tests.splitlines()
    return "line %d: %s" % (line, lines[line - 1].strip()[:200]) if 0 < line <= len(lines) else "line %d" % line


class _ShortRepr(reprlib.Repr):
    """repr for feedback: bounded in size and in time (a huge int is described, never converted)."""

    def __init__(self):
        super().__init__()
        self.maxstring = self.maxother = 200
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 20
        self.maxlevel = 4

    def repr_int(self, x, level):
        return repr(x) if x.bit_length() <= 1000 else "<a %d-bit int>" % x.bit_length()


_short = _ShortRepr().repr


def _value(node, ns):
    return eval(compile(ast.Expression(node), "<example>", "eval"), ns)


def _check_example(src, ns):
    tree = ast.parse(src)
    node = tree.body[0] if len(tree.body) == 1 else None
    if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1:
        test = node.test
        if isinstance(test.ops[0], ast.Eq):
            got, want = _value(test.left, ns), _value(test.comparators[0], ns)
            return None if got == want else "expected %s, got %s" % (_short(want), _short(got))
        left = test.left
        if (isinstance(test.ops[0], ast.Lt) and isinstance(left, ast.Call) and getattr(left.func, "id", "") == "abs"
                and len(left.args) == 1 and isinstance(left.args[0], ast.BinOp)
                and isinstance(left.args[0].op, ast.Sub)):
            got, want = _value(left.args[0].left, ns), _value(left.args[0].right, ns)
            tol = _value(test.comparators[0], ns)
            if abs(got - want) < tol:
                return None
            return "expected %s (within %s), got %s" % (_short(want), _short(tol), _short(got))
    exec(compile(tree, "<example>", "exec"), ns)
    return None


def run_examples(channel, job):
    ns = _namespace(job.get("context"), job.get("entry_point"), _proxy(channel))
    per_example = float(job["example_timeout"])
    results, stop = [], None
    for src in job["tests"]:
        if stop:
            results.append([False, stop])
            continue
        channel.captured = ""
        channel.call_deadline = time.monotonic() + per_example
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                message = _check_example(src, ns)
        except Fault as f:
            if f.kind == "timeout":
                message = "timed out after %g s" % per_example
                stop = "not run: an earlier example timed out"
            else:
                message = str(f)
                stop = "not run: " + str(f)
        except AssertionError as e:
            message = "assertion failed" + (": %s" % e if str(e) else "")
        except Exception as e:  # noqa: BLE001
            message = "raised " + _describe(e)
        if message is not None and channel.captured:
            message += "\nstdout: " + channel.captured
        results.append([message is None, (message or "")[:500]])
    n_ok = sum(ok for ok, _ in results)
    status = "passed" if n_ok == len(results) and channel.fault is None else "failed"
    return status, "%d/%d examples passed" % (n_ok, len(results)), results


def _die_with_parent(parent):
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - the deadline still bounds this process
        pass
    if os.getppid() != parent:
        os._exit(1)


def _limit_self(timeout):
    """CPU time and memory bounds for this judge: decoding and formatting candidate values costs it."""
    import math
    import resource

    cpu = int(math.ceil(timeout)) + 5
    for which, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, 4 << 30)):
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError):
            pass


def judge(job, wire, req_fd, resp_fd):
    """Run one job against the candidate behind (req_fd, resp_fd); the report as a dict."""
    _limit_self(float(job["timeout"]))
    channel = Channel(wire, req_fd, resp_fd, time.monotonic() + float(job["timeout"]))
    report = {"ready": False, "callable": False, "examples": None}
    try:
        report["callable"] = channel.ready()
        report["ready"] = True
    except Fault as f:
        report.update(status="timeout" if f.kind == "timeout" else "failed", message=str(f))
    if report["ready"]:
        if not report["callable"] and job["mode"] != "loads":
            report.update(status="failed", message="the program does not define a callable %s" % job["entry_point"])
        elif job["mode"] == "hidden":
            report["status"], report["message"] = run_hidden(channel, job)
        elif job["mode"] == "examples":
            report["status"], report["message"], report["examples"] = run_examples(channel, job)
        else:
            ok = report["callable"]
            report.update(status="passed" if ok else "failed",
                          message="loads" if ok else "the program does not define a callable %s" % job["entry_point"])
    report["nonce"] = job.get("nonce")  # proves the report came from the process that got the job
    return report


def _report_failure():
    import traceback

    return {"status": "error", "message": "judge failure: " + traceback.format_exc()[-1500:]}


def main():
    """One job from stdin, its report on stdout (the fallback when the fork server is unavailable)."""
    job = json.loads(sys.stdin.read())
    _die_with_parent(job["parent_pid"])
    try:
        report = judge(job, _load_wire(job["wire_path"]), job["req_fd"], job["resp_fd"])
    except Exception:  # noqa: BLE001 - reported, never a silent pass
        report = _report_failure()
    os.close(job["req_fd"])  # the candidate's serve loop sees the end and returns
    sys.stdout.write(json.dumps(report))
    sys.stdout.flush()


def fork_server(sock_fd, wire_path):
    """Serve jobs from a unix socket: each message carries four descriptors (request pipe, response
    pipe, report pipe, and a pipe with the JSON job, so a job of any size fits); a forked child reads
    the job, judges it and writes the report.

    Forking a warm, single-threaded interpreter costs about a millisecond where a fresh judge
    interpreter costs tens (json, ast and re imports); no job can affect another or this process.
    """
    import signal
    import socket

    # No death signal: it would fire when the *thread* that started us ends. The toolkit's end of
    # the socket closes when its process dies (however it dies), and then recv returns nothing.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    wire = _load_wire(wire_path)
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 64, 4)
        except InterruptedError:
            continue
        if not data:
            return  # the toolkit closed its end
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            continue
        req_fd, resp_fd, report_fd, job_fd = fds
        if os.fork() == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                with os.fdopen(job_fd, "rb") as f:
                    job = json.loads(f.read())
                report = judge(job, wire, req_fd, resp_fd)
            except BaseException:  # noqa: BLE001
                report = _report_failure()
            try:
                os.close(req_fd)
                with os.fdopen(report_fd, "w") as out:
                    out.write(json.dumps(report))
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fork-server":
        fork_server(int(sys.argv[2]), sys.argv[3])
    else:
        main()
