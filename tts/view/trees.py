"""The search tree of one problem, as nodes with positions, for the viewer's SVG drawing.

Two sources. A tree search (mcts, ab-mcts-*) records the whole tree in `info["tree"]` (tts.treesearch.tree_rows)
and node i >= 1 is candidate i - 1. A step-level search (beam search, DVTS, particle filtering and Gibbs)
records only its final tracks: each candidate's text and, per scorer, one score per step. Splitting each text
back into its steps and merging equal prefixes gives the tree of partial answers that led to the final
tracks (pruned beams are not recorded, so they cannot be drawn). The layout is computed here, so the page's
script only draws: leaves left to right in depth-first order, each parent centred over its children.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

X_GAP = 34  # pixels between neighbouring leaves
Y_GAP = 56  # pixels between depths
MARGIN = 24


class TreeNode(BaseModel):
    """One node as the page draws it and shows it in the side panel."""

    model_config = ConfigDict(extra="forbid")

    id: int
    parent: int | None
    depth: int
    x: float = 0.0
    y: float = 0.0
    score: float | None = Field(None, description="in [0, 1]; None for the root")
    scores: dict[str, float] = Field(default_factory=dict, description="each scorer's score, where known")
    label: str = ""
    text: str = ""
    feedback: str = ""
    answer: str | None = None
    correct: bool | None = None
    tokens: int | None = None
    candidates: list[int] = Field(default_factory=list, description="candidates this node is (or leads to)")
    chosen: bool = False


class TreeView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["tree-search", "steps"]
    nodes: list[TreeNode]
    width: float
    height: float
    note: str = ""


def _unit(x: Any) -> float | None:
    """A score for colouring: a number in [0, 1], else None (tree search marks the root -1)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0.0 <= x <= 1.0:
        return None
    return float(x)


def layout(nodes: list[TreeNode]) -> tuple[float, float]:
    """Place the nodes (a tidy layered layout); returns the drawing's width and height."""
    children: dict[int, list[int]] = {n.id: [] for n in nodes}
    by_id = {n.id: n for n in nodes}
    roots = []
    for n in nodes:
        if n.parent is None or n.parent not in by_id:
            roots.append(n.id)
        else:
            children[n.parent].append(n.id)
    next_leaf = 0
    # iterative post-order, so deep trees never hit the recursion limit
    for root in roots:
        stack: list[tuple[int, bool]] = [(root, False)]
        while stack:
            nid, seen = stack.pop()
            kids = children[nid]
            if not seen and kids:
                stack.append((nid, True))
                stack.extend((k, False) for k in reversed(kids))
                continue
            node = by_id[nid]
            if kids:
                node.x = (by_id[kids[0]].x + by_id[kids[-1]].x) / 2
            else:
                node.x = MARGIN + next_leaf * X_GAP
                next_leaf += 1
            node.y = MARGIN + node.depth * Y_GAP
    width = 2 * MARGIN + max(next_leaf - 1, 0) * X_GAP
    height = 2 * MARGIN + max((n.depth for n in nodes), default=0) * Y_GAP
    return float(width), float(height)


def tree_search_view(info: dict[str, Any], samples: Sequence[dict[str, Any]], chosen: int | None) -> TreeView | None:
    """The tree a tree search recorded in `info["tree"]` (None if there is none)."""
    rows = info.get("tree")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "id" in r for r in rows):
        return None
    nodes = []
    for row in rows:
        nid = int(row["id"])
        parent = row.get("parent")
        node = TreeNode(id=nid, parent=None if parent is None else int(parent), depth=int(row.get("depth") or 0),
                        score=_unit(row.get("score")), feedback=str(row.get("feedback") or ""),
                        tokens=row.get("tokens") if isinstance(row.get("tokens"), int) else None)
        if parent is None:
            node.label = "problem"
            node.text = "(the problem: every first answer is sampled from its prompt)"
        elif 0 <= nid - 1 < len(samples):
            cand = samples[nid - 1]
            node.text = str(cand.get("text") or "")
            node.answer = cand.get("answer")
            node.correct = cand.get("correct")
            node.candidates = [nid - 1]
            node.chosen = chosen == nid - 1
            node.scores = {str(v.get("verifier")): float(v["score"]) for v in cand.get("selection") or []
                           if isinstance(v, dict) and isinstance(v.get("score"), int | float)}
            node.label = f"#{nid} {row.get('action') or ''}".strip()
        else:
            node.label = f"#{nid}"
            node.text = "(no stored sample for this node)"
        nodes.append(node)
    width, height = layout(nodes)
    return TreeView(kind="tree-search", nodes=nodes, width=width, height=height,
                    note=f"{len(nodes) - 1} generated nodes; algorithm {info.get('algorithm', '?')}")


def split_steps(text: str, steps: int, delimiter: str) -> list[str] | None:
    """`text` cut back into its `steps` steps (each keeps its delimiter); None if it cannot be done.

    A step's text ends where the delimiter was generated, so the pieces between delimiters are the steps,
    except that an empty piece (a step that began with the delimiter) belongs to the step after it. A step
    cut by its token cap has no delimiter, and the next step continues it: such a text has fewer pieces
    than steps and is not split.
    """
    if steps < 1:
        return None
    parts = text.split(delimiter)
    pieces = [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    merged: list[str] = []
    carry = ""
    for p in pieces:
        if p == delimiter:
            carry += p
            continue
        merged.append(carry + p)
        carry = ""
    if carry:
        if merged:
            merged[-1] += carry
        else:
            merged.append(carry)
    while len(merged) > steps:  # the last step ran to the end of the answer with blank lines in it
        merged[-2:] = [merged[-2] + merged[-1]]
    return merged if len(merged) == steps else None


def _step_scores(sample: dict[str, Any], depth: int) -> dict[str, list[float]]:
    out = {}
    for v in sample.get("selection") or []:
        steps = v.get("step_scores") if isinstance(v, dict) else None
        if isinstance(steps, list) and len(steps) == depth and all(isinstance(s, int | float) for s in steps):
            out[str(v.get("verifier"))] = [float(s) for s in steps]
    return out


def is_step_search(samples: Sequence[dict[str, Any]]) -> bool:
    """Whether the candidates are the tracks of a step-level search (steps and step scores recorded)."""
    if not samples:
        return False
    for s in samples:
        info = s.get("info") or {}
        if not isinstance(info.get("steps"), int) or "origin" not in info:
            return False
    return True


def step_search_view(samples: Sequence[dict[str, Any]], delimiter: str, chosen: int | None) -> TreeView | None:
    """The prefix tree of the final tracks' steps (None unless the candidates are a step-level search's)."""
    if not is_step_search(samples):
        return None
    root = TreeNode(id=0, parent=None, depth=0, label="problem", text="(the problem: every track starts empty)")
    nodes = [root]
    index: dict[tuple[str, ...], int] = {(): 0}
    unsplit = 0
    for ci, sample in enumerate(samples):
        depth = int(sample["info"]["steps"])
        text = str(sample.get("text") or "")
        pieces = split_steps(text, depth, delimiter)
        if pieces is None:  # keep the track on its own branch, whole text at its last node
            unsplit += 1
            pieces = [f"(step {k + 1} of candidate {ci}: not separable in the stored text)" for k in range(depth - 1)]
            pieces.append(text)
            pieces = [f"\0{ci}\0{p}" for p in pieces]  # never merged with another track
        scores = _step_scores(sample, depth)
        key: tuple[str, ...] = ()
        for k, piece in enumerate(pieces):
            key = (*key, piece)
            nid = index.get(key)
            if nid is None:
                nid = len(nodes)
                index[key] = nid
                per = {name: vals[k] for name, vals in scores.items()}
                mean = sum(per.values()) / len(per) if per else None
                nodes.append(TreeNode(id=nid, parent=index[key[:-1]], depth=k + 1, score=_unit(mean), scores=per,
                                      text=piece.rsplit("\0", 1)[-1], label=f"step {k + 1}"))
            node = nodes[nid]
            node.candidates.append(ci)
            if k == len(pieces) - 1:  # the track's last step: its answer and verdicts
                node.answer = sample.get("answer")
                node.correct = sample.get("correct")
                node.tokens = sample.get("completion_tokens")
                node.feedback = "\n".join(str(v.get("feedback") or "") for v in sample.get("selection") or []
                                          if isinstance(v, dict) and v.get("feedback"))
                node.chosen = node.chosen or chosen == ci
                node.label = f"step {k + 1} (candidate {', '.join(map(str, node.candidates))})"
    width, height = layout(nodes)
    note = (f"{len(samples)} final tracks; {len(nodes) - 1} distinct partial answers (pruned tracks are not "
            "recorded, so only the steps that led to the final tracks are drawn)")
    if unsplit:
        note += f"; {unsplit} track(s) could not be split into steps and are drawn on their own branch"
    return TreeView(kind="steps", nodes=nodes, width=width, height=height, note=note)
