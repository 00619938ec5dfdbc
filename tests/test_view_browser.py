"""`tts view` pages in a real headless Chromium, driven over the DevTools protocol (tests/cdp.py).

For run folders of each kind, made by the runner on scripted backends (tests/view_runs.py): the page loads
with no console error, exception or error log entry; the problem list holds every finished problem;
clicking works (problems, filters, tree nodes with a real mouse click); hostile model text shows as text and
runs nothing (`window.__pwned` stays undefined). Each test saves a screenshot to
tests/artifacts/view-<kind>.png for a person to look at.

Chromium missing: skipped with the reason, except under CI (the CI variable set), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import view_runs
from tests.view_runs import HOSTILE
from tts.view import write_view

ARTIFACTS = Path(__file__).parent / "artifacts"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the viewer's browser tests (install.sh installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from tests.cdp import Chromium, find_chromium
    except ImportError as exc:  # websockets is a dev dependency
        _unavailable(f"cannot import the DevTools client: {exc}")
    binary = find_chromium()
    if binary is None:
        _unavailable("chromium is not installed (apt-get install chromium)")
    chromium = Chromium(binary)
    try:
        yield chromium
    finally:
        chromium.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def open_page(browser: Any, folder: Path) -> Any:
    page = await browser.page()
    await page.goto(write_view(folder).resolve().as_uri())
    return page


async def until(page: Any, expression: str, timeout: float = 5.0) -> Any:
    """The expression's value once it is truthy (the page reacts to an input event)."""
    for _ in range(int(timeout / 0.05)):
        value = await page.eval(expression)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true: {expression}")


async def finish(page: Any, kind: str) -> None:
    """No errors, nothing injected ran; the screenshot saved."""
    assert await page.eval("typeof window.__pwned") == "undefined"
    assert page.errors == []
    path = await page.screenshot(ARTIFACTS / f"view-{kind}.png")
    print(f"screenshot: {path}")
    await page.close()


async def click_node(page: Any, node: int) -> None:
    """A real mouse click at the centre of a tree node's circle."""
    rect = await page.eval(f"""(() => {{
        const c = document.querySelector('#tree-svg g[data-node="{node}"] circle');
        c.scrollIntoView({{block: 'center', inline: 'center'}});
        const r = c.getBoundingClientRect();
        return {{x: r.x + r.width / 2, y: r.y + r.height / 2}};
    }})()""")
    await page.click_at(rect["x"], rect["y"])


async def test_sampling_run_page(browser, tmp_path):
    run = await view_runs.sampling_run(tmp_path / "run")
    results = lines(run / "results.jsonl")
    page = await open_page(browser, run)
    # the list holds every finished problem; the first is open
    assert await page.eval("document.querySelectorAll('#problems li').length") == len(results) == 4
    assert await page.eval("document.querySelector('#detail h2').textContent") == "✓ toy/0"
    assert [r["correct"] for r in results] == [True, True, True, False]
    # filters: correct / incorrect / a search over ids and answers
    visible = ("[...document.querySelectorAll('#problems li')].filter(li => li.getClientRects().length > 0)"
               ".map(li => li.dataset.id)")  # laid out, not merely marked hidden
    await page.eval("document.querySelector('#filters button[data-filter=correct]').click()")
    assert await page.eval(visible) == [r["problem_id"] for r in results if r["correct"]]
    await page.eval("document.querySelector('#filters button[data-filter=incorrect]').click()")
    assert await page.eval(visible) == [r["problem_id"] for r in results if not r["correct"]]
    await page.eval("document.querySelector('#filters button[data-filter=all]').click()")
    await page.eval("const s = document.getElementById('search'); s.value = 'toy/2'; "
                    "s.dispatchEvent(new Event('input'))")
    assert await page.eval(visible) == ["toy/2"]
    assert await page.eval("document.getElementById('shown').textContent") == "1 of 4 problems"
    # vote groups as recorded: one row per group with its count
    groups = results[0]["info"]["groups"]
    rows = await page.eval("[...document.querySelectorAll('#groups tbody tr')].map(tr => tr.cells[1].textContent)")
    assert sorted(map(int, rows), reverse=True) == sorted((g["count"] for g in groups), reverse=True)
    # the hostile candidate: its full text shows literally once expanded, nothing of it is markup
    await page.eval("document.querySelector('#candidates details[data-index=\"1\"] summary').click()")
    text = await until(page, "document.querySelector('#candidates details[data-index=\"1\"] pre.text')?.textContent")
    assert text == lines(run / "samples.jsonl")[1]["text"] and HOSTILE in text
    assert await page.eval("document.querySelectorAll('#detail img, #detail script, #detail b').length") == 0
    # another problem, selected by a click in the list
    await page.eval("document.querySelector('#problems li[data-id=\"toy/1\"]').click()")
    assert (await page.eval("document.querySelector('#detail h2').textContent")).endswith("toy/1")
    await finish(page, "sampling")


async def test_tree_search_page_shows_a_clicked_node(browser, tmp_path):
    run = await view_runs.tree_run(tmp_path / "run")
    tree = lines(run / "results.jsonl")[0]["info"]["tree"]
    samples = [s for s in lines(run / "samples.jsonl") if s["problem_id"] == "toy/0"]
    page = await open_page(browser, run)
    assert await page.eval("document.querySelectorAll('#problems li').length") == 2
    assert await page.eval("document.querySelectorAll('#tree-svg g.node').length") == len(tree) == 9
    for node in (1, tree[-1]["id"]):  # the hostile first answer, and a refinement
        await click_node(page, node)
        shown = await until(page, "document.getElementById('node-text')?.textContent")
        assert shown == samples[node - 1]["text"]
        score = await page.eval("document.getElementById('node-score').textContent")
        assert score == f"{tree[node]['score']:.3f}"
        assert await page.eval(f"document.querySelector('#tree-svg g[data-node=\"{node}\"]').classList.contains('sel')")
    assert HOSTILE in samples[0]["text"]
    await click_node(page, 1)
    assert await until(page, "document.getElementById('node-text')?.textContent") == samples[0]["text"]
    assert HOSTILE in await page.eval("document.getElementById('node-feedback').textContent")
    await finish(page, "tree-search")


async def test_step_search_page_shows_a_clicked_step(browser, tmp_path):
    run = await view_runs.step_run(tmp_path / "run")
    samples = [s for s in lines(run / "samples.jsonl") if s["problem_id"] == "toy/0"]
    page = await open_page(browser, run)
    assert await page.eval("document.querySelectorAll('#problems li').length") == 2
    # the hostile first step (option 3, the best) is a node; clicking it shows that step's text
    hostile_step = next(s["text"].split("\n\n")[0] + "\n\n" for s in samples if HOSTILE in s["text"])
    node = await page.eval(f"""(() => {{
        const d = JSON.parse(document.getElementById('tts-p-0').textContent);
        return d.tree.nodes.find(n => n.text === {json.dumps(hostile_step)}).id;
    }})()""")
    await click_node(page, node)
    assert await until(page, "document.getElementById('node-text')?.textContent") == hostile_step
    # a leaf: the last step of a final track, with the track's answer
    leaf = await page.eval("""(() => {
        const d = JSON.parse(document.getElementById('tts-p-0').textContent);
        const n = d.tree.nodes.find(n => n.depth === 3);
        return {id: n.id, candidate: n.candidates[0]};
    })()""")
    await click_node(page, leaf["id"])
    expected = samples[leaf["candidate"]]["text"].split("\n\n")[-1]
    assert await until(page, "document.getElementById('node-text')?.textContent") == expected
    await finish(page, "step-search")


async def test_study_folder_page_shows_plots_and_table(browser, tmp_path):
    run = await view_runs.pool_run(tmp_path / "run")
    view_runs.write_study(run, run)  # `tts scale RUN` writes next to the run's files
    page = await open_page(browser, run)
    assert await page.eval("document.querySelectorAll('#problems li').length") == 3
    widths = await until(page, "(() => { const w = [...document.querySelectorAll('#study img')]"
                               ".map(i => i.complete ? i.naturalWidth : 0); return w.every(x => x > 0) && w; })()")
    assert len(widths) == 2  # scaling_k.png and scaling_tokens.png, decoded from their data URIs
    heads = await page.eval("[...document.querySelectorAll('#study table th')].map(th => th.textContent)")
    assert {"k", "coverage", "majority"} <= set(heads)
    await page.eval("document.querySelector('#study figure').scrollIntoView()")  # plots and table in the shot
    await finish(page, "study")
