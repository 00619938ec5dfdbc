"""Name -> class for strategies, tasks, verifiers and backends, through entry points, and the builders.

Plugins living in other distributions register under the same groups (`tts.strategies`, `tts.tasks`,
`tts.verifiers`, `tts.backends`, `tts.scorers`) and appear here without any change to this package.

The builders (`build_task`, `build_strategy`, `build_backend`, `build_scorer`) turn a name and its options into an
object, validating the options against the plugin's declared model (a strategy's `Config`, a task's or
a backend's `Options`): a bad key or value is a one-line `UserError`. Every layer that needs a plugin
by name (the CLI, the API, the study, tree search's extra models) comes here; nothing below the API
imports `tts.api`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from tts.errors import UserError

if TYPE_CHECKING:
    from tts.backends.base import Backend
    from tts.scorer import Scorer
    from tts.strategy import Strategy
    from tts.task import Task

KINDS = ("strategies", "tasks", "verifiers", "backends", "scorers")
SINGULAR = {"strategies": "strategy", "tasks": "task", "verifiers": "verifier", "backends": "backend",
            "scorers": "scorer"}


@cache
def _entry_points(kind: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}")
    found = {ep.name: ep for ep in entry_points(group=f"tts.{kind}")}
    if not found:
        raise RuntimeError(
            f"no tts.{kind} entry points found: install the package (pip install -e .) so its plugins register"
        )
    return found


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


def get(kind: str, name: str) -> type:
    """The class registered under `name`, or a UserError that lists the valid names."""
    eps = _entry_points(kind)
    if name not in eps:
        raise UserError(f"unknown {SINGULAR.get(kind, kind)} {name!r}; choose one of: {', '.join(sorted(eps))}")
    return eps[name].load()


def describe(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) for every registered plugin of a kind."""
    rows = []
    for name in names(kind):
        try:
            rows.append((name, getattr(get(kind, name), "description", "")))
        except ImportError as exc:  # a plugin whose optional dependency is missing still gets listed
            rows.append((name, f"(unavailable: {exc})"))
    return rows


def options_model(kind: str, name: str) -> type[BaseModel] | None:
    """The pydantic model of a plugin's declared options (strategies: `Config`; tasks, backends: `Options`)."""
    cls = get(kind, name)
    model = getattr(cls, "Config" if kind == "strategies" else "Options", None)  # scorers: Options too
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def declaring(kind: str, key: str) -> list[str]:
    """The plugins of a kind whose declared options include `key` (for "--flag is only for ..." messages)."""
    found = []
    for name in names(kind):
        try:
            model = options_model(kind, name)
        except ImportError:
            continue
        if model is not None and key in model.model_fields:
            found.append(name)
    return found


def first_error(exc: Exception) -> str:
    """A pydantic validation error as "field: message" (the first problem only)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return str(exc)


# ---- builders -------------------------------------------------------------------------------------

def build_strategy(name: str, **options: Any) -> Strategy:
    cls = get("strategies", name)
    try:
        return cls(**options)
    except ValueError as exc:  # pydantic validation: bad n, unknown option
        raise UserError(f"bad options for strategy {name!r}: {first_error(exc)}") from None


def build_task(name: str, **options: Any) -> Task:
    """A task by name; options that are None are left at the task's defaults."""
    cls = get("tasks", name)
    try:
        return cls(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise UserError(f"bad options for task {name!r}: {first_error(exc)}") from None


def build_scorer(name: str, **options: Any) -> Scorer:
    """A scorer by name, its options validated by its `Options` model (a bad one is a one-line UserError)."""
    cls = get("scorers", name)
    try:
        return cls(**options)
    except ValidationError as exc:
        raise UserError(f"bad options for scorer {name!r}: {first_error(exc)}") from None


def build_scorers(names: list[str], options: list[tuple[str, Any]] | None = None) -> list[Scorer]:
    """Scorers by name (`--scorer`), each with its options (`--scorer-option`).

    An option key `NAME.KEY` goes to the scorer NAME (which must be chosen); a plain `KEY` goes to every
    chosen scorer that declares it (one must). `none` alone means no scorer. A name given twice is refused.
    """
    if names == ["none"]:
        if options:
            raise UserError("--scorer-option given with --scorer none")
        return []
    if "none" in names:
        raise UserError("--scorer none cannot be combined with other scorers")
    if len(set(names)) != len(names):
        raise UserError(f"a scorer is chosen twice: {', '.join(names)} (to record one scorer with two settings, "
                        "score again with `tts rescore` and a `label` option)")
    for name in names:
        get("scorers", name)  # an unknown name: one line listing the valid ones
    per: dict[str, dict[str, Any]] = {name: {} for name in names}
    by_key = {name.replace("-", "_"): name for name in names}
    for key, value in options or []:
        target, dot, field = key.partition(".")
        if dot:
            if target not in by_key:
                raise UserError(f"--scorer-option {key}: {target.replace('_', '-')!r} is not a chosen scorer "
                                f"(chosen: {', '.join(names)})")
            per[by_key[target]][field] = value
            continue
        owners = [n for n in names if key in (options_model("scorers", n) or BaseModel).model_fields]
        if not owners:
            raise UserError(f"--scorer-option {key}: no chosen scorer ({', '.join(names)}) has an option {key!r}"
                            + (f"; scorers that do: {', '.join(declaring('scorers', key))}"
                               if declaring("scorers", key) else ""))
        for owner in owners:
            per[owner][key] = value
    return [build_scorer(name, **per[name]) for name in names]


def validate_options(kind: str, name: str, options: dict[str, Any]) -> BaseModel | None:
    """`options` validated by the plugin's declared model (None if it declares none); a UserError
    "bad options for <kind> <name>: <field>: <problem>" otherwise."""
    model = options_model(kind, name)
    if model is None:
        return None
    try:
        return model(**options)
    except ValidationError as exc:
        raise UserError(f"bad options for {SINGULAR.get(kind, kind)} {name!r}: {first_error(exc)}") from None


def backend_options(name: str, **options: Any) -> dict[str, Any]:
    """A backend's options validated by its `Options` model, with its defaults filled in."""
    validated = validate_options("backends", name, options)
    return options if validated is None else dict(validated)


_BACKENDS: dict[tuple, Backend] = {}


def build_backend(backend: str | Backend = "vllm", model: str | None = None, base_url: str | None = None,
                  **options: Any) -> Backend:
    """A backend by name, cached per process (engines take a minute to start); an instance is returned
    unchanged. `base_url` is shorthand for the `base_url` option (backends that declare it)."""
    from tts.backends.base import Backend

    if isinstance(backend, Backend):
        return backend
    if base_url is not None:
        if "base_url" not in (options_model("backends", backend) or BaseModel).model_fields:
            raise UserError(f"--base-url is only for --backend {' or '.join(declaring('backends', 'base_url'))}")
        options = {**options, "base_url": base_url}
    key = (backend, model, json.dumps(options, sort_keys=True, default=repr))
    if key not in _BACKENDS:
        cls = get("backends", backend)
        _BACKENDS[key] = cls(model, **backend_options(backend, **options))
    return _BACKENDS[key]
