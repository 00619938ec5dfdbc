"""Run folders that cannot be corrupted: one writer at a time, the served model is part of a run's identity,
samples are never short, and a failing problem stays pending while the rest go on."""

import json
import logging
import os
import subprocess
import sys

import httpx
import pytest

from tests.fakes import ToyTask
from tts.backends.base import Backend, IncompleteGeneration, weights_fingerprint
from tts.backends.openai import OpenAIBackend
from tts.backends.scripted import ScriptedBackend
from tts.errors import UserError
from tts.runner import MAX_FAILURES_IN_A_ROW, ProblemsFailed, evaluate
from tts.runs import RunFolder
from tts.strategies.self_consistency import SelfConsistency
from tts.study import read_run
from tts.types import GenerationRequest, SamplingConfig


def script(prompt: str, index: int) -> str:
    i = int(prompt.split("problem ")[1].split()[0])
    return f"sample {index}: the answer is {i * 10 + (1 if index % 4 == 3 else 0)}"


CONFIG = {"task": "toy", "strategy": "self-consistency", "strategy_options": {"n": 4}, "model": None,
          "backend": "scripted", "sampling": {}, "seed": 0, "task_options": {}}


async def run_once(folder, backend, size=5, **kw):
    task = ToyTask(size)
    return await evaluate(task, task.load(), SelfConsistency(n=4), backend, RunFolder(folder), dict(CONFIG),
                          SamplingConfig(), progress=False, **kw)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- 1. one writer at a time -----------------------------------------------------------------

def test_a_second_writer_is_refused_and_the_lock_names_its_holder(tmp_path):
    first = RunFolder(tmp_path)
    first.open(CONFIG)
    holder = json.loads((tmp_path / "run.lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"]
    with pytest.raises(UserError, match=rf"in use by another tts process \(pid {os.getpid()} on "):
        RunFolder(tmp_path).open(CONFIG)
    first.release()
    assert not (tmp_path / "run.lock").exists()  # a clean end leaves no lock file
    second = RunFolder(tmp_path)
    second.open(CONFIG)
    second.release()


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tts.runs import RunFolder; r = RunFolder(sys.argv[1]); r.acquire(); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as err:
            RunFolder(tmp_path).open(CONFIG)
        assert f"pid {holder.pid} on" in str(err.value) and "choose another --out" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    run = RunFolder(tmp_path)  # the kernel dropped the dead holder's lock: taken over
    run.acquire()
    run.release()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_log_line(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with caplog.at_level(logging.WARNING, logger="tts.runs"):
        run = RunFolder(tmp_path)
        run.open(CONFIG)
    assert f"taking over the stale lock of pid {dead.pid} (no longer running)" in caplog.text
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    run.release()


async def test_evaluate_holds_the_lock_for_the_run_and_releases_it(tmp_path):
    seen = []

    class Watching(ScriptedBackend):
        async def generate(self, requests):
            with pytest.raises(UserError, match="in use"):
                RunFolder(tmp_path).acquire()
            seen.append(True)
            return await super().generate(requests)

    await run_once(tmp_path, Watching(script), size=2)
    assert seen and not (tmp_path / "run.lock").exists()


async def test_reading_a_locked_folder_needs_no_lock(tmp_path):
    """`tts scale` (read_run) and metrics read a folder while another process writes it."""
    await run_once(tmp_path, ScriptedBackend(script), size=3)
    writer = RunFolder(tmp_path)
    writer.acquire()
    config, by_problem = read_run(RunFolder(tmp_path))
    assert len(by_problem) == 3 and all(len(rows) == 4 for rows in by_problem.values())
    writer.release()


async def test_a_failed_open_releases_the_lock(tmp_path):
    await run_once(tmp_path, ScriptedBackend(script), size=2)
    task = ToyTask(2)
    with pytest.raises(UserError, match="different run"):
        await evaluate(task, task.load(), SelfConsistency(n=4), ScriptedBackend(script), RunFolder(tmp_path),
                       {**CONFIG, "seed": 1}, SamplingConfig(), progress=False)
    assert not (tmp_path / "run.lock").exists()


# ---- 2. what was served is part of the run ---------------------------------------------------

def openai_backend(model_id, root="/models/x", choices=None):
    """An OpenAI backend over a mock transport serving `model_id`; `choices(n, call)` says how many to answer."""
    calls = {"n": 0}

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": model_id, "owned_by": "vllm", "root": root,
                                                       "created": calls["n"]}]})
        payload = json.loads(request.content)
        calls["n"] += 1
        given = payload["n"] if choices is None else choices(payload["n"], calls["n"])
        text = payload["messages"][-1]["content"]
        i = int(text.split("problem ")[1].split()[0])
        return httpx.Response(200, json={
            "choices": [{"index": k, "message": {"content": f"call {calls['n']} choice {k}: {i * 10}"},
                         "finish_reason": "stop"} for k in range(given)],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3 * given}})

    backend = OpenAIBackend(base_url="http://testserver/v1", transport=httpx.MockTransport(handler), backoff=0.01)
    backend.calls = calls
    return backend


async def test_served_identity_is_stored_and_a_different_model_is_refused(tmp_path):
    await run_once(tmp_path, openai_backend("model-a"), size=2)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["served_identity"] == {"backend": "openai", "model": "model-a", "owned_by": "vllm",
                                         "root": "/models/x"}
    (tmp_path / "results.jsonl").write_text((tmp_path / "results.jsonl").read_text().splitlines()[0] + "\n")
    other = openai_backend("model-b")
    with pytest.raises(UserError, match=r"different served model \(served_identity.model: 'model-a' -> 'model-b'"):
        await run_once(tmp_path, other, size=2)
    assert other.calls["n"] == 0 and len(lines(tmp_path / "results.jsonl")) == 1  # nothing generated or written
    with pytest.raises(UserError, match=r"served_identity.root: '/models/x' -> '/models/y'"):
        await run_once(tmp_path, openai_backend("model-a", root="/models/y"), size=2)
    metrics = await run_once(tmp_path, openai_backend("model-a"), size=2)  # the same server: resumes
    assert metrics["problems"] == 2 and metrics["generated_this_session"] == 1


async def test_an_old_run_folder_without_served_identity_resumes_with_a_warning(tmp_path, caplog):
    await run_once(tmp_path, ScriptedBackend(script), size=2)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["served_identity"]["script"].endswith("test_run_integrity.script")
    del config["served_identity"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="tts.runs"):
        metrics = await run_once(tmp_path, ScriptedBackend(lambda p, i: "other"), size=3)
    assert "does not record what was served before" in caplog.text
    assert metrics["problems"] == 3
    assert "served_identity" in json.loads((tmp_path / "config.json").read_text())  # checked from now on


async def test_scripted_backends_with_different_scripts_are_different_models(tmp_path):
    await run_once(tmp_path, ScriptedBackend(script), size=2)
    with pytest.raises(UserError, match="served_identity.script"):
        await run_once(tmp_path, ScriptedBackend(lambda p, i: "x"), size=2)


async def test_vllm_identity_names_folder_weights_dtype_and_version(tmp_path):
    from types import SimpleNamespace

    from tts.backends.vllm import VLLMBackend

    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"x" * 100)
    engine = SimpleNamespace(vllm_config=SimpleNamespace(model_config=SimpleNamespace(dtype="torch.float32")))
    fake = SimpleNamespace(name="vllm", model=str(model), dtype="float32", _engine=engine)
    identity = await VLLMBackend.served_identity(fake)
    assert identity["model"] == "tiny-model" and identity["dtype"] == "float32" and identity["vllm_version"]
    assert identity["weights"] == weights_fingerprint(model)
    (model / "model.safetensors").write_bytes(b"x" * 101)  # other weights
    assert weights_fingerprint(model) != identity["weights"]
    assert weights_fingerprint(tmp_path / "not-a-folder") is None


# ---- 4. never fewer samples than asked -------------------------------------------------------

class Dropping(ScriptedBackend):
    """Answers the first `short` calls with `keep` samples per request whatever n was asked."""

    def __init__(self, keep, short=1):
        super().__init__(script)
        self.keep, self.short, self.answered = keep, short, 0

    async def generate(self, requests):
        out = await super().generate(requests)
        self.answered += 1
        if self.answered <= self.short:
            return [samples[: self.keep] for samples in out]
        return out


async def test_short_answers_are_topped_up(caplog):
    backend = Dropping(keep=2)
    req = GenerationRequest(prompt="problem 3", sampling=SamplingConfig(n=4))
    with caplog.at_level(logging.WARNING, logger="tts.backends.base"):
        (samples,) = await backend.generate([req])
    assert len(samples) == 4 and len({s.text for s in samples}) == 4
    assert [r.sampling.n for call in backend.calls for r in call] == [4, 2]  # one top-up for the 2 missing
    assert "returned samples 2 of 4; asking again for the missing samples" in caplog.text


async def test_a_seeded_top_up_gets_another_seed():
    backend = Dropping(keep=0)
    await backend.generate([GenerationRequest(prompt="problem 1", sampling=SamplingConfig(n=3, seed=5))])
    seeds = [r.sampling.seed for call in backend.calls for r in call]
    assert seeds[0] == 5 and seeds[1] != 5


async def test_a_backend_that_stays_short_fails_the_call():
    backend = Dropping(keep=1, short=99)
    with pytest.raises(IncompleteGeneration, match="returned samples 3 of 4 even after 2 top-up requests"):
        await backend.generate([GenerationRequest(prompt="problem 1", sampling=SamplingConfig(n=4))])
    assert len(backend.calls) == 3


async def test_too_many_samples_are_cut_to_n():
    class Generous(ScriptedBackend):
        async def generate(self, requests):
            out = await super().generate(requests)
            return [samples + samples for samples in out]

    (samples,) = await Generous(script).generate([GenerationRequest(prompt="problem 1", sampling=SamplingConfig(n=3))])
    assert len(samples) == 3


def test_every_backend_class_keeps_the_contract():
    from tts.backends.vllm import VLLMBackend

    for cls in (OpenAIBackend, ScriptedBackend, VLLMBackend):
        assert getattr(cls.generate, "_exactly_n", False), cls
    assert Backend.served_identity is not OpenAIBackend.served_identity


async def test_openai_server_with_missing_choices_is_topped_up_in_a_run(tmp_path):
    # the first completion answers `choices: []`, the second half of what was asked; later ones are whole
    backend = openai_backend("m", choices=lambda n, call: {1: 0, 2: n // 2}.get(call, n))
    metrics = await run_once(tmp_path, backend, size=3, concurrency=1)
    assert metrics["problems"] == 3
    samples = lines(tmp_path / "samples.jsonl")
    for pid in ("toy/0", "toy/1", "toy/2"):
        rows = [s for s in samples if s["problem_id"] == pid]
        assert sorted(s["index"] for s in rows) == [0, 1, 2, 3] and len({s["text"] for s in rows}) == 4
    assert all(r["n_samples"] == 4 for r in lines(tmp_path / "results.jsonl"))


async def test_a_problem_whose_samples_stay_missing_stays_pending_and_resume_repairs_it(tmp_path, caplog):
    class EmptyFor(ScriptedBackend):
        async def generate(self, requests):
            out = await super().generate(requests)
            return [[] if "problem 2" in r.prompt[-1].content else s for r, s in zip(requests, out)]

    with caplog.at_level(logging.WARNING), pytest.raises(ProblemsFailed) as err:
        await run_once(tmp_path, EmptyFor(script), size=4)
    message = str(err.value)
    assert "1 problem(s) failed (first: toy/2: IncompleteGeneration: scripted backend returned samples 0 of 4" in message
    assert "1 of 4 problems stay pending" in message and "rerun the same command" in message
    assert "problem toy/2 failed and stays pending" in caplog.text
    assert sorted(r["problem_id"] for r in lines(tmp_path / "results.jsonl")) == ["toy/0", "toy/1", "toy/3"]
    assert {s["problem_id"] for s in lines(tmp_path / "samples.jsonl")} == {"toy/0", "toy/1", "toy/3"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["problems"] == 3 and metrics["pending"] == 1
    assert not (tmp_path / "run.lock").exists()

    backend = ScriptedBackend(script)
    metrics = await run_once(tmp_path, backend, size=4)  # resume: only the pending problem
    assert len(backend.calls) == 1 and metrics["problems"] == 4 and "pending" not in metrics


# ---- nothing lost on failure -----------------------------------------------------------------

async def test_a_raising_problem_does_not_stop_the_others(tmp_path):
    class Flaky(ScriptedBackend):
        async def generate(self, requests):
            if "problem 1" in requests[0].prompt[-1].content:
                raise RuntimeError("engine hiccup\nsecond line")
            return await super().generate(requests)

    with pytest.raises(ProblemsFailed, match=r"first: toy/1: RuntimeError: engine hiccup second line\)") as err:
        await run_once(tmp_path, Flaky(script, delay=0.01), size=6, concurrency=2)
    assert "\n" not in str(err.value)
    done = sorted(r["problem_id"] for r in lines(tmp_path / "results.jsonl"))
    assert done == ["toy/0", "toy/2", "toy/3", "toy/4", "toy/5"]


async def test_user_errors_of_every_problem_make_a_user_error(tmp_path):
    class TooLong(ScriptedBackend):
        async def generate(self, requests):
            if "problem 0" in requests[0].prompt[-1].content:
                raise UserError("prompt of 9000 tokens does not fit max_model_len=4096")
            return await super().generate(requests)

    with pytest.raises(UserError, match="1 problem\\(s\\) failed .*does not fit max_model_len"):
        await run_once(tmp_path, TooLong(script), size=3)
    assert len(lines(tmp_path / "results.jsonl")) == 2


async def test_a_dead_backend_stops_the_run_early(tmp_path):
    class Dead(ScriptedBackend):
        async def generate(self, requests):
            self.calls.append(requests)
            raise ConnectionError("server gone")

    backend = Dead(script)
    with pytest.raises(ProblemsFailed, match=f"stopped after {MAX_FAILURES_IN_A_ROW} problems in a row failed"):
        await run_once(tmp_path, backend, size=40, concurrency=1)
    assert len(backend.calls) == MAX_FAILURES_IN_A_ROW  # the other 32 were not tried
    assert json.loads((tmp_path / "metrics.json").read_text())["pending"] == 40
    assert not (tmp_path / "run.lock").exists()


# ---- repair of folders corrupted by older versions -------------------------------------------

async def test_problems_written_twice_are_dropped_and_generated_again(tmp_path, caplog):
    """What two concurrent writers used to leave: result lines and samples of some problems twice."""
    await run_once(tmp_path, ScriptedBackend(script), size=3)
    results, samples = lines(tmp_path / "results.jsonl"), lines(tmp_path / "samples.jsonl")
    twice = [s for s in samples if s["problem_id"] == "toy/1"]
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(results[1]) + "\n")
    with (tmp_path / "samples.jsonl").open("a") as fh:
        fh.writelines(json.dumps(s) + "\n" for s in twice)
    # and a problem with one of its samples lost
    (tmp_path / "samples.jsonl").write_text("".join(
        json.dumps(s) + "\n" for s in lines(tmp_path / "samples.jsonl")
        if not (s["problem_id"] == "toy/2" and s["index"] == 3)))
    run = RunFolder(tmp_path)
    assert [r["problem_id"] for r in run.results()] == ["toy/0"]  # readers see only consistent problems
    assert not run.is_complete(CONFIG, ["toy/0", "toy/1", "toy/2"])
    backend = ScriptedBackend(script)
    with caplog.at_level(logging.WARNING, logger="tts.runs"):
        metrics = await run_once(tmp_path, backend, size=3)
    assert "2 problem(s) had inconsistent lines (toy/1, toy/2)" in caplog.text
    assert len(backend.calls) == 2 and metrics["problems"] == 3
    assert sorted(r["problem_id"] for r in lines(tmp_path / "results.jsonl")) == ["toy/0", "toy/1", "toy/2"]
    assert len(lines(tmp_path / "samples.jsonl")) == 12


def test_the_cli_refuses_a_second_writer_before_starting_an_engine(tmp_path, capsys):
    from tts.cli import main

    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.acquire()  # another writer of an existing folder
    # a missing model would be reported by the engine's start; the lock is checked before that
    code = main(["eval", "--task", "jsonl", "--data-file", str(data), "--model", "/no/such/model",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"tts: error: run folder {out} is in use by another tts process"), err
    holder.release()


def test_a_lock_kept_by_a_forked_child_of_a_dead_run_is_taken_over(tmp_path, caplog):
    """flock follows the open file into forked children (an engine's workers): when the run dies and such a
    child lives on, the folder must not stay locked for ever."""
    code = ("import os, sys, time; from tts.runs import RunFolder; r = RunFolder(sys.argv[1]); r.acquire()\n"
            "if os.fork() == 0:\n    print(os.getpid(), flush=True)\n    time.sleep(60)\n    os._exit(0)\n"
            "os.wait3(os.WNOHANG)\nos._exit(0)  # the run dies; its child keeps the lock")
    runner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    child = int(runner.stdout.readline())
    runner.wait()
    try:
        dead = json.loads((tmp_path / "run.lock").read_text())["pid"]
        assert dead == runner.pid
        with caplog.at_level(logging.WARNING, logger="tts.runs"):
            run = RunFolder(tmp_path)
            run.open(CONFIG)
        assert f"taking over the lock of pid {dead} (no longer running), which a process it started still held" \
            in caplog.text
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match="in use"):
            RunFolder(tmp_path).acquire()
        run.release()
    finally:
        os.kill(child, 9)
