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


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
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
    return records


def require_fields(records: list[dict], fields: tuple[str, ...], origin: str) -> None:
    for i, record in enumerate(records, 1):
        missing = [f for f in fields if f not in record]
        if missing:
            raise UserError(f"{origin}: record {i} lacks field(s) {', '.join(missing)}")


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
