"""The documentation ships with the code: nothing points outside the repository, and no link is broken.

The project once cited three specification files kept in a folder beside the repository, which no user
of the package has. Everything they said that matters lives in docs/ now; this test keeps it that way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Built from parts so that this file does not match its own search.
_OUTSIDE_NAMES = [name + ".md" for name in ("ALGORITHMS", "DESIGN", "MODELS")]
_OUTSIDE_FOLDER = "shared" + "/"
OUTSIDE = re.compile("|".join(re.escape(s) for s in [*_OUTSIDE_NAMES, _OUTSIDE_FOLDER]))

# The package, its tests and tools, and its documentation.
SCANNED_DIRS = ["tts", "strategies", "tasks", "verifiers", "tests", "docs", "bench", "scripts", ".ci"]
SCANNED_FILES = ["README.md", "pyproject.toml", "install.sh"]
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".ini", ".yml", ".yaml"}
SKIP_PARTS = {"__pycache__", "data"}  # tasks/data holds benchmark records, not prose


def scanned_files() -> list[Path]:
    files = [REPO / name for name in SCANNED_FILES if (REPO / name).is_file()]
    for d in SCANNED_DIRS:
        root = REPO / d
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or SKIP_PARTS & set(path.relative_to(REPO).parts):
                continue
            if path.suffix in SUFFIXES or (d == ".ci" and not path.suffix):
                files.append(path)
    return files


def test_nothing_points_outside_the_repository():
    hits = []
    for path in scanned_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not hits, "references to files users do not have (point to docs/ instead):\n" + "\n".join(hits)


# ------------------------------------------------------------------------------------------------ links

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        if m := HEADING.match(line):
            title = re.sub(r"[`*_]", "", m.group(1)).lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return found


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(path.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_every_algorithm_page_is_in_the_index():
    index = REPO / "docs" / "algorithms" / "README.md"
    listed = {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    pages = {p.resolve() for p in index.parent.glob("*.md") if p.name != "README.md"}
    assert pages <= listed, f"pages missing from the index: {sorted(p.name for p in pages - listed)}"
