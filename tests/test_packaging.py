"""The installed layout: one `tts` namespace, nothing else at the top level of site-packages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = {"strategies": "tts/strategies", "tasks": "tts/tasks", "verifiers": "tts/verifiers", "scorers": "tts/scorers"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    # build from a copy of the working tree's files, so the checkout gets no build/ or egg-info
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = out.glob("tts_toolkit-*.whl")
    return zipfile.ZipFile(path)


def test_everything_installs_under_tts(wheel):
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tts"}


def test_plugin_folders_and_data_are_in_the_wheel(wheel):
    names = set(wheel.namelist())
    for must in ("tts/strategies/rpc.py", "tts/tasks/gsm8k.py", "tts/tasks/data/humaneval/HumanEval.jsonl.gz",
                 "tts/verifiers/code.py", "tts/verifiers/judge_process.py", "tts/verifiers/wire.py",
                 "tts/sandbox/driver.py", "tts/sandbox/process.py"):
        assert must in names, must


def test_every_package_of_the_checkout_is_packaged(wheel):
    """A new sub-package must be listed in pyproject.toml, or it would be missing from installs."""
    names = set(wheel.namelist())
    for init in ROOT.glob("**/__init__.py"):
        rel = init.relative_to(ROOT)
        if rel.parts[0] in (".venv", "tests", "bench", "build", "scripts") or rel.parts[0].startswith("."):
            continue
        top = PLUGIN_DIRS.get(rel.parts[0], rel.parts[0])
        installed = "/".join([top, *rel.parts[1:]])
        assert installed in names, f"{rel} is not packaged (add it to [tool.setuptools] packages)"


def test_entry_points_name_the_tts_namespace(wheel):
    (ep,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    values = re.findall(r"^\S+ = (\S+)$", wheel.read(ep).decode(), re.M)
    assert values and all(v.startswith("tts.") for v in values), values


def test_no_source_imports_the_old_top_level_names():
    pattern = re.compile(r"^\s*(from|import)\s+(strategies|tasks|verifiers)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for d in ("tts", "strategies", "tasks", "verifiers", "tests", "bench")
                 for p in (ROOT / d).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
