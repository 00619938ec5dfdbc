"""`tts view` without a browser: what is read from a folder, the trees and their layout, the escaping of
untrusted text, the study section, and the command. (tests/test_view_browser.py runs the pages.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from tests import view_runs
from tests.view_runs import HOSTILE
from tts.cli import main
from tts.errors import UserError
from tts.runs import RunFolder
from tts.strategies.beam_search import BeamSearch
from tts.strategies.dvts import DVTS
from tts.strategies.particle_filtering import ParticleFiltering
from tts.view import DEFAULT_NAME, build_page, write_view
from tts.view.data import folder_kind, read_run
from tts.view.page import embed_json
from tts.view.study import markdown_html
from tts.view.trees import TreeNode, layout, split_steps


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def blocks(page: str) -> dict[str, object]:
    """The JSON blocks of a page, parsed, by id."""
    return {m.group(1): json.loads(m.group(2))
            for m in re.finditer(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)}


# ---- escaping ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    HOSTILE,  # closes the block, opens a script, an image with an error handler
    "</SCRIPT >", "<!--", "]]>",  # other ways out of a script block
    "a & b < c > d",  # the three characters that are always escaped
    "line\u2028separator\u2029paragraph",  # JavaScript's line terminators inside strings
    {"nested": [HOSTILE, {"<key>": "&"}]},  # keys and nested values too
])
def test_embedded_json_cannot_close_its_block_and_reads_back_the_same(value):
    text = embed_json(value)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


def test_non_finite_numbers_become_null():
    assert json.loads(embed_json({"x": float("nan"), "y": [float("inf"), 1.5]})) == {"x": None, "y": [None, 1.5]}


async def test_hostile_text_appears_only_escaped_in_the_page(tmp_path):
    run = await view_runs.sampling_run(tmp_path / "run")
    page = build_page(run)
    assert HOSTILE not in page and "<img" not in page and "onerror=\"" not in page
    # exactly the page's own script blocks: the index, one per problem, and the script
    assert page.count("<script") == page.count("</script>") == 1 + 4 + 1
    data = blocks(page)
    texts = [c["text"] for c in data["tts-p-0"]["candidates"]]  # type: ignore[index]
    assert HOSTILE in texts[1]
    # the Content-Security-Policy names the hash of the one script that may run, and allows no network
    script = page.rsplit("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp


# ---- what a run folder gives ---------------------------------------------------------------------

async def test_sampling_run_problems_candidates_groups_and_verdicts(tmp_path):
    run = await view_runs.sampling_run(tmp_path / "run")
    data = read_run(run)
    results, samples = lines(run / "results.jsonl"), lines(run / "samples.jsonl")
    assert [p.id for p in data.problems] == [r["problem_id"] for r in results]
    assert [p.correct for p in data.problems] == [True, True, True, False]
    assert data.metrics is not None and data.live["accuracy"] == data.metrics["accuracy"] == 0.75
    for r, d in zip(results, data.details):
        mine = [s for s in samples if s["problem_id"] == r["problem_id"]]
        assert d.chosen == r["chosen"] and d.answer == r["answer"] and len(d.candidates) == 4
        # groups as the strategy recorded them: answers and counts, each candidate in its own group
        assert d.grouping.startswith("as the strategy grouped them")
        recorded = {(g["answer"], g["count"]) for g in r["info"]["groups"]}
        assert {(g.answer, g.count) for g in d.groups} == recorded
        for c, s in zip(d.candidates, mine):
            assert c.group == s["info"]["group"] and c.text == s["text"] and c.correct == s["correct"]
            assert c.chosen == s["chosen"] and c.tokens == s["completion_tokens"]
            assert [(v.scorer, v.score, v.passed, v.feedback) for v in c.verdicts] == \
                [(v["verifier"], v["score"], v["passed"], v["feedback"]) for v in s["selection"]]
        assert sum(g.chosen for g in d.groups) == 1 and d.tree is None
    assert HOSTILE in data.details[0].candidates[0].verdicts[0].feedback  # answer 0 scores 0: quoted feedback


async def test_without_recorded_groups_candidates_group_by_answer_string(tmp_path):
    run = await view_runs.pool_run(tmp_path / "run")  # repeated-sampling records no groups
    d = read_run(run).details[1]
    answers = [c.answer for c in d.candidates]
    assert d.grouping.startswith("by the recorded answer string")
    assert {(g.answer, g.count) for g in d.groups} == {(a, answers.count(a)) for a in set(answers)}
    assert [g.count for g in d.groups] == sorted((g.count for g in d.groups), reverse=True)
    for g in d.groups:
        assert all(d.candidates[m].answer == g.answer and d.candidates[m].group == g.id for m in g.members)


async def test_tree_search_nodes_are_the_recorded_tree(tmp_path):
    run = await view_runs.tree_run(tmp_path / "run")
    result, samples = lines(run / "results.jsonl")[0], [s for s in lines(run / "samples.jsonl")
                                                        if s["problem_id"] == "toy/0"]
    tree = read_run(run).details[0].tree
    assert tree is not None and tree.kind == "tree-search"
    rows = result["info"]["tree"]
    assert [(n.id, n.parent, n.depth) for n in tree.nodes] == [(r["id"], r["parent"], r["depth"]) for r in rows]
    assert tree.nodes[0].score is None  # the root's -1 is no score
    for n in tree.nodes[1:]:
        assert n.text == samples[n.id - 1]["text"] and n.score == rows[n.id]["score"]
        assert n.chosen == (n.id - 1 == result["chosen"]) and n.candidates == [n.id - 1]
    assert "info" in read_run(run).details[0].model_dump() and "tree" not in read_run(run).details[0].info


@pytest.mark.parametrize("strategy", [
    BeamSearch(n=4, beam_width=2),  # survivors replicated: tracks share their first steps
    DVTS(n=4, beam_width=2),  # two independent subtrees
    ParticleFiltering(n=4),  # particles resampled by weight
], ids=lambda s: s.name)
async def test_step_search_tree_rebuilds_each_track_from_shared_steps(tmp_path, strategy):
    run = await view_runs.step_run(tmp_path / "run", strategy=strategy)
    samples = [s for s in lines(run / "samples.jsonl") if s["problem_id"] == "toy/0"]
    tree = read_run(run).details[0].tree
    assert tree is not None and tree.kind == "steps"
    by_id = {n.id: n for n in tree.nodes}
    for ci, s in enumerate(samples):
        (leaf,) = [n for n in tree.nodes if ci in n.candidates and n.depth == s["info"]["steps"]]
        path, node = [], leaf
        while node.parent is not None:
            path.append(node)
            node = by_id[node.parent]
        path.reverse()
        assert "".join(n.text for n in path) == s["text"]  # the steps put back together
        assert [n.score for n in path] == s["selection"][0]["step_scores"]  # each step's own score
        assert leaf.answer == s["answer"] and leaf.correct == s["correct"]
    assert len(tree.nodes) < 1 + sum(s["info"]["steps"] for s in samples)  # beams share their first steps


@pytest.mark.parametrize("text,steps,expected", [
    ("a\n\nb\n\nc", 3, ["a\n\n", "b\n\n", "c"]),  # plain steps
    ("a\n\nb\n\n", 2, ["a\n\n", "b\n\n"]),  # the last step ended on the delimiter
    ("\n\na\n\nb", 2, ["\n\na\n\n", "b"]),  # a step that began with a blank line
    ("a\n\nb\n\nc", 2, ["a\n\n", "b\n\nc"]),  # the final step ran on past blank lines
    ("ab", 2, None),  # a step cut by its token cap, continued by the next: not separable
    ("", 1, None),  # nothing written
])
def test_split_steps(text, steps, expected):
    assert split_steps(text, steps, "\n\n") == expected


def test_layout_centres_parents_over_their_children_and_layers_depths():
    nodes = [TreeNode(id=0, parent=None, depth=0), TreeNode(id=1, parent=0, depth=1),
             TreeNode(id=2, parent=0, depth=1), TreeNode(id=3, parent=1, depth=2), TreeNode(id=4, parent=1, depth=2)]
    width, height = layout(nodes)
    x = {n.id: n.x for n in nodes}
    assert x[3] < x[4] < x[2]  # leaves left to right in depth-first order
    assert x[1] == (x[3] + x[4]) / 2 and x[0] == (x[1] + x[2]) / 2
    assert len({n.y for n in nodes if n.depth == 2}) == 1 and nodes[0].y < nodes[1].y < nodes[3].y
    assert width >= max(x.values()) and height >= max(n.y for n in nodes)


# ---- runs in progress, and the folder left as it was ---------------------------------------------

async def test_a_run_in_progress_shows_its_finished_problems_and_is_not_changed(tmp_path):
    run = await view_runs.sampling_run(tmp_path / "run")
    (run / "metrics.json").unlink()  # not written yet
    with (run / "samples.jsonl").open("a") as fh:  # a problem being written: samples, no result line yet
        fh.write(json.dumps({"problem_id": "toy/9", "index": 0, "text": "half", "answer": "9"}) + "\n")
    with (run / "results.jsonl").open("a") as fh:  # and a torn line
        fh.write('{"problem_id": "toy/8", "ans')
    folder = RunFolder(run)
    folder.acquire()  # the writer holds the lock: the viewer needs none
    try:
        before = snapshot(run)
        data = read_run(run)
        page = write_view(run)
    finally:
        folder.release()
    assert [p.id for p in data.problems] == ["toy/0", "toy/1", "toy/2", "toy/3"] and data.metrics is None
    assert data.live["problems"] == 4 and data.live["accuracy"] == 0.75
    assert page == run / DEFAULT_NAME
    after = snapshot(run)
    after.pop(DEFAULT_NAME)
    after.pop("run.lock", None)
    before.pop("run.lock", None)
    assert after == before
    assert "metrics.json not written yet" in page.read_text()


# ---- folders that are not runs, and studies ------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda p: p / "nope", "folder not found"),  # missing
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),  # a file
    (lambda p: p, "is neither a run folder (no config.json) nor a `tts scale` output folder"),  # empty folder
])
def test_a_folder_that_is_neither_is_one_line_error(tmp_path, make, message):
    with pytest.raises(UserError, match=re.escape(message)):
        folder_kind(make(tmp_path))


async def test_study_folder_embeds_plots_and_renders_the_report_escaped(tmp_path):
    run = await view_runs.pool_run(tmp_path / "run")
    out = view_runs.write_study(run, tmp_path / "study")
    (out / "extra.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>window.__pwned=1</script></svg>')
    assert folder_kind(out) == "study" and folder_kind(run) == "run"
    page = build_page(out)
    assert 'id="tts-index"' not in page  # no run section
    assert page.count('src="data:image/png;base64,') == 2  # scaling_k.png and scaling_tokens.png
    assert page.count('src="data:image/svg+xml;base64,') == 1 and "<svg" not in page  # an <img>: no script runs
    assert "<th>coverage</th>" in page and "<th>majority</th>" in page
    view_runs.write_study(run, run)
    assert folder_kind(run) == "run+study" and 'id="tts-index"' in build_page(run)


def test_markdown_is_escaped_and_images_stay_inside_the_folder(tmp_path):
    (tmp_path / "p.png").write_bytes(b"\x89PNG")
    body, used = markdown_html("# T <script>\n\n| a | **b** |\n|---|---|\n| <i>x</i> | `y` |\n\n"
                               "![plot](p.png)\n![up](../p.png)\n- item <b>\ntext & more", tmp_path)
    assert "<script>" not in body and "&lt;script&gt;" in body and "&lt;i&gt;x&lt;/i&gt;" in body
    assert "<th><strong>b</strong></th>" in body and "<code>y</code>" in body
    assert body.count("data:image/png;base64,") == 1 and "plot not embedded: ../p.png" in body
    assert "<li>item &lt;b&gt;</li>" in body and "<p>text &amp; more</p>" in body and used == {"p.png", "../p.png"}


# ---- the command ---------------------------------------------------------------------------------

async def test_command_writes_the_page_prints_its_path_and_opens_it(tmp_path, capsys, monkeypatch):
    run = await view_runs.step_run(tmp_path / "run")
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    assert main(["view", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / DEFAULT_NAME) and opened == []
    out = tmp_path / "elsewhere.html"
    assert main(["view", str(run), "--out", str(out), "--open"]) == 0
    assert capsys.readouterr().out.strip() == str(out) and opened == [out.resolve().as_uri()]
    assert blocks(out.read_text())["tts-index"] == blocks((run / DEFAULT_NAME).read_text())["tts-index"]


async def test_open_without_a_browser_says_where_the_page_is(tmp_path, capsys, monkeypatch):
    run = await view_runs.step_run(tmp_path / "run")
    monkeypatch.setattr("webbrowser.open", lambda url: False)  # a machine without a browser (a server, CI)
    assert main(["view", str(run), "--open"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(run / DEFAULT_NAME)
    assert "no web browser found" in captured.err and str(run / DEFAULT_NAME) in captured.err
