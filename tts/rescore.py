"""`tts rescore`: score the stored candidates of a finished run with more scorers, without generating again.

    tts rescore RUN_DIR --scorer NAME [--scorer NAME ...] [--scorer-option [NAME.]KEY=VALUE ...] --out NEW_DIR

Scorers are compared on the same pool this way (a judge, a reward model and a confidence measure on
the very samples a run drew), which is what `tts scale` then reads. The new folder is a run folder of its
own: the source's config with the new scorers appended to `scorers` and `rescored_from` set, every
sample with the new verdicts added to its `selection`, and every problem's usage with the scoring cost
added (generation counts stay the source's). The strategy's choice is not redone. Like `tts eval` it is
resumable: rerunning the same command scores only the problems not yet written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from tts.backends.base import Backend
from tts.cli_args import positive_int, strategy_option, writable_folder
from tts.errors import BackendError, UserError
from tts.types import GenerationRequest, Sample

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("rescore", help="score a finished run's candidates with more scorers (no generation); "
                                              "writes a new run folder that `tts scale` reads")
    p.add_argument("run", metavar="RUN_DIR", help="a run folder made by `tts eval`")
    p.add_argument("--scorer", action="append", required=True, metavar="NAME", help="a scorer (repeatable)")
    p.add_argument("--scorer-option", action="append", default=[], metavar="[NAME.]KEY=VALUE", type=strategy_option,
                   help="an option a scorer declares (see `tts list`)")
    p.add_argument("--out", required=True, type=writable_folder, help="the new run folder")
    p.add_argument("--concurrency", type=positive_int, default=64, help="problems scored at once")
    p.add_argument("--verbose", "-v", action="store_true", help="show the engine's own output here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_rescore)


def read_source(source: Path, out: Path, scorers: list[Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]],
                                                                       dict[str, list[dict[str, Any]]]]:
    """The source run's config, finished result rows by problem id and sample rows by problem id; a
    UserError if it is not a finished run, if `out` is the source, or if a scorer's label is taken."""
    from tts.runs import RunFolder, read_config

    if out.resolve() == source.resolve():
        raise UserError("--out must be a new folder, not the run being rescored")
    config = read_config(source / "config.json") if (source / "config.json").is_file() else None
    if config is None:
        raise UserError(f"{source} is not a run folder (no readable config.json)")
    rows = {str(r["problem_id"]): r for r in RunFolder(source).results()}
    if not rows:
        raise UserError(f"{source} has no finished problem to rescore")
    samples: dict[str, list[dict[str, Any]]] = {}
    for s in RunFolder(source).samples():
        samples.setdefault(str(s["problem_id"]), []).append(s)
    recorded = {v.get("verifier") for group in samples.values() for s in group for v in s.get("selection") or []}
    again = [s.label for s in scorers if s.label in recorded]
    if again:
        raise UserError(f"{source} already holds verdicts named {', '.join(again)}; give the new scorer another "
                        "name with --scorer-option label=NAME")
    new_config = {**config, "scorers": [*(config.get("scorers") or []), *(s.identity() for s in scorers)],
                  "rescored_from": str(source.resolve())}
    new_config.pop("served_identity", None)  # the runner records what serves the scoring now
    return new_config, rows, samples


def cmd_rescore(args: argparse.Namespace) -> int:
    from tts import registry
    from tts.runs import RunFolder

    source, out = Path(args.run), Path(args.out)
    scorers = registry.build_scorers(args.scorer, args.scorer_option)
    config, rows, samples = read_source(source, out, scorers)
    task = registry.build_task(config["task"], **(config.get("task_options") or {}))
    problems = {it.problem.id: it.problem for it in task.load() if it.problem.id in rows}
    missing = sorted(set(rows) - set(problems))
    if missing:
        raise UserError(f"{len(missing)} problem(s) of {source} are not in task {config['task']!r} "
                        f"(first: {missing[0]})")
    from tts.console import build_quietly

    options = dict(config.get("backend_options") or {})
    declared = registry.options_model("backends", config["backend"])
    for key in ("dtype", "seed"):  # identity keys of their own in config.json
        if config.get(key) is not None and declared is not None and key in declared.model_fields:
            options.setdefault(key, config[key])
    if any(s.calls_model for s in scorers):
        backend, engine_log = build_quietly(config["backend"], args.verbose, lambda: registry.build_backend(
            config["backend"], config.get("model"), **options))
    else:  # scorers that read the stored samples only (confidence, sandboxed examples): no engine to start
        backend, engine_log = RecordedPolicy(config), None
    run = RunFolder(out)

    async def main() -> int:
        try:
            out.mkdir(parents=True, exist_ok=True)
            if engine_log is not None:
                engine_log.move_to(out / "engine.log")
            return await rescore(run, config, rows, samples, problems, task, scorers, backend,
                                 args.concurrency, not args.no_progress)
        finally:
            for scorer in scorers:
                await scorer.aclose()
            await backend.aclose()
            if engine_log is not None:
                engine_log.close()

    done = asyncio.run(main())
    print(f"rescored {done} problems into {out} (scorers: {', '.join(s.name for s in scorers)}); "
          f"`tts scale {out}` compares them")
    return 0


class RecordedPolicy(Backend):
    """Stands for the run's model when no scorer calls one: it serves the identity config.json recorded and
    refuses to generate (a scorer that calls a model must say so with `calls_model`)."""

    name = "recorded"
    description = "the run's recorded model, for rescoring without an engine"

    def __init__(self, config: dict[str, Any]):
        self.model = str(config.get("model"))
        self.config = config

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        raise BackendError("rescoring without an engine, yet a scorer asked the policy model to generate")

    async def served_identity(self) -> dict[str, Any]:
        from tts.runs import SERVED_KEY

        return dict(self.config.get(SERVED_KEY) or {"backend": self.config.get("backend"), "model": self.model})


async def rescore(run: Any, config: dict[str, Any], rows: dict[str, dict[str, Any]],
                  samples: dict[str, list[dict[str, Any]]], problems: dict[str, Any], task: Any, scorers: list[Any],
                  backend: Any, concurrency: int, progress: bool) -> int:
    """Score every not-yet-written problem of `rows` and append it to `run`; the number written now."""
    from tqdm.auto import tqdm

    from tts.runner import FLOPS_FIELDS, run_metrics
    from tts.runs import SERVED_KEY
    from tts.strategy import StrategyContext
    from tts.types import Candidate, Result, TokenTrace, Usage, Verdict

    config = {**config, SERVED_KEY: await backend.served_identity()}
    with run.lock():
        finished = run.open(config)
        todo = [pid for pid in rows if pid not in finished]
        limit = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(rows), initial=len(rows) - len(todo), disable=not progress, unit="problem",
                   desc="rescore", dynamic_ncols=True)
        started = time.perf_counter()

        async def one(pid: str) -> None:
            row = rows[pid]
            group = sorted(samples.get(pid, []), key=lambda s: s["index"])
            candidates = [Candidate(text=s["text"], answer=s.get("answer"), completion_tokens=s["completion_tokens"],
                                    mean_logprob=s.get("mean_logprob"), finish_reason=s.get("finish_reason"),
                                    verdicts=[Verdict(**v) for v in s.get("selection") or []],
                                    trace=TokenTrace(**s["trace"]) if s.get("trace") else None,
                                    info=s.get("info") or {}) for s in group]
            async with limit:
                ctx = StrategyContext(backend=backend, answers=task, scorers=scorers, usage=Usage())
                await ctx.score(problems[pid], candidates)
            scoring = ctx.usage.model_dump(include={k for k in Usage.model_fields
                                                    if k.startswith("scorer") or k == "verifier_calls"})
            before = {**{k: None for k in FLOPS_FIELDS}, **row["usage"]}  # FLOPs not recorded: unknown
            usage = Usage(**before) + Usage(**scoring)  # FLOPs: an unknown part keeps the total unknown
            result = Result(problem_id=pid, strategy=row["strategy"], answer=row.get("answer"),
                            confidence=row.get("confidence"), chosen=row.get("chosen"), candidates=candidates,
                            usage=usage, info=row.get("info") or {})
            oracle = [Verdict(verifier="oracle", score=float(bool(s.get("correct"))), passed=s.get("correct"),
                              feedback=s.get("oracle_feedback") or "", isolation=s.get("oracle_isolation"))
                      for s in group]
            chosen = oracle[result.chosen] if result.chosen is not None and result.chosen < len(oracle) else None
            if chosen is not None and bool(chosen.passed) != bool(row.get("correct")):
                chosen = chosen.model_copy(update={"passed": bool(row.get("correct"))})
            run.append(result, oracle, chosen)
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as tasks:
                for pid in todo:
                    tasks.create_task(one(pid))
        finally:
            bar.close()
        metrics = run_metrics(run, set(rows), time.perf_counter() - started)
        run.write_metrics(metrics)
    return len(todo)

