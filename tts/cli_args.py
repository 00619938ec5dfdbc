"""Argument types for the `tts` commands: each validates a value where it enters, so bad input is one
line on stderr with exit code 2 (argparse's convention), never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from tts.backends.routing import url_problem
from tts.errors import UserError


def _int_at_least(text: str, minimum: int, bound: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "0 or more")


def positive_int_list(text: str) -> list[int]:
    """Comma-separated integers, each at least 1 (`--budgets 4,8,16`): sorted, without repeats."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 4,8,16, got {text!r}")
    return sorted({_int_at_least(part, 1, "at least 1") for part in parts})


def list_of(parse: Callable[[str], float]) -> Callable[[str], list[float]]:
    """Comma-separated values, each checked by `parse` (`--ac-threshold 0.8,0.95`): sorted, without repeats."""
    def parse_list(text: str) -> list[float]:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated values such as 0.8,0.95, got {text!r}")
        return sorted({parse(part) for part in parts})

    return parse_list


def top_logprobs(text: str) -> int:
    value = _int_at_least(text, 0, "0 or more")
    if value > 20:
        raise argparse.ArgumentTypeError(f"must be at most 20 (what OpenAI-compatible servers allow), got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def temperature(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (0 is greedy), got {text!r}")
    return value


def probability(text: str) -> float:
    """top-p: a share of the probability mass, 0 < p <= 1."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most 1, got {text!r}")
    return value


def seconds(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def unicode_text(text: str) -> str:
    """Text from the command line: arguments that are not valid UTF-8 arrive as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raw = bad.encode("utf-8", "surrogateescape") if "\udc80" <= bad <= "\udcff" else None
        what = f"byte 0x{raw[0]:02x}" if raw else f"a lone surrogate {bad!r}"
        raise argparse.ArgumentTypeError(f"not valid UTF-8 text ({what} at character {exc.start})") from None
    return text


def question_text(text: str) -> str:
    text = unicode_text(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("the question is empty")
    return text


def server_url(text: str) -> str:
    text = unicode_text(text)
    problem = url_problem(text)  # the same check the openai backend applies to its base_url option
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def read_url_file(path: str) -> list[str]:
    """The server URLs of a `--base-url-file`: one a line, `#` comments and blank lines ignored; a bad line
    is a UserError naming file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--base-url-file not found: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"--base-url-file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read --base-url-file {path}: {exc.strerror or exc}") from None
    urls = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            urls.append(server_url(line))
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"--base-url-file {path}:{number}: {exc}") from None
    if not urls:
        raise UserError(f"--base-url-file {path} names no server URL")
    return urls


def base_url_shortcut(flags: list[str] | None, path: str | None) -> tuple[str, str | list[str] | None]:
    """(flag, value) of the backend's base_url from `--base-url` (repeatable) and `--base-url-file`: None
    when neither is given, one URL as text (as before several were possible), several as a list."""
    urls = [*(flags or []), *(read_url_file(path) if path is not None else [])]
    flag = "--base-url-file" if path is not None and not flags else "--base-url"
    if not urls:
        return flag, None
    return flag, urls[0] if len(urls) == 1 else urls


def engine_arg_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """The `--engine-arg KEY=VALUE` pairs as one dict (None when none were given); its keys are checked
    against vLLM's EngineArgs here, so the message names the flag."""
    if not pairs:
        return None
    from tts.backends.engine_args import engine_args_problem

    args: dict[str, Any] = {}
    for key, value in pairs:
        if key in args and args[key] != value:
            raise UserError(f"--engine-arg {key} given twice ({json.dumps(args[key])} and {json.dumps(value)})")
        args[key] = value
    problem = engine_args_problem(args)
    if problem:
        raise UserError(f"--engine-arg: {problem}")
    return args


def writable_folder(text: str) -> Path:
    """An output folder: an existing folder we may write in, or one that can be created."""
    path = Path(unicode_text(text))
    problem = folder_write_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write the folder {path}: {problem}")
    return path


def folder_write_problem(path: Path) -> str | None:
    """Why `path` cannot be used as an output folder, without writing anything; None if it looks usable."""
    if path.exists() and not path.is_dir():
        return "it is a file"
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return "no part of the path exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"no permission to write in {probe}"
    return None


def strategy_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE (for -o, --task-option, --backend-option): the value as JSON, else as a string; dashes
    in the key become underscores."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse's own convention)
        raise UserError(message)
