"""`tts eval` killed with SIGKILL at random moments and resumed, against a fake OpenAI-compatible server.

The run must end as if it had never been interrupted: every problem once in results.jsonl, exactly n
samples per problem, metrics.json agreeing with the results, the lock released, and nothing left behind
(no sandbox process, no `tts-run-*` folder). A second writer into the same folder is refused.

The server (a thread in this process, on 127.0.0.1) answers /models and /chat/completions: math
questions "What is A + B?" with a boxed sum (one sample in four wrong), HumanEval prompts with the
canonical solution (one in three broken), every text unique (request and choice numbers), and one
full-size request in eight with fewer choices than asked or `choices: []` (the backend tops them up).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tts.runner import summarise
from tts.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]
N = 4  # samples per problem
MATH_PROBLEMS = 40
CODE_PROBLEMS = 16


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a killed client drops its connections
        pass


class FakeServer:
    """OpenAI-compatible chat server; `latency` seconds per completion request (a random share of it)."""

    def __init__(self, model: str = "fake-model", latency: float = 0.0, short_rate: float = 0.0, seed: int = 0,
                 solutions: dict[str, str] | None = None):
        self.model, self.latency, self.short_rate = model, latency, short_rate
        self.solutions = solutions or {}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.count = 0
        self.short = 0
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, content: str, request: int, choice: int) -> str:
        code = re.search(r"```python\n(.*)```", content, re.S)
        if code:
            solution = self.solutions[code.group(1)]
            if choice % 3 == 2:
                solution = code.group(1) + "    return None\n"
            return f"```python\n# request {request} choice {choice}\n{solution}\n```"
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", content).groups())
        return f"Request {request}, choice {choice}: the sum is \\boxed{{{a + b + (choice % 4 == 3)}}}."

    def judgement(self, messages: list[dict], request: int, n: int) -> dict:
        """The judge's answer: "Yes" (P = 0.9) when the judged sum is right, "No" (P = 0.8) otherwise."""
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", messages[-3]["content"]).groups())
        right = f"\\boxed{{{a + b}}}" in messages[-2]["content"]
        word, p_yes = ("Yes", 0.9) if right else ("No", 0.2)
        top = [{"token": "Yes", "logprob": math.log(p_yes)}, {"token": "No", "logprob": math.log(1 - p_yes)}]
        top.sort(key=lambda t: -t["logprob"])
        logprobs = {"content": [{"token": word, "logprob": top[0]["logprob"], "top_logprobs": top}]}
        choices = [{"index": i, "finish_reason": "length", "message": {"role": "assistant", "content": word},
                    "logprobs": logprobs} for i in range(n)]
        return {"id": f"r{request}", "object": "chat.completion", "choices": choices,
                "usage": {"prompt_tokens": 40, "completion_tokens": n}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._json({"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "tests",
                                                        "root": f"/models/{server.model}", "created": time.time()}]})

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                n = int(payload.get("n") or 1)
                with server.lock:
                    server.count += 1
                    request = server.count
                    delay = server.latency * server.rng.random()
                    given = n
                    if n == N and server.rng.random() < server.short_rate:
                        given = server.rng.choice([0, 1, n - 1])
                        server.short += 1
                time.sleep(delay)
                content = payload["messages"][-1]["content"]
                if "Answer Yes or No" in content:  # the math tasks' default judge: one token, top logprobs
                    self._json(server.judgement(payload["messages"], request, n))
                    return
                choices = [{"index": i, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": server.answer(content, request, i)},
                            "logprobs": {"content": [{"token": "x", "logprob": -0.1 - 0.1 * i}] * 5}}
                           for i in range(given)]
                self._json({"id": f"r{request}", "object": "chat.completion", "choices": choices,
                            "usage": {"prompt_tokens": 20, "completion_tokens": 5 * given}})

        return Handler

    @staticmethod
    def humaneval_solutions() -> dict[str, str]:
        from tts.tasks.humaneval import HumanEval

        return {it.problem.question: it.reference.solution for it in HumanEval().load(CODE_PROBLEMS)}


def math_file(folder: Path, count: int = MATH_PROBLEMS) -> Path:
    path = folder / "sums.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "question": f"What is {i} + {2 * i}?", "answer": str(3 * i)})
                            + "\n" for i in range(count)))
    return path


def eval_command(url: str, out: Path, task_args: list[str], concurrency: int = 4) -> list[str]:
    return [sys.executable, "-m", "tts.cli", "eval", *task_args, "--backend", "openai", "--base-url", url,
            "-n", str(N), "--max-tokens", "64", "--out", str(out), "--no-progress", "--concurrency", str(concurrency)]


def _ppid_and_start(entry: Path) -> tuple[int, int] | None:
    try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])  # ppid, start time (tells a reused pid apart)


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below `pid` (the judge and sandbox processes of a `tts eval`)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _ppid_and_start(entry)) is not None:
            parent_of[int(entry.name)] = info
    found, frontier = [], {pid}
    while frontier:
        below = [(p, start) for p, (ppid, start) in parent_of.items() if ppid in frontier]
        found += below
        frontier = {p for p, _ in below}
    return found


def still_running(processes: list[tuple[int, int]]) -> list[int]:
    alive = []
    for pid, start in processes:
        info = _ppid_and_start(Path(f"/proc/{pid}"))
        if info is not None and info[1] == start:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                alive.append(pid)
    return alive


def processes_using(folder: Path) -> list[str]:
    """Processes whose working directory or TMPDIR lies under `folder` (sandboxed programs and drivers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cwd.startswith(str(folder)) or f"TMPDIR={folder}".encode() in env:
            found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:80]!r}")
    return found


class KillLoop:
    """Start `tts eval`, SIGKILL it after a seeded random delay, again and again; then let it finish."""

    def __init__(self, command: list[str], env: dict[str, str], logs: Path, seed: int):
        self.command, self.env, self.logs = command, env, logs
        logs.mkdir(exist_ok=True)
        self.rng = random.Random(seed)
        self.kills = self.kills_while_grading = self.launches = 0
        self.orphans: list[tuple[int, int]] = []  # processes of killed runs, to check they ended
        self.stderr: list[str] = []

    def launch(self) -> subprocess.Popen:
        self.launches += 1
        with (self.logs / f"stderr-{self.launches}.txt").open("w") as err:
            return subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=err)

    def collect(self) -> str:
        text = (self.logs / f"stderr-{self.launches}.txt").read_text()
        self.stderr.append(text)
        return text

    def kill_after(self, delay: float, wait_for_grading: bool = False) -> bool:
        """One launch, killed `delay` s after start (or, with `wait_for_grading`, `delay` s after it first
        started a process of its own: a program being judged); False if it finished first."""
        proc = self.launch()
        if wait_for_grading:
            deadline = time.monotonic() + 30
            while proc.poll() is None and not descendants(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(delay)
        below = descendants(proc.pid)
        if proc.poll() is not None:
            self.collect()
            return False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.collect()
        self.kills += 1
        self.kills_while_grading += bool(below)
        self.orphans += below
        return True

    def kill_repeatedly(self, kills: int, delay: tuple[float, float], grading_every: int = 0) -> None:
        """Kill until `kills` kills landed (every `grading_every`-th one while a program runs), at most
        2 x `kills` launches; stops early if a launch finishes the run."""
        for i in range(2 * kills):
            if self.kills >= kills:
                return
            while_grading = bool(grading_every) and i % grading_every == grading_every - 1
            wait = self.rng.uniform(0.0, 0.3) if while_grading else self.rng.uniform(*delay)
            if not self.kill_after(wait, wait_for_grading=while_grading):
                return

    def finish(self, timeout: float = 90) -> tuple[int, str]:
        proc = self.launch()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -1, f"did not finish in {timeout} s: " + self.collect()
        return code, self.collect()


@pytest.fixture(scope="module")
def private_tmp():
    """TMPDIR of the `tts eval` processes: every sandbox folder (`tts-run-*`) lands here."""
    folder = Path(tempfile.mkdtemp(prefix="tts-killtest-"))
    folder.chmod(0o755)  # a sandbox running under another uid must reach its folder
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, private_tmp):
    """Both runs (math answers, then HumanEval programs), each killed again and again, then finished."""
    base = tmp_path_factory.mktemp("kill")
    env = {**os.environ, "TMPDIR": str(private_tmp), "TTS_DATA_SOURCE": "local", "PYTHONPATH": str(ROOT)}
    runs = {}
    with FakeServer(latency=0.25, short_rate=0.125, seed=1, solutions=FakeServer.humaneval_solutions()) as server:
        out = base / "math"
        loop = KillLoop(eval_command(server.url, out, ["--task", "jsonl", "--data-file", str(math_file(base))]),
                        env, base / "math-logs", seed=7)
        loop.kill_repeatedly(6, delay=(0.3, 2.0))
        code, err = loop.finish()
        runs["math"] = (out, loop, code, err, MATH_PROBLEMS)

        server.latency = 0.02
        out = base / "code"
        loop = KillLoop(eval_command(server.url, out, ["--task", "humaneval", "--limit", str(CODE_PROBLEMS)],
                                     concurrency=3), env, base / "code-logs", seed=11)
        loop.kill_repeatedly(6, delay=(0.3, 2.0), grading_every=2)
        code, err = loop.finish()
        runs["code"] = (out, loop, code, err, CODE_PROBLEMS)
        runs["short_answers"] = server.short
    for name in ("math", "code"):
        loop = runs[name][1]
        print(f"{name}: {loop.launches} launches, {loop.kills} killed ({loop.kills_while_grading} while a program "
              f"ran), final exit {runs[name][2]}")
    time.sleep(1.0)  # let orphaned sandbox processes (if any) end on their own first
    return runs


@pytest.mark.parametrize("name", ["math", "code"])
def test_killed_runs_end_complete_and_consistent(killed_runs, name):
    out, loop, code, err, problems = killed_runs[name]
    assert code == 0, err
    assert loop.kills >= 5, f"only {loop.kills} of {loop.launches - 1} launches were killed before the run finished"
    raw_results = (out / "results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in raw_results]  # every line whole
    ids = [r["problem_id"] for r in results]
    assert len(ids) == problems and len(set(ids)) == problems  # every problem exactly once

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == problems * N
    by_problem: dict[str, list[dict]] = {}
    for s in samples:
        by_problem.setdefault(s["problem_id"], []).append(s)
    assert set(by_problem) == set(ids)
    for pid, rows in by_problem.items():
        assert sorted(s["index"] for s in rows) == list(range(N)), pid
        assert len({s["text"] for s in rows}) == N, pid  # no sample written twice
    assert all(r["n_samples"] == N for r in results)
    for r in results:  # the result line agrees with its samples
        assert r["n_correct_samples"] == sum(bool(s["correct"]) for s in by_problem[r["problem_id"]])

    metrics = json.loads((out / "metrics.json").read_text())
    expected = summarise(results)
    for key in ("problems", "accuracy", "coverage", "usage"):
        assert metrics[key] == expected[key], key
    assert "pending" not in metrics


def test_kills_covered_the_run(killed_runs):
    math_loop, code_loop = killed_runs["math"][1], killed_runs["code"][1]
    assert math_loop.kills + code_loop.kills >= 10
    assert code_loop.kills_while_grading >= 2, "no kill landed while HumanEval programs were running"
    # a killed run leaves its lock file; the next run takes it over and says so
    assert any("taking over the stale lock" in err for err in math_loop.stderr + code_loop.stderr)
    assert killed_runs["short_answers"] > 0  # the server did answer with missing choices (topped up)
    assert any("asking again for the missing samples" in err for err in math_loop.stderr + code_loop.stderr)


@pytest.mark.parametrize("name", ["math", "code"])
def test_lock_released(killed_runs, name):
    out = killed_runs[name][0]
    assert not (out / "run.lock").exists()
    run = RunFolder(out)
    run.acquire()  # free: nobody holds it
    run.release()


def test_nothing_outlives_the_killed_runs(killed_runs, private_tmp):
    orphans = killed_runs["math"][1].orphans + killed_runs["code"][1].orphans
    deadline = time.monotonic() + 5
    while (still_running(orphans) or processes_using(private_tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(orphans) == []
    assert processes_using(private_tmp) == []
    assert sorted(p.name for p in private_tmp.glob("tts-run-*")) == []


def test_second_writer_is_refused_and_the_first_finishes(tmp_path):
    data = math_file(tmp_path, 12)
    out = tmp_path / "run"
    env = {**os.environ, "TTS_DATA_SOURCE": "local", "PYTHONPATH": str(ROOT)}
    with FakeServer(latency=0.6) as server:  # about 4 s of work: the second process starts meanwhile
        command = eval_command(server.url, out, ["--task", "jsonl", "--data-file", str(data)], concurrency=1)
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        deadline = time.monotonic() + 30
        while not (out / "run.lock").exists() or not (out / "run.lock").stat().st_size:
            assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.02)
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        _, first_err = first.communicate(timeout=60)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    err = second.stderr.strip()
    assert err.startswith("tts: error: run folder") and f"in use by another tts process (pid {first.pid} on" in err
    assert "\n" not in err
    ids = [json.loads(line)["problem_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(f"s{i}" for i in range(12))
    assert len((out / "samples.jsonl").read_text().splitlines()) == 12 * N
    assert json.loads((out / "metrics.json").read_text())["problems"] == 12
