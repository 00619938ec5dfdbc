"""`tts view`: one self-contained HTML page for a run folder or a `tts scale` study folder (docs/view.md).

`build_page(folder)` reads the folder (tts.view.data, tts.view.study) and renders the page
(tts.view.page); `write_view(folder, out)` writes it. Reading never changes the folder and needs no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from tts.errors import UserError
from tts.view.data import folder_kind, read_run
from tts.view.page import render
from tts.view.study import study_html

DEFAULT_NAME = "view.html"


def build_page(folder: str | Path) -> str:
    path = Path(folder)
    kind = folder_kind(path)
    run = read_run(path) if kind in ("run", "run+study") else None
    study = study_html(path) if kind in ("study", "run+study") else None
    return render(path.resolve().name, run, study)


def write_view(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the page (default FOLDER/view.html) in one step: a reader never sees half a page."""
    page = build_page(folder)
    target = Path(out) if out is not None else Path(folder) / DEFAULT_NAME
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


__all__ = ["DEFAULT_NAME", "build_page", "write_view"]
