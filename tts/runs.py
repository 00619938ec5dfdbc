"""A run folder: config.json, samples.jsonl and results.jsonl (append-only), metrics.json, run.lock.

A problem counts as finished once its line is in results.jsonl; its samples are written just before.
Opening a folder again drops whatever a crash left half-written or inconsistent (a torn last line,
samples of a problem without a result, a problem whose samples do not match its result line), so a
resumed run neither regenerates finished problems nor duplicates lines.

One process writes a folder at a time: `open` takes `run.lock` (an flock held for the run's life,
recording pid and host) and a second writer is refused with a `UserError`. The kernel drops the lock
when its process dies, so a lock file left by a killed run is taken over (with a log line). Readers
(`tts scale`, `results()`, `samples()`) need no lock: lines are appended whole and in order.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts.errors import UserError
from tts.types import Result, Usage, Verdict, finite_or_none

log = logging.getLogger(__name__)

# Fields of config.json that define the run; resuming with any of them changed is refused.
# (backend_options: the backend options given that change the answers; absent when there are none; shard: I/N of
# `tts eval --shard`, absent for a whole run.)
IDENTITY_KEYS = ("task", "task_options", "strategy", "strategy_options", "model", "backend", "sampling", "seed",
                 "dtype", "backend_options", "scorers", "shard")
# Strategy options added after run folders existed: unset (None), they leave a run's identity (and its folder
# name) as it was, so folders made before them still resume.
LATE_STRATEGY_OPTIONS = ("perturb",)


def strategy_identity(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The strategy options that identify a run: late options count only when set."""
    if options is None:
        return None
    return {k: v for k, v in options.items() if not (k in LATE_STRATEGY_OPTIONS and v is None)}


# What the backend reported it serves (`Backend.served_identity`); compared field by field on resume.
SERVED_KEY = "served_identity"
LOCK_FILE = "run.lock"


class _Line(BaseModel):
    """What a line of results.jsonl / samples.jsonl must hold to be read back (more fields may follow)."""

    model_config = ConfigDict(extra="allow")
    problem_id: str | int


class ResultLine(_Line):
    correct: bool | None = None
    n_samples: int = Field(0, ge=0)
    n_correct_samples: int = Field(0, ge=0)
    usage: Usage = Usage()


class SampleLine(_Line):
    index: int = Field(ge=0)
    text: str | None = None
    answer: str | None = None
    correct: bool | None = None
    mean_logprob: float | None = None
    completion_tokens: int | None = Field(None, ge=0)
    selection: list[Verdict] | None = None


def _read_lines(path: Path, kind: type[_Line]) -> list[dict[str, Any]]:
    """The JSON lines of a file, each checked against `kind`; a torn final line (a crash mid-write) is
    dropped. Any other line that cannot be read is a `UserError` naming the file and line: the folder
    is left as it is for the user to fix (or to choose another folder)."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        lineno = exc.object[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{lineno}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                        "fix or remove the line") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    what = "result" if kind is ResultLine else "sample"
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines) and not text.endswith("\n"):
                continue  # torn by a crash mid-write; the next `open` drops it
            raise UserError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: not a {what} line (a JSON {type(row).__name__}, expected an object)")
        try:
            kind.model_validate(row)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(p) for p in e["loc"])
            raise UserError(f"{path}:{lineno}: not a {what} line ({where}: {e['msg']}); fix or remove the line") \
                from None
        rows.append(row)
    return rows


def read_config(path: Path) -> dict[str, Any] | None:
    """A run's config.json (None if there is none); a `UserError` if it cannot be read."""
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{path} is not valid JSON ({reason}); restore it or choose another folder") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object; restore it or choose another folder")
    return config


def _write_atomic(path: Path, text: str) -> None:
    """Replace a file in one step: a reader (or a crash) sees the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    _write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """An exclusive flock on `run.lock`, held open until `release`; the file records who holds it."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise UserError(f"cannot write the folder {self.path.parent}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                if self._orphaned(fd, holder):
                    continue  # the file was replaced; lock the new one
                os.close(fd)
                raise UserError(self._in_use(holder)) from None
            except BaseException:
                os.close(fd)
                raise
            # A releasing holder unlinks the file before unlocking it: make sure we locked the file that
            # is at the path now, not one that was just removed.
            try:
                same = os.path.samestat(os.stat(self.path), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._holder(fd)
        if previous.get("pid") is not None:
            self._log_takeover(previous)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd

    def _orphaned(self, fd: int, holder: dict[str, Any]) -> bool:
        """A lock still held although its process (on this host) is dead: a process it forked inherited the
        lock (flock follows the open file into forked children). Such a lock guards nothing any more; the file
        is removed so that a fresh one can be locked. (Checked twice, so that a new holder that has not yet
        written its pid over the dead one's is never mistaken for an orphan.) Closes `fd` if it says True."""
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or _pid_alive(pid):
            return False
        time.sleep(0.2)
        if self._holder(fd) != holder:
            return False
        try:
            if not os.path.samestat(os.stat(self.path), os.fstat(fd)):
                os.close(fd)
                return True  # someone else replaced it meanwhile: try the new file
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(fd)
        log.warning("%s: taking over the lock of pid %s (no longer running), which a process it started "
                    "still held", self.path.parent, pid)
        return True

    def _in_use(self, holder: dict[str, Any]) -> str:
        folder = self.path.parent
        pid, host = holder.get("pid"), holder.get("host")
        if pid is None:
            return f"run folder {folder} is in use by another process; wait for it to finish or choose another --out"
        who = f"pid {pid} on {host}" + (f", since {holder['started']}" if holder.get("started") else "")
        if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            who += "; that process is gone but one it started still holds the lock"
        return (f"run folder {folder} is in use by another tts process ({who}); "
                "wait for it to finish or choose another --out")

    def _log_takeover(self, previous: dict[str, Any]) -> None:
        pid, host = previous.get("pid"), previous.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
            state = "not held (its pid now belongs to another process)"
        elif host == socket.gethostname():
            state = "no longer running"
        else:
            state = f"on {host}, not held"
        log.warning("%s: taking over the stale lock of pid %s (%s)", self.path.parent, pid, state)

    def __del__(self) -> None:  # a forgotten lock must not outlive its folder object
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(fd)):
                os.unlink(self.path)  # a clean exit leaves no lock file behind
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def served_identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`field: old -> new` for every field both identities record and that differs."""
    return [f"{SERVED_KEY}.{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]


@dataclass
class _Scan:
    results: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    dropped: list[str]
    raw_results: int
    raw_samples: int


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.samples_path = self.path / "samples.jsonl"
        self.results_path = self.path / "results.jsonl"
        self.metrics_path = self.path / "metrics.json"
        self.lock_path = self.path / LOCK_FILE
        self._lock = RunLock(self.lock_path)
        self._scanned: tuple[Any, _Scan] | None = None

    # ---- locking ---------------------------------------------------------------------------
    def acquire(self) -> None:
        """Become the folder's only writer (creating the folder); a `UserError` if another process is."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write the folder {self.path}: {exc.strerror or exc}") from None
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    @property
    def locked(self) -> bool:
        return self._lock.held

    @contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """`with run.lock():` hold the folder for a block (released after, unless it was held before)."""
        held = self._lock.held
        self.acquire()
        try:
            yield self
        finally:
            if not held:
                self.release()

    # ---- opening ---------------------------------------------------------------------------
    def open(self, config: dict[str, Any]) -> set[str]:
        """Lock, create or resume the run; return the ids of problems already finished.

        The lock stays held (until `release`) only if this succeeds.
        """
        held = self._lock.held
        self.acquire()
        try:
            config = self._check_identity(config)
            _write_atomic(self.config_path, json.dumps(config, indent=2, default=str) + "\n")
            return self._repair()
        except BaseException:
            if not held:
                self.release()
            raise

    def check_identity(self, config: dict[str, Any]) -> None:
        """Refuse (UserError) a folder that holds a different run, before an engine starts; what was served
        is compared later, by `open`, once the backend can say."""
        self._check_identity({k: v for k, v in config.items() if k != SERVED_KEY})

    def _check_identity(self, config: dict[str, Any]) -> dict[str, Any]:
        old = read_config(self.config_path)
        if old is None:
            return config
        def ident(cfg: dict[str, Any], key: str) -> Any:
            return strategy_identity(cfg.get(key)) if key == "strategy_options" else cfg.get(key)

        changed = [k for k in IDENTITY_KEYS if ident(old, k) != ident(config, k)]
        if changed:
            raise UserError(
                f"{self.path} holds a different run (differs in: {', '.join(changed)}); "
                "choose another --out folder"
            )
        served, before = config.get(SERVED_KEY), old.get(SERVED_KEY)
        if served is not None and before is None:
            log.warning("%s: config.json does not record what was served before (an older run folder); "
                        "resuming without checking that the backend serves the same model", self.path)
        elif served is not None and before is not None:
            diffs = served_identity_differences(before, served)
            if diffs:
                raise UserError(
                    f"{self.path} was generated by a different served model ({'; '.join(diffs)}); "
                    "resume it against the same model or choose another --out folder"
                )
            one_sided = sorted(before.keys() ^ served.keys())
            if one_sided:
                log.warning("%s: served identity field(s) %s recorded only %s; not compared", self.path,
                            ", ".join(one_sided), "now or before")
        elif served is None and before is not None:  # a caller that did not ask the backend: keep the record
            config = {**config, SERVED_KEY: before}
        return config

    def _scan(self) -> _Scan:
        """The consistent part of the folder: result and sample lines of finished problems, and the ids of
        problems dropped because their lines disagree (a repeated result line, missing or repeated samples).
        Cached while neither file changes (`tts scale` asks for results, then for samples)."""
        key = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None
                    for p in (self.results_path, self.samples_path))
        if self._scanned is not None and self._scanned[0] == key:
            return self._scanned[1]
        results = _read_lines(self.results_path, ResultLine)
        samples = _read_lines(self.samples_path, SampleLine)
        rows_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in results:
            rows_of[str(row["problem_id"])].append(row)
        indices_of: dict[str, list[Any]] = defaultdict(list)
        for row in samples:
            indices_of[str(row["problem_id"])].append(row.get("index"))
        bad = []
        for pid, rows in rows_of.items():
            indices = indices_of.get(pid, [])
            n = rows[0].get("n_samples", len(indices))  # (every writer records n_samples; be lenient anyway)
            if len(rows) != 1 or len(indices) != n or set(indices) != set(range(n)):
                bad.append(pid)
        good = set(rows_of) - set(bad)
        scan = _Scan(results=[r for r in results if str(r["problem_id"]) in good],
                     samples=[r for r in samples if str(r["problem_id"]) in good], dropped=bad,
                     raw_results=len(results), raw_samples=len(samples))
        self._scanned = (key, scan)
        return scan

    def _repair(self) -> set[str]:
        scan = self._scan()
        if scan.dropped:
            log.warning("%s: %d problem(s) had inconsistent lines (%s%s) and will be generated again", self.path,
                        len(scan.dropped), ", ".join(scan.dropped[:5]), ", ..." if len(scan.dropped) > 5 else "")
        if len(scan.results) != scan.raw_results or self._has_torn_line(self.results_path):
            _rewrite(self.results_path, scan.results)
        if len(scan.samples) != scan.raw_samples or self._has_torn_line(self.samples_path):
            _rewrite(self.samples_path, scan.samples)
        return {str(r["problem_id"]) for r in scan.results}

    @staticmethod
    def _has_torn_line(path: Path) -> bool:
        if not path.exists() or path.stat().st_size == 0:
            return False
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"

    def is_complete(self, config: dict[str, Any], problem_ids: list[str]) -> bool:
        """True if this folder holds the same run with every one of these problems finished (and consistent)."""
        old = read_config(self.config_path)
        if old is None:
            return False
        if any(old.get(k) != config.get(k) for k in IDENTITY_KEYS):
            return False
        return set(problem_ids) <= {str(r["problem_id"]) for r in self._scan().results}

    # ---- appending -------------------------------------------------------------------------
    def append(self, result: Result, oracle: list[Verdict], chosen_verdict: Verdict | None) -> None:
        """Write one finished problem: every sample, then its result line (which marks it finished)."""
        if not self._lock.held:
            raise RuntimeError(f"{self.path}: append without holding the run's lock (call open first)")
        lines = []
        for i, (cand, verdict) in enumerate(zip(result.candidates, oracle, strict=True)):
            row = {
                "problem_id": result.problem_id,
                "index": i,
                "text": cand.text,
                "answer": cand.answer,
                "completion_tokens": cand.completion_tokens,
                "mean_logprob": finite_or_none(cand.mean_logprob),
                "finish_reason": cand.finish_reason,
                "selection": [v.model_dump() for v in cand.verdicts],
                "trace": cand.trace.model_dump() if cand.trace is not None else None,  # per-token numbers
                "correct": verdict.passed,
                "oracle_feedback": verdict.feedback[:500],
                "oracle_isolation": verdict.isolation,  # code tasks: the sandbox the grading ran in
                "chosen": i == result.chosen,
                "info": cand.info,
            }
            lines.append(json.dumps(row) + "\n")
        row = {
            "problem_id": result.problem_id,
            "strategy": result.strategy,
            "answer": result.answer,
            "confidence": result.confidence,
            "chosen": result.chosen,
            "correct": bool(chosen_verdict and chosen_verdict.passed),
            "n_samples": len(result.candidates),
            "n_correct_samples": sum(bool(v.passed) for v in oracle),
            "usage": result.usage.model_dump(),
            "info": result.info,
        }
        with self.samples_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(lines))
        with self.results_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")

    # ---- reading ---------------------------------------------------------------------------
    def results(self) -> list[dict[str, Any]]:
        """Result lines of the finished, consistent problems (no lock needed)."""
        return self._scan().results

    def samples(self) -> Iterator[dict[str, Any]]:
        """Sample lines of the finished, consistent problems (no lock needed)."""
        yield from self._scan().samples

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_atomic(self.metrics_path, json.dumps(metrics, indent=2) + "\n")
