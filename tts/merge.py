"""`tts merge SHARD_DIR... --out RUN_DIR`: join the shard folders of `tts eval --shard I/N` into one run.

The merged folder is an ordinary run folder: the same command without --shard (and with --out RUN_DIR)
finds it complete, and `tts scale`/`tts report` read it like any run. So a merge refuses anything that
would make it a run no single `tts eval` could have written: shards that disagree on any identity field,
shards that overlap, and (unless --allow-partial) an unfinished shard or a missing one. Each input's
lock is held while it is read, so a shard still being written is refused, not half-read.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tts.cli_args import writable_folder
from tts.errors import UserError
from tts.runs import IDENTITY_KEYS, SERVED_KEY, RunFolder, read_config, strategy_identity
from tts.shards import SHARD_IDS_KEY, STUDY_SIZE_KEY, Shard

# Fields every shard must agree on: the run's identity (less the shard itself), what was served, --limit,
# and the size of the study the shards were cut from.
MERGE_IDENTITY = (*(k for k in IDENTITY_KEYS if k != "shard"), SERVED_KEY, "limit", STUDY_SIZE_KEY)
# Keys of a shard's config.json that the merged run does not carry at the top level (each shard's
# command is kept in merged_from).
SHARD_ONLY = ("shard", SHARD_IDS_KEY, STUDY_SIZE_KEY, "command")


def register(subparsers) -> None:
    p = subparsers.add_parser("merge", help="join the run folders of `tts eval --shard I/N` into one run folder "
                                            "(checked: same run, no overlap, every shard finished)")
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="run folders made by `tts eval --shard I/N`")
    p.add_argument("--out", required=True, type=writable_folder, help="the merged run folder (new or empty)")
    p.add_argument("--allow-partial", action="store_true",
                   help="merge what there is when a shard is unfinished or missing (the merged run can be "
                        "completed by the unsharded `tts eval` with --out RUN_DIR)")
    p.set_defaults(func=cmd_merge)


@dataclass
class ShardRun:
    """One input folder, read under its lock."""

    path: Path
    config: dict[str, Any]
    shard: Shard
    share: list[str]  # the problem ids this shard was given, in the task's order
    results: dict[str, dict[str, Any]]  # finished problems' result lines by id
    samples: dict[str, list[dict[str, Any]]]  # and their sample lines

    @property
    def where(self) -> str:
        return f"{self.path} (shard {self.shard.label})"


@dataclass
class Merged:
    out: Path
    problems: int
    study: int
    shards: list[ShardRun]
    metrics: dict[str, Any]

    @property
    def missing(self) -> int:
        return self.study - self.problems


def _read_shard(path: Path, stack: ExitStack) -> ShardRun:
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a run folder (no config.json)")
    run = RunFolder(path)
    if not os.access(path, os.W_OK):
        raise UserError(f"cannot merge {path}: the folder is not writable, so its run.lock cannot be taken "
                        "(copy it somewhere writable)")
    try:
        stack.enter_context(run.lock())  # held until the merge is written: no writer meanwhile
    except UserError as exc:
        raise UserError(f"cannot merge {path} while it is being written: {exc}") from None
    config = read_config(run.config_path)
    assert config is not None  # the file exists (and stays, as we hold the lock)
    if "shard" not in config:
        raise UserError(f"{path} is not a shard (its config.json records no shard); merge joins the folders "
                        "of `tts eval --shard I/N`")
    try:
        shard = Shard.model_validate(config["shard"])
    except ValidationError:
        raise UserError(f"{path}/config.json: malformed shard record {json.dumps(config['shard'])}") from None
    share = config.get(SHARD_IDS_KEY)
    if not isinstance(share, list) or not isinstance(config.get(STUDY_SIZE_KEY), int):
        raise UserError(f"{path}/config.json records no {SHARD_IDS_KEY}/{STUDY_SIZE_KEY}: the shard never "
                        "started; rerun its command first")
    share = [str(pid) for pid in share]
    results = {str(r["problem_id"]): r for r in run.results()}
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in run.samples():
        samples[str(row["problem_id"])].append(row)
    outside = sorted(set(results) - set(share))
    if outside:
        raise UserError(f"{path} holds problem {outside[0]!r}, which is not in its shard {shard.label}")
    return ShardRun(path, config, shard, share, results, dict(samples))


def _identity(config: dict[str, Any], key: str) -> Any:
    return strategy_identity(config.get(key)) if key == "strategy_options" else config.get(key)


def _difference(field: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """The innermost field where two differing values differ (sampling.temperature, not all of sampling)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if a.get(key) != b.get(key):
                return _difference(f"{field}.{key}", a.get(key), b.get(key))
    return field, a, b


def _check_same_run(shards: list[ShardRun]) -> None:
    first = shards[0]
    for other in shards[1:]:
        for key in MERGE_IDENTITY:
            if _identity(first.config, key) != _identity(other.config, key):
                field, a, b = _difference(key, _identity(first.config, key), _identity(other.config, key))
                raise UserError(f"the shards disagree on {field}: {first.path} has {json.dumps(a, default=str)}, "
                                f"{other.path} has {json.dumps(b, default=str)}")
        if other.shard.count != first.shard.count:
            raise UserError(f"the shards come from different splits: {first.where} and {other.where}")


def _check_no_overlap(shards: list[ShardRun]) -> None:
    owner: dict[str, ShardRun] = {}
    for s in shards:
        for pid in s.share:
            if pid in owner:
                raise UserError(f"problem {pid!r} is in two shards: {owner[pid].where} and {s.where}")
            owner[pid] = s


def _check_complete(shards: list[ShardRun], allow_partial: bool) -> None:
    if allow_partial:
        return
    count = shards[0].shard.count
    missing = sorted(set(range(1, count + 1)) - {s.shard.index for s in shards})
    if missing:
        given = ", ".join(s.shard.label for s in shards)
        raise UserError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing (given: {given}); run "
                        "them, or pass --allow-partial to merge what there is")
    for s in shards:
        if len(s.results) < len(s.share):
            raise UserError(f"{s.where} has finished {len(s.results)} of its {len(s.share)} problems; finish it "
                            "by rerunning its command, or pass --allow-partial")


def task_order(shards: list[ShardRun]) -> list[str]:
    """The given shards' problem ids in the task's order: problem k is item k // N of shard k mod N + 1, so
    taking one id from each shard in turn restores the order (missing shards leave their positions out)."""
    by_index = sorted(shards, key=lambda s: s.shard.index)
    longest = max(len(s.share) for s in by_index)
    return [s.share[j] for j in range(longest) for s in by_index if j < len(s.share)]


def _merged_config(shards: list[ShardRun]) -> dict[str, Any]:
    config = {k: v for k, v in copy.deepcopy(shards[0].config).items() if k not in SHARD_ONLY}
    config["merged_from"] = [{"folder": str(s.path), "shard": s.shard.model_dump(), "problems": len(s.share),
                              "finished": len(s.results), "command": s.config.get("command")} for s in shards]
    return config


def _write_folder(folder: Path, config: dict[str, Any], order: list[str], shards: list[ShardRun]) -> None:
    results = {pid: row for s in shards for pid, row in s.results.items()}
    samples = {pid: rows for s in shards for pid, rows in s.samples.items()}
    done = [pid for pid in order if pid in results]
    files = {"config.json": json.dumps(config, indent=2, default=str) + "\n",
             "samples.jsonl": "".join(json.dumps(row) + "\n" for pid in done for row in samples[pid]),
             "results.jsonl": "".join(json.dumps(results[pid], default=str) + "\n" for pid in done)}
    for name, text in files.items():
        with (folder / name).open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def _check_out(out: Path, inputs: list[Path]) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not empty; merge writes a new run folder")
    resolved = [p.resolve() for p in inputs]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise UserError(f"{inputs[i]} is given twice")


def merge(inputs: list[Path], out: Path, allow_partial: bool = False) -> Merged:
    """Check the shard folders and write the merged run folder `out` (built beside it, then renamed into
    place, so `out` is either absent or whole). A `UserError` names the first problem found."""
    from tts.runner import run_metrics

    _check_out(out, inputs)
    with ExitStack() as stack:
        shards = sorted((_read_shard(p, stack) for p in inputs), key=lambda s: (s.shard.index, str(s.path)))
        _check_same_run(shards)
        _check_no_overlap(shards)
        _check_complete(shards, allow_partial)
        order = task_order(shards)
        if not any(s.results for s in shards):
            raise UserError("nothing to merge: none of the shards has a finished problem")
        out.parent.mkdir(parents=True, exist_ok=True)
        building = out.parent / f".{out.name}.merging-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        try:
            _write_folder(building, _merged_config(shards), order, shards)
            staged = RunFolder(building)
            finished = {str(r["problem_id"]) for r in staged.results()}
            metrics = run_metrics(staged, finished)
            study = shards[0].config[STUDY_SIZE_KEY]
            if study > len(finished):
                metrics["pending"] = study - len(finished)  # as a run that stopped early records it
            staged.write_metrics(metrics)
            os.rename(building, out)  # onto an empty folder or none; one that filled up meanwhile refuses
        except OSError as exc:
            raise UserError(f"cannot write the merged folder {out}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return Merged(out, len(finished), study, shards, metrics)


def cmd_merge(args: argparse.Namespace) -> int:
    merged = merge([Path(p) for p in args.shards], Path(args.out), args.allow_partial)
    m = merged.metrics
    print(f"merged {len(merged.shards)} shard(s) of {merged.shards[0].shard.count} into {merged.out}: "
          f"{merged.problems} problems, accuracy {m['accuracy']:.3f}")
    if merged.missing:
        print(f"partial: {merged.missing} of {merged.study} problems missing (--allow-partial); the unsharded "
              f"`tts eval` command with --out {merged.out} generates them", file=sys.stderr)
    return 0
