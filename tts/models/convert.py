"""GGUF -> a Hugging Face model folder vLLM loads (float32 safetensors, tokenizer, chat template).

The tensors are dequantised with transformers' GGUF reader (which also undoes llama.cpp's rotary
permutation of q/k); the tokenizer and its chat template are saved and read back to check them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tts.errors import UserError
from tts.models.cache import Progress, open_permissions, stderr_progress

# Architectures whose conversion has been checked end to end (weights, tokenizer, vLLM load).
# Others that transformers' GGUF reader maps are attempted, with a note.
TESTED_ARCHITECTURES = {"llama", "qwen2"}




def convert_gguf(
    gguf_path: str | os.PathLike, out_dir: str | os.PathLike, progress: Progress | None = None
) -> Path:
    """Convert a GGUF file into a Hugging Face model folder vLLM can load, written atomically.

    The folder holds config.json, model.safetensors (float32, dequantised), generation_config.json
    and the tokenizer with its chat template. It is built in a temporary sibling of `out_dir` and
    renamed into place, so `out_dir` never exists half-written; an existing `out_dir` is an error.
    `progress` receives one-line messages (default: printed to stderr).
    """
    progress = progress or stderr_progress
    src = Path(gguf_path).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if not src.is_file():
        raise UserError(f"GGUF file not found: {src}")
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        convert_into(src, tmp, progress)
        open_permissions(tmp)
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


def convert_into(src: Path, out: Path, progress: Progress, model_name: str | None = None) -> None:
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
    if arch not in TESTED_ARCHITECTURES:
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
    from gguf import GGUFReader
    from transformers import AutoTokenizer

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


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


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
        raise UserError(f"{path.name} is not a complete GGUF file ({size} bytes; truncated or corrupt?): "
                        f"{exc}") from exc
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UserError(f"{path.name} has no general.architecture: not a model GGUF file?")
    arch = bytes(field.parts[field.data[0]]).decode()
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise UserError(f"{path.name} is truncated: its tensors need {end} bytes, the file has {size}")
    if arch not in TESTED_ARCHITECTURES:
        raise UserError(
            f"{path.name}: GGUF architecture {arch!r} is not supported; "
            f"supported: {', '.join(sorted(TESTED_ARCHITECTURES))}"
        )
    return arch
