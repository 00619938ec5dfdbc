"""Where benchmark records come from: a local folder, the package's own copy, or the Hugging Face hub.

Local JSONL is read line by line so a malformed line is reported by file and line number.
The hub is used only when no local source was named, the hub is not switched off
(`HF_HUB_OFFLINE=1` or `TTS_DATA_SOURCE=local`) and it answers quickly.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
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
    gz = path.suffix == ".gz"
    opener = gzip.open if gz else open
    records, lines = [], []
    try:
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
                if "\\u" in line:  # an escape may spell a lone surrogate, which is no text at all
                    _require_unicode(record, f"{path}:{lineno}")
                records.append(record)
                lines.append(lineno)
    except UnicodeDecodeError:
        raise UserError(f"{path}:{_not_utf8(path, gz)}; expected JSON lines") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable gzip file ({exc}); "
                        "name it .jsonl unless it is gzip-compressed") from None
    except IsADirectoryError:
        raise UserError(f"data file not found: {path}") from None
    return Records(records, lines)


def _not_utf8(path: Path, gz: bool) -> str:
    """`LINE: not UTF-8 text (byte 0xNN)` for the first undecodable byte of a file."""
    with (gzip.open if gz else open)(path, "rb") as fh:
        raw = fh.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return f"{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"
    return "1: not UTF-8 text"


def _require_unicode(value: Any, where: str) -> None:
    """Reject strings that cannot be encoded: a JSON line may spell a lone surrogate such as "\\udc80"."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UserError(f"{where}: text that is not valid Unicode (lone surrogate "
                            f"\\u{ord(value[exc.start]):04x})") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _require_unicode(key, where)
            _require_unicode(item, where)
    elif isinstance(value, list):
        for item in value:
            _require_unicode(item, where)


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
