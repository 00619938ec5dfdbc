"""The viewer page: one HTML file with inline CSS, inline JavaScript and the data as JSON, nothing fetched.

Model text is untrusted. It reaches the page only inside `<script type="application/json">` blocks, with
`<`, `>` and `&` (and the two JavaScript line separators) written as \\u escapes, so no text can close the
block; the script puts it into the document as text nodes only. A Content-Security-Policy allows no
network access and runs only the page's own script (by its hash), so even a markup mistake could not run
injected code. Each problem's details sit in a block of their own, parsed when the problem is opened, so
a run of thousands of problems opens quickly.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from importlib import resources
from typing import Any

from tts.view.data import RunData

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def embed_json(data: Any) -> str:
    """JSON safe to put between <script type="application/json"> tags: no character of it can end the block."""
    text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"), default=str)
    for char, escaped in _ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def asset(name: str) -> str:
    return resources.files("tts.view").joinpath("assets", name).read_text(encoding="utf-8")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _compact(x: Any, limit: int = 400) -> str:
    text = x if isinstance(x, str) else json.dumps(_finite(x), separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(x: Any) -> str:
    return "–" if not isinstance(x, int | float) else f"{100 * x:.1f}%"


def _int(x: Any) -> str:
    return "–" if not isinstance(x, int | float) else f"{x:,.0f}"


def _flops(x: Any) -> str:
    return "unknown" if not isinstance(x, int | float) else f"{x:.3g}"


def _dl(pairs: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs) + "</dl>"


def _scorers(config: dict[str, Any]) -> str:
    scorers = config.get("scorers")
    if not scorers:
        return "none (or the task's defaults)" if scorers is None else "none"
    if isinstance(scorers, list):
        return ", ".join(str(s.get("name", s)) if isinstance(s, dict) else str(s) for s in scorers)
    return _compact(scorers)


def header_html(run: RunData) -> str:
    """The run's settings and totals, from config.json and metrics.json (else from the finished problems)."""
    c, m, live = run.config, run.metrics, run.live
    settings = [("task", _compact(c.get("task", "?"))), ("strategy", _compact(c.get("strategy", "?"))),
                ("options", _compact(c.get("strategy_options") or {})), ("model", _compact(c.get("model", "?"))),
                ("backend", _compact(c.get("backend", "?"))), ("scorers", _scorers(c)),
                ("sampling", _compact(c.get("sampling") or {})), ("seed", _compact(c.get("seed", "?")))]
    source = m if m is not None else live
    usage = source.get("usage") or {}
    coverage = source.get("coverage") or {}
    totals = [("problems", f"{len(run.problems)} finished" + (f" (metrics.json: {m.get('problems')})" if m else "")),
              ("accuracy", _pct(source.get("accuracy"))),
              ("coverage", ", ".join(f"{k} {_pct(v)}" for k, v in coverage.items()) or "–")]
    spend = [("completion tokens", _int(usage.get("completion_tokens"))),
             ("prompt tokens", f"{_int(usage.get('prompt_tokens'))} ({_int(usage.get('cached_tokens'))} cached)"),
             ("scorer tokens", _int((usage.get("scorer_prompt_tokens") or 0)
                                    + (usage.get("scorer_completion_tokens") or 0))),
             ("generator FLOPs", _flops(usage.get("generator_flops"))),
             ("scorer FLOPs", _flops(usage.get("scorer_flops"))),
             ("wall time", f"{usage.get('wall_time', 0):.1f} s summed over problems"
              + (f"; session {m['session_seconds']:.1f} s" if m and isinstance(m.get("session_seconds"), int | float)
                 else ""))]
    note = ("metrics.json not written yet: totals of the problems finished so far" if m is None
            else "totals from metrics.json")
    return (f'<div class="meta">{_dl(settings)}{_dl(totals)}{_dl(spend)}</div>'
            f'<div class="note">{_e(note)}. <details><summary>config.json</summary>'
            f"<pre>{_e(json.dumps(_finite(c), indent=1, default=str))}</pre></details></div>")


RUN_LAYOUT = """<main id="run">
<aside id="list">
<div id="filters"><button data-filter="all" class="on">all</button><button data-filter="correct">correct</button>\
<button data-filter="incorrect">incorrect</button></div>
<input id="search" type="search" placeholder="search problem id or answer" aria-label="search problems">
<div id="shown" class="note"></div>
<ul id="problems"></ul>
</aside>
<section id="detail"><p class="note">Select a problem.</p></section>
</main>"""


def render(title: str, run: RunData | None, study: str | None) -> str:
    """The whole page: the run (header, problem list, details on demand) and/or the study section."""
    script = asset("view.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
           "base-uri 'none'; form-action 'none'")
    parts = [f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tts view: {_e(title)}</title><link rel="icon" href="data:,">
<style>{asset("view.css")}</style></head>
<body>
<header><h1>{_e(title)}</h1>"""]
    if run is not None:
        parts.append(header_html(run))
    parts.append("</header>")
    if study is not None:
        parts.append(study)
    if run is not None:
        parts.append(RUN_LAYOUT)
        index = {"problems": [p.model_dump(mode="json") for p in run.problems]}
        parts.append(f'<script type="application/json" id="tts-index">{embed_json(index)}</script>')
        for i, d in enumerate(run.details):
            parts.append(f'<script type="application/json" id="tts-p-{i}">{embed_json(d.model_dump(mode="json"))}'
                         "</script>")
    parts.append(f"<script>{script}</script>\n</body></html>\n")
    return "\n".join(parts)
