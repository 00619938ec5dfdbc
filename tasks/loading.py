"""Where benchmark records come from: a local folder, the package's own copy, or the Hugging Face hub.

Local JSONL is read line by line so a malformed line is reported by file and line number.
The hub is used only when no local source was named, the hub is not switched off
(`HF_HUB_OFFLINE=1` or `TTS_DATA_SOURCE=local`) and it answers quickly.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from tts.errors import UserError

PACKAGED = Path(__file__).parent / "data"


class Records(list):
    """Records read from a JSONL file, with the line number of each (so errors can point at the line)."""

    def __init__(self, rows: list[dict[str, Any]], lines: list[int]):
        super().__init__(rows)
        self.lines = lines


def read_jsonl(path: str | Path) -> Records:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    records, lines = [], []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: malformed JSON line ({exc.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
            lines.append(lineno)
    return Records(records, lines)


def where(records: list[dict], index: int, origin: str) -> str:
    """`file:line` of the record at `index` (0-based) where the line is known, else `origin: record i`."""
    lines = getattr(records, "lines", None)
    if lines is not None and index < len(lines):
        return f"{origin}:{lines[index]}"
    return f"{origin}: record {index + 1}"


def _line(records: list[dict], index: int) -> str:
    lines = getattr(records, "lines", None)
    return f"line {lines[index]}" if lines is not None and index < len(lines) else f"record {index + 1}"


def bad_value(value: Any, numbers: bool = True) -> str | None:
    """Why a field's value cannot be a question, answer or id (None if it can): null, empty, not text."""
    if value is None:
        return "is null"
    if isinstance(value, str):
        return "is empty" if not value.strip() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and numbers:
        return None
    return f"is {type(value).__name__} {json.dumps(value, default=str)[:40]}, expected text"


def require_fields(records: list[dict], fields: tuple[str, ...], origin: str, unique: str | None = None) -> None:
    """Every record has every field with a usable value (not missing, null or empty); `unique` names a field
    whose values must all differ (the problem id). Errors name the file and line."""
    for i, record in enumerate(records):
        missing = [f for f in fields if f not in record]
        if missing:
            raise UserError(f"{where(records, i, origin)}: record lacks field(s) {', '.join(missing)}")
        for f in fields:
            problem = bad_value(record[f])
            if problem:
                raise UserError(f"{where(records, i, origin)}: field {f!r} {problem}")
    if unique is not None:
        require_unique_ids([str(r[unique]) for r in records], records, origin)


def require_unique_ids(ids: list[str], records: list[dict], origin: str) -> None:
    """Problem ids (one per record) must differ: a run folder keys everything by id."""
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid in first:
            raise UserError(f"{origin}: duplicate id {pid!r} ({_line(records, first[pid])} and {_line(records, i)}); "
                            "problem ids must be unique")
        first[pid] = i


def hub_allowed() -> bool:
    if os.environ.get("TTS_DATA_SOURCE", "auto") == "local" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    if os.environ.get("TTS_DATA_SOURCE") == "hub":
        return True
    try:
        import httpx

        httpx.head("https://huggingface.co", timeout=2.0)
        return True
    except Exception:
        return False


def load_hub(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets

    return [dict(r) for r in datasets.load_dataset(name, config, split=split)]


def load_records(
    data_dir: Path | None, relpath: str, hub: tuple[str, str | None, str] | None
) -> tuple[list[dict[str, Any]], str]:
    """Records and a description of where they came from (recorded in the run's config)."""
    if data_dir is not None:
        path = data_dir / relpath
        if not path.is_file() and (data_dir / Path(relpath).name).is_file():
            path = data_dir / Path(relpath).name
        return read_jsonl(path), str(path)
    if hub is not None and hub_allowed():
        try:
            return load_hub(*hub), f"hub:{hub[0]}"
        except Exception:  # hub listed but unusable: the packaged copy holds the same records
            pass
    path = PACKAGED / relpath
    return read_jsonl(path), str(path)
