"""Name -> class for strategies, tasks, verifiers and backends, through entry points.

Plugins living in other distributions register under the same groups (`tts.strategies`, `tts.tasks`,
`tts.verifiers`, `tts.backends`) and appear here without any change to this package.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from tts.errors import UserError

KINDS = ("strategies", "tasks", "verifiers", "backends")


@lru_cache(maxsize=None)
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
        singular = kind[:-1] if kind != "strategies" else "strategy"
        raise UserError(f"unknown {singular} {name!r}; choose one of: {', '.join(sorted(eps))}")
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
