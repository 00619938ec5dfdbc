"""`tts eval --shard I/N` and `tts merge`: a study run as 3 shards and merged equals the same study run whole.

Every run goes through the real `tts.cli.main` with a scripted backend (built fresh for each command, so
its per-prompt sample counters start at zero as in a separate process): a jsonl task of sums whose ids
are not in sorted order (a merge that sorted by id would fail), and answers that are wrong for some
samples so that accuracy and coverage are not trivial.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

from tts import registry
from tts.backends.scripted import ScriptedBackend
from tts.cli import main
from tts.merge import merge
from tts.runs import RunFolder
from tts.shards import Shard, shard_spec

IDS = ["q7", "a2", "m5", "z0", "b9", "k3", "c1", "y4", "d8", "x6", "e10"]  # 11 records; --limit 10 drops e10
LIMIT = 10
N_SHARDS = 3


def script(prompt: str, index: int) -> str:
    """The sum, off by one for samples where (index + a) % 3 == 0: some problems' majorities are wrong."""
    match = re.search(r"What is (\d+) \+ (\d+)\?", prompt)
    assert match, prompt
    a, b = int(match.group(1)), int(match.group(2))
    return f"Adding gives \\boxed{{{a + b + ((index + a) % 3 == 0)}}}."


def fresh_backend(name, model=None, **options):
    assert name == "scripted"
    return ScriptedBackend(script)


def no_backend(name, model=None, **options):
    raise AssertionError("a backend was built: something was going to be generated")


def strip_wall_time(value):
    """A line without its wall-time fields (the only thing two runs of the same study differ in)."""
    if isinstance(value, dict):
        return {k: strip_wall_time(v) for k, v in value.items() if k != "wall_time"}
    if isinstance(value, list):
        return [strip_wall_time(v) for v in value]
    return value


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Study:
    whole: Path  # the unsharded run's folder
    shards: list[Path]  # shard i/3's folder at i - 1

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "sums.jsonl"
        self.data.write_text("".join(json.dumps({"id": pid, "question": f"What is {i} + {2 * i + 1}?",
                                                 "answer": str(3 * i + 1)}) + "\n" for i, pid in enumerate(IDS)))

    def argv(self, *extra: str) -> list[str]:
        return ["eval", "--task", "jsonl", "--data-file", str(self.data), "--limit", str(LIMIT), "-n", "4",
                "--backend", "scripted", "--scorer", "none", "--no-progress", "--concurrency", "3", *extra]

    def eval(self, *extra: str, backend=fresh_backend) -> int:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(registry, "build_backend", backend)
            mp.chdir(self.root)  # default run folders go to runs/ here
            return main(self.argv(*extra))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    s = Study(tmp_path_factory.mktemp("study"))
    assert s.eval() == 0
    for i in range(1, N_SHARDS + 1):
        assert s.eval("--shard", f"{i}/{N_SHARDS}") == 0
    folders = sorted((s.root / "runs").iterdir())
    s.whole = next(f for f in folders if "shard" not in f.name)
    s.shards = [s.root / "runs" / f"{s.whole.name}-shard{i}of{N_SHARDS}" for i in range(1, N_SHARDS + 1)]
    assert folders == sorted([s.whole, *s.shards])
    return s


# ---- the shard rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("position, count, shard", [
    (0, 3, 1),  # the first problem goes to the first shard
    (1, 3, 2),
    (2, 3, 3),
    (3, 3, 1),  # and round again
    (9, 3, 1),
    (7, 4, 4),
    (5, 1, 1),  # one shard runs everything
    (4, 8, 5),  # more shards than a prefix of problems: position k is shard k + 1
])
def test_problem_k_goes_to_shard_k_mod_n_plus_1(position, count, shard):
    items = list(range(position + 1))
    holders = [i for i in range(1, count + 1) if position in Shard(index=i, count=count).take(items)]
    assert holders == [shard]  # that shard, and no other


def test_shards_partition_the_problems_in_balance_and_order():
    items = list(range(10))
    parts = [Shard(index=i, count=3).take(items) for i in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(Shard(index=i, count=4).take([0, 1])) for i in (1, 2, 3, 4)] == [1, 1, 0, 0]


@pytest.mark.parametrize("text, expected", [
    ("2/8", Shard(index=2, count=8)),
    (" 1 / 1 ", Shard(index=1, count=1)),  # spaces around the numbers (a shell variable's padding)
    ("0/4", "the shard index I must be from 1 to 4"),
    ("5/4", "the shard index I must be from 1 to 4"),
    ("1/0", "the shard count N must be at least 1"),
    ("abc", "expected I/N"),
    ("1/4/2", "expected I/N"),
    ("-1/4", "expected I/N"),
])
def test_shard_spec(text, expected):
    if isinstance(expected, Shard):
        assert shard_spec(text) == expected
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(expected)):
            shard_spec(text)


# ---- shard runs -------------------------------------------------------------------------------

def test_each_shard_runs_its_share_and_records_it(study):
    whole = json.loads((study.whole / "config.json").read_text())
    assert "shard" not in whole and not whole["command"].count("--shard")
    assert [r["problem_id"] for r in lines(study.whole / "results.jsonl")] != []
    for i, folder in enumerate(study.shards, start=1):
        config = json.loads((folder / "config.json").read_text())
        assert config["shard"] == {"index": i, "count": N_SHARDS}
        assert config["shard_problem_ids"] == IDS[:LIMIT][i - 1 :: N_SHARDS]  # split after --limit
        assert config["study_problems"] == LIMIT
        assert {r["problem_id"] for r in lines(folder / "results.jsonl")} == set(config["shard_problem_ids"])
        assert folder.name.endswith(f"-shard{i}of{N_SHARDS}") and folder.name.startswith(study.whole.name)


def test_a_shard_resumed_with_another_spec_is_refused(study, capsys):
    before = (study.shards[0] / "results.jsonl").read_bytes()
    # refused before a backend is built (an engine start for vllm)
    assert study.eval("--shard", f"2/{N_SHARDS}", "--out", str(study.shards[0]), backend=no_backend) == 2
    assert "differs in: shard" in capsys.readouterr().err
    assert (study.shards[0] / "results.jsonl").read_bytes() == before


def test_a_finished_shard_resumed_generates_nothing(study):
    assert study.eval("--shard", f"1/{N_SHARDS}", backend=no_backend) == 0


# ---- the merge --------------------------------------------------------------------------------

def test_merged_shards_equal_the_unsharded_run(study, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", *map(str, reversed(study.shards)), "--out", str(out)]) == 0
    assert f"merged 3 shard(s) of 3 into {out}: 10 problems" in capsys.readouterr().out
    for name in ("results.jsonl", "samples.jsonl"):  # problem for problem, in the task's order
        assert strip_wall_time(lines(out / name)) == strip_wall_time(lines(study.whole / name)), name
    assert [r["problem_id"] for r in lines(out / "results.jsonl")] == IDS[:LIMIT]
    got, want = (json.loads((f / "metrics.json").read_text()) for f in (out, study.whole))
    assert got["problems"] == want["problems"] == LIMIT
    assert got["accuracy"] == want["accuracy"] and 0 < got["accuracy"] < 1
    assert got["coverage"] == want["coverage"]
    assert strip_wall_time(got["usage"]) == strip_wall_time(want["usage"]) and got["usage"]["completion_tokens"] > 0
    assert "session_seconds" not in got and "generated_this_session" not in got and "pending" not in got
    config, whole = (json.loads((f / "config.json").read_text()) for f in (out, study.whole))
    assert not {"shard", "shard_problem_ids", "study_problems", "command"} & set(config)
    assert {k: v for k, v in config.items() if k not in ("merged_from", "versions")} == \
        {k: v for k, v in whole.items() if k not in ("command", "versions")}
    assert [(m["folder"], m["shard"], m["problems"], m["finished"]) for m in config["merged_from"]] == \
        [(str(f), {"index": i, "count": 3}, len(IDS[:LIMIT][i - 1 :: 3]), len(IDS[:LIMIT][i - 1 :: 3]))
         for i, f in enumerate(study.shards, start=1)]
    assert all("command" in m for m in config["merged_from"])  # each shard's own (sys.argv; pytest's here)
    assert not any((f / "run.lock").exists() for f in study.shards)  # the inputs' locks were released


def test_the_merged_run_resumed_unsharded_generates_nothing(study, tmp_path, capsys):
    out = tmp_path / "merged"
    merge(study.shards, out)
    before = {name: (out / name).read_bytes() for name in ("results.jsonl", "samples.jsonl", "config.json")}
    assert study.eval("--out", str(out), backend=no_backend) == 0
    assert f"{LIMIT} problems" in capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_partial_merge_says_what_is_missing_and_the_unsharded_command_completes_it(study, tmp_path, capsys):
    second = tmp_path / "second"
    shutil.copytree(study.shards[1], second)
    results = lines(second / "results.jsonl")
    (second / "results.jsonl").write_text(json.dumps(results[0]) + "\n")  # 1 of its 3 finished
    out = tmp_path / "merged"
    assert main(["merge", str(study.shards[0]), str(second), "--out", str(out), "--allow-partial"]) == 0
    assert "partial: 5 of 10 problems missing" in capsys.readouterr().err  # 2 of shard 2, all 3 of shard 3
    assert json.loads((out / "metrics.json").read_text())["pending"] == 5
    assert [r["problem_id"] for r in lines(out / "results.jsonl")] == [IDS[0], IDS[1], IDS[3], IDS[6], IDS[9]]
    assert len(lines(out / "samples.jsonl")) == 5 * 4  # the unfinished problems' samples are not carried
    assert study.eval("--out", str(out)) == 0  # generates the 5 missing problems
    by_id = {r["problem_id"]: strip_wall_time(r) for r in lines(out / "results.jsonl")}
    assert by_id == {r["problem_id"]: strip_wall_time(r) for r in lines(study.whole / "results.jsonl")}


def test_tts_scale_reads_the_merged_run_as_the_whole_one(study, tmp_path):
    out = tmp_path / "merged"
    merge(study.shards, out)
    tables = []
    for folder in (out, study.whole):
        dest = tmp_path / f"scale-{folder.name}"
        assert main(["scale", str(folder), "--no-adaptive", "--draws", "5", "--bootstrap", "0",
                     "--out", str(dest)]) == 0
        rows = (dest / "scaling.csv").read_text().splitlines()
        tables.append([row.split(",")[2:] for row in rows])  # less the run's folder and label
    assert tables[0] == tables[1] and len(tables[0]) > 2


# ---- refusals: each a one-line UserError, and nothing written --------------------------------

def _copy(study: Study, tmp: Path, index: int) -> Path:
    dest = tmp / f"copy{index}"
    shutil.copytree(study.shards[index - 1], dest)
    return dest


def _drop_last_result(study: Study, tmp: Path) -> list[Path]:
    second = _copy(study, tmp, 2)
    (second / "results.jsonl").write_text("".join(line + "\n" for line in
                                                  (second / "results.jsonl").read_text().splitlines()[:-1]))
    return [study.shards[0], second, study.shards[2]]


def _other_temperature(study: Study, tmp: Path) -> list[Path]:
    hotter = tmp / "hotter"
    assert study.eval("--shard", f"2/{N_SHARDS}", "--temperature", "0.5", "--out", str(hotter)) == 0
    return [study.shards[0], hotter, study.shards[2]]


def _other_split(study: Study, tmp: Path) -> list[Path]:
    halves = tmp / "half"
    assert study.eval("--shard", "2/2", "--out", str(halves)) == 0
    return [study.shards[0], halves]


def _empty_folder(study: Study, tmp: Path) -> list[Path]:
    (tmp / "empty").mkdir()
    return [*study.shards, tmp / "empty"]


REFUSALS = [
    # a shard generated with another option (its sampling differs)
    ("mismatched-option", _other_temperature,
     'the shards disagree on sampling.temperature: {shard1} has 0.7, {tmp}/hotter has 0.5', ""),
    # the same shard twice (a copy of shard 1/3 besides shard 1/3)
    ("overlap", lambda s, t: [*s.shards, _copy(s, t, 1)], "problem 'q7' is in two shards: {shard1} (shard 1/3) "
     "and {tmp}/copy1 (shard 1/3)", ""),
    # shard 2/3 finished 2 of its 3 problems
    ("incomplete", _drop_last_result, "{tmp}/copy2 (shard 2/3) has finished 2 of its 3 problems; finish it by "
     "rerunning its command, or pass --allow-partial", ""),
    # shard 2/3 not given
    ("missing-shard", lambda s, t: [s.shards[0], s.shards[2]], "shard(s) 2/3 missing (given: 1/3, 3/3); run them, "
     "or pass --allow-partial", ""),
    # a shard of another split (2/2 besides 1/3)
    ("other-split", _other_split, "the shards come from different splits: {shard1} (shard 1/3) and {tmp}/half "
     "(shard 2/2)", ""),
    # --out already holds something
    ("existing-out", lambda s, t: s.shards, "--out {tmp}/out exists and is not empty; merge writes a new run folder",
     "out/notes.txt"),
    # a folder without config.json
    ("not-a-run-folder", _empty_folder, "{tmp}/empty is not a run folder (no config.json)", ""),
    # the unsharded run is not a shard
    ("not-a-shard", lambda s, t: [*s.shards, s.whole], "{whole} is not a shard (its config.json records no shard)",
     ""),
    # the same folder twice
    ("given-twice", lambda s, t: [*s.shards, s.shards[0]], "{shard1} is given twice", ""),
]


@pytest.mark.parametrize("name, inputs, fragment, out_file", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_merge_refuses(study, tmp_path, capsys, name, inputs, fragment, out_file):
    folders = inputs(study, tmp_path)
    if out_file:
        (tmp_path / out_file).parent.mkdir()
        (tmp_path / out_file).write_text("mine")
    capsys.readouterr()
    assert main(["merge", *map(str, folders), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tts: error: ")
    assert fragment.format(tmp=tmp_path, shard1=study.shards[0], whole=study.whole) in err, err
    if out_file:
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    else:
        assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.merging-*"))  # no half-built folder left behind


def test_a_shard_being_written_is_refused(study, tmp_path, capsys):
    writer = RunFolder(study.shards[1])
    writer.acquire()  # another writer holds shard 2/3 (flock: a second open file is refused, same process too)
    try:
        assert main(["merge", *map(str, study.shards), "--out", str(tmp_path / "out")]) == 2
    finally:
        writer.release()
    err = capsys.readouterr().err
    assert f"cannot merge {study.shards[1]} while it is being written" in err and "in use by another" in err
    assert not (tmp_path / "out").exists()
    assert not (study.shards[0] / "run.lock").exists()  # the locks taken before the refusal were released
