"""`tts serve`: build the backend (engine started once), then serve the OpenAI-compatible API with uvicorn.

    tts serve [--host 127.0.0.1] [--port 8000] [--task math500] [--model M] [--backend vllm] [--scorer S]
              [--max-concurrent 64] [--max-queue 256] [--max-budget 64] [--max-tokens 4096] [--api-key K]

Everything the user typed is checked, and the port bound, before the engine starts (a minute on CPU); a
bad flag is one line with exit code 2 like every `tts` command. Ctrl-C shuts down cleanly: running searches
are cancelled and the engine is closed (the app's lifespan).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import Any

from tts.cli_args import (
    _int_at_least,
    non_negative_int,
    positive_int,
    strategy_option,
    unicode_text,
)
from tts.errors import UserError

API_KEY_ENV = "TTS_API_KEY"


def port(text: str) -> int:
    """A TCP port; 0 lets the system pick a free one (the banner shows which)."""
    value = _int_at_least(text, 0, "from 0 to 65535")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def host(text: str) -> str:
    text = unicode_text(text).strip()
    if not text:
        raise argparse.ArgumentTypeError("the host is empty")
    if "/" in text or " " in text:
        raise argparse.ArgumentTypeError(f"expected a host name or address such as 127.0.0.1, got {text!r}")
    return text


def api_key(text: str) -> str:
    text = unicode_text(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("the API key is empty")
    return text


def register(subparsers: Any) -> None:
    sv = subparsers.add_parser("serve", help="serve strategies as an OpenAI-compatible API (docs/serve.md)")
    sv.add_argument("--host", type=host, default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0: any free port)")
    sv.add_argument("--task", "-t", default="math500",
                    help="answer extraction, equivalence and default scorers for every request (default math500)")
    sv.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", type=strategy_option,
                    help="an option the task declares (values are JSON, else strings); see `tts list`")
    _add_backend_args(sv)
    sv.add_argument("--max-concurrent", type=positive_int, default=64, help="searches running at once")
    sv.add_argument("--max-queue", type=non_negative_int, default=256,
                    help="searches waiting for a slot; more are refused with 429 and Retry-After")
    sv.add_argument("--max-budget", type=positive_int, default=64, help="largest strategy n a request may ask for")
    sv.add_argument("--max-tokens", type=positive_int, default=4096,
                    help="largest max_tokens a request may ask for (a request without one gets min(512, this))")
    sv.add_argument("--api-key", type=api_key, default=None,
                    help=f"require 'Authorization: Bearer KEY' on every /v1 route (default: ${API_KEY_ENV}, else open)")
    sv.set_defaults(func=cmd_serve)


# `tts eval`'s generation flags that a request sets instead (strategy and sampling); --max-tokens is the cap here.
PER_REQUEST = frozenset({"strategy", "n", "option", "temperature", "top_p", "max_tokens", "top_logprobs"})


def _add_backend_args(sv: argparse.ArgumentParser) -> None:
    """The model, backend, scorer and seed flags exactly as `tts eval` has them (taken from its own argument
    list, so a backend flag added there is here too and `tts.cli._backend_options` finds every attribute)."""
    from tts.cli import _add_generation_args

    scratch = argparse.ArgumentParser(add_help=False)
    _add_generation_args(scratch)
    for action in scratch._actions:
        if action.dest not in PER_REQUEST:
            sv._add_action(action)


def bind(host_name: str, port_number: int) -> socket.socket:
    """The listening socket, bound now so a taken port is one line before the engine starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host_name, port_number, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host_name}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host_name}:{port_number}: {exc.strerror or exc}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tts.cli import _backend_options, _scorers, _task_options
    from tts.console import build_quietly
    from tts.registry import build_backend, build_task
    from tts.serve.app import create_app
    from tts.serve.schema import ServeSettings

    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(max_concurrent=args.max_concurrent, max_queue=args.max_queue,
                             max_budget=args.max_budget, max_tokens=args.max_tokens, api_key=key, seed=args.seed)
    task = build_task(args.task, **_task_options(args))
    try:
        task.make_problem("probe")
    except NotImplementedError as exc:
        raise UserError(f"{exc}; tts serve needs a task that poses free-text questions (math500, gsm8k)") from None
    scorers = _scorers(args, task)
    backend_options = _backend_options(args)
    sock = bind(args.host, args.port)
    try:
        backend, engine_log = build_quietly(args.backend, args.verbose,
                                            lambda: build_backend(args.backend, args.model, **backend_options))
        check = getattr(backend, "check", None)
        if check is not None:  # an unreachable server behind --backend openai: one line now, not per request
            asyncio.run(check())
        app = create_app(backend, task, settings=settings, scorers=scorers)
        where = f"http://{args.host}:{sock.getsockname()[1]}/v1"
        print(f"tts serve: {where} (task {task.name}, backend {args.backend}, model {backend.model}; "
              f"{'API key required' if key else 'no API key'}); Ctrl-C stops", flush=True)
        config = uvicorn.Config(app, log_level="info" if args.verbose else "warning",
                                access_log=args.verbose, timeout_graceful_shutdown=5)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C it caught
            pass
        print("tts serve: stopped", flush=True)
        if engine_log is not None:
            engine_log.close()
    finally:
        sock.close()
    return 0
