"""A `tts scale` output folder as an HTML section: report.md rendered (its tables, its plots inline) and any
other plot of the folder, each image embedded as a data URI so the page needs no other file.

report.md is rendered by a small converter for the few constructs the study writes (headings, tables,
list items, paragraphs, images, **bold** and `code`). Every piece of text is HTML-escaped before the
markup is added, so a run label or a scorer name cannot inject anything. SVG plots go into <img> tags,
where the browser runs no script they might hold.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from pydantic import ValidationError

from tts.errors import UserError

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _inline(text: str) -> str:
    """Escape, then add the markup of **bold** and `code` (applied to escaped text: nothing can be injected)."""
    out = html.escape(text, quote=True)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def _image(folder: Path, name: str, alt: str) -> str:
    """A plot of the folder inline; a name outside the folder or of another type stays a note."""
    path = (folder / name).resolve()
    if path.parent != folder.resolve() or path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
        return f'<p class="missing">plot not embedded: {html.escape(name)}</p>'
    return (f'<figure><img alt="{html.escape(alt, quote=True)}" src="{data_uri(path)}">'
            f"<figcaption>{html.escape(alt or name)}</figcaption></figure>")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_html(text: str, folder: Path) -> tuple[str, set[str]]:
    """report.md as HTML, and the image names it embedded."""
    out: list[str] = []
    used: set[str] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level + 1}>{_inline(line[level:].strip())}</h{level + 1}>")
            i += 1
        elif (m := _IMAGE.match(line.strip())) is not None:
            used.add(m.group(2))
            out.append(_image(folder, m.group(2), m.group(1)))
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                if not re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i]):  # the header's separator row
                    rows.append(_cells(lines[i]))
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) if rows else ""
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif line.lstrip().startswith("- "):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith("- "):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("#", "|", "- ", "![")):
                para.append(lines[i].strip())
                i += 1
            if not para:  # a line starting with "![" that is not an image
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out), used


def _scaling_table(folder: Path) -> str:
    """Without report.md: the coverage and selector accuracy per k from scaling.json."""
    from tts.study.schema import ScalingFile

    path = folder / "scaling.json"
    try:
        data = ScalingFile.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a scaling study ({str(exc).splitlines()[0]})") from None
    parts = []
    for study in data.studies:
        curves = [study.coverage, *study.selectors]
        head = "".join(f"<th>{html.escape(c.name)}</th>" for c in curves)
        rows = []
        for k in study.ks:
            cells = []
            for c in curves:
                p = c.at(k)
                cells.append("–" if p is None else f"{100 * p.value:.1f}")
            rows.append(f"<tr><td>{k}</td>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        parts.append(f"<h3>{html.escape(study.label)}</h3><p>task {html.escape(study.task)}, {study.problems} "
                     f"problems, {study.samples} samples (accuracy in %)</p><div class=\"scroll\"><table><thead><tr>"
                     f"<th>k</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    return "\n".join(parts)


def study_html(folder: Path) -> str:
    """The study section of the page."""
    report = folder / "report.md"
    if report.is_file():
        try:
            body, used = markdown_html(report.read_text(encoding="utf-8"), folder)
        except UnicodeDecodeError:
            raise UserError(f"{report} is not UTF-8 text") from None
    else:
        body, used = _scaling_table(folder), set()
    others = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in IMAGE_TYPES and p.is_file() and p.name not in used)
    if others:
        body += "\n<h2>Other plots in the folder</h2>\n" + "\n".join(_image(folder, p.name, p.name) for p in others)
    return f'<section id="study" class="study">{body}</section>'
