"""The search tree a caller owns, and the ask/tell contract every tree-search algorithm follows.

docs/algorithms/tree-search.md: every node but the root holds
one complete answer with a score in [0, 1]; the root is a placeholder with score -1. An algorithm
never calls a model: `ask` says which nodes to expand with which action, the caller generates and
scores, and `tell` records the results. All of an algorithm's memory (its statistics and its RNG) lives
in `SearchState`, so a search can be paused between any two calls, pickled, and resumed by a fresh
algorithm object with the same options.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

ROOT = 0
ROOT_SCORE = -1.0  # the reference's placeholder: the root holds no answer


@dataclass
class Node:
    id: int
    parent: int | None
    action: str | None  # the action that generated this node (None for the root)
    score: float
    depth: int
    feedback: str = ""
    tokens: int = 0
    payload: Any = None  # whatever the caller keeps with the answer (the strategy keeps its Candidate)
    children: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Expansion:
    """One generation the algorithm asks for: a new child of `parent` made by `action`."""

    id: int
    parent: int
    action: str


@dataclass(frozen=True)
class ExpansionResult:
    """The caller's answer to an `Expansion`: the new node's score in [0, 1] and what to keep with it."""

    expansion: int
    score: float
    feedback: str = ""
    tokens: int = 0
    payload: Any = None


@dataclass
class SearchState:
    algorithm: str
    actions: list[str]
    rng: np.random.Generator
    nodes: list[Node]
    pending: dict[int, Expansion] = field(default_factory=dict)
    next_expansion: int = 0
    stats: Any = None  # the algorithm's own statistics

    @property
    def root(self) -> Node:
        return self.nodes[ROOT]

    def children(self, node_id: int) -> list[Node]:
        return [self.nodes[c] for c in self.nodes[node_id].children]

    def subtree(self, node_id: int) -> Iterator[Node]:
        """The node and all its descendants, depth first in child order."""
        stack = [node_id]
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            stack.extend(reversed(node.children))

    def ancestors(self, node_id: int) -> Iterator[Node]:
        """Parent, grandparent, ..., root."""
        parent = self.nodes[node_id].parent
        while parent is not None:
            yield self.nodes[parent]
            parent = self.nodes[parent].parent

    @property
    def answers(self) -> list[Node]:
        """Every node but the root, in creation order."""
        return self.nodes[1:]

    def best(self) -> Node | None:
        """The highest-scoring answer; ties go to the earliest (the reference's sort order)."""
        return max(self.answers, key=lambda n: n.score, default=None)


class TreeSearchAlgorithm(ABC):
    """Options only; everything that changes during a search lives in the `SearchState`.

    `ask` and `tell` return the new state. By default they work on a deep copy, so the input state
    stays valid (a checkpoint); `inplace=True` skips the copy when the caller does not need one.
    """

    name: ClassVar[str]
    # True where one `ask` can take seconds (MCMC fits): an event loop should run it in a worker thread
    slow_ask: bool = False

    def init(self, actions: Sequence[str], seed: int | None = None) -> SearchState:
        if not actions:
            raise ValueError("a tree search needs at least one action")
        if len(set(actions)) != len(actions):
            raise ValueError(f"action names must be unique, got {list(actions)}")
        root = Node(id=ROOT, parent=None, action=None, score=ROOT_SCORE, depth=0)
        return SearchState(algorithm=self.name, actions=list(actions), rng=np.random.default_rng(seed),
                           nodes=[root], stats=self._init_stats(list(actions)))

    def ask(self, state: SearchState, k: int = 1, *, inplace: bool = False) -> tuple[SearchState, list[Expansion]]:
        """Up to `k` expansions to run next (the reference's `ask_batch`: k selections on the same statistics)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        state = self._own(state, inplace)
        chosen = self._select(state, k)
        expansions = []
        for parent, action in chosen:
            exp = Expansion(id=state.next_expansion, parent=parent, action=action)
            state.next_expansion += 1
            state.pending[exp.id] = exp
            expansions.append(exp)
        return state, expansions

    def tell(self, state: SearchState, results: ExpansionResult | Sequence[ExpansionResult], *,
             inplace: bool = False) -> SearchState:
        """Add the scored answers as new nodes (in the order given) and update the statistics."""
        state = self._own(state, inplace)
        for result in [results] if isinstance(results, ExpansionResult) else results:
            if result.expansion not in state.pending:
                raise ValueError(f"expansion {result.expansion} was not asked for or was already told")
            if not 0.0 <= result.score <= 1.0:
                raise ValueError(f"scores must lie in [0, 1] (as in the reference), got {result.score}")
            exp = state.pending.pop(result.expansion)
            parent = state.nodes[exp.parent]
            node = Node(id=len(state.nodes), parent=parent.id, action=exp.action, score=float(result.score),
                        depth=parent.depth + 1, feedback=result.feedback, tokens=result.tokens,
                        payload=result.payload)
            state.nodes.append(node)
            parent.children.append(node.id)
            self._observe(state, node)
        return state

    def graft(self, state: SearchState, parent: int, action: str, score: float, *, feedback: str = "",
              tokens: int = 0, payload: Any = None, inplace: bool = False) -> SearchState:
        """Add an answer the algorithm did not ask for (seeding a search with known answers, replaying a
        recorded tree), with the same statistics updates as `tell`."""
        state = self._own(state, inplace)
        if action not in state.actions:
            raise ValueError(f"unknown action {action!r}; this search has {state.actions}")
        exp = Expansion(id=state.next_expansion, parent=parent, action=action)
        state.next_expansion += 1
        state.pending[exp.id] = exp
        return self.tell(state, ExpansionResult(exp.id, score, feedback, tokens, payload), inplace=True)

    def _own(self, state: SearchState, inplace: bool) -> SearchState:
        if state.algorithm != self.name:
            raise ValueError(f"this state belongs to {state.algorithm!r}, not {self.name!r}")
        return state if inplace else copy.deepcopy(state)

    def _init_stats(self, actions: list[str]) -> Any:
        return None

    @abstractmethod
    def _select(self, state: SearchState, k: int) -> list[tuple[int, str]]:
        """(node to expand, action) pairs; may update statistics and draw from `state.rng`."""

    @abstractmethod
    def _observe(self, state: SearchState, node: Node) -> None:
        """Update the statistics for a node just added to the tree."""


def thompson_argmax(draws: Sequence[float]) -> int:
    """Index of the largest draw; ties go to the first (as in the reference)."""
    return int(np.argmax(np.asarray(draws, dtype=float)))


def tree_rows(state: SearchState, feedback_chars: int = 500) -> list[dict[str, Any]]:
    """The tree as JSON-ready rows (id, parent, action, score, feedback, tokens, depth), root first."""
    return [
        {"id": n.id, "parent": n.parent, "action": n.action, "score": n.score, "depth": n.depth,
         "tokens": n.tokens, "children": list(n.children), "feedback": n.feedback[:feedback_chars]}
        for n in state.nodes
    ]


def format_tree(rows: Sequence[dict[str, Any]]) -> str:
    """An indented text drawing of `tree_rows` output (for logs and notebooks)."""
    by_id = {r["id"]: r for r in rows}
    lines: list[str] = []

    def walk(node_id: int, indent: int) -> None:
        r = by_id[node_id]
        label = "root" if r["parent"] is None else f"#{r['id']} {r['action']} score={r['score']:.2f}"
        lines.append("  " * indent + label)
        for c in r["children"]:
            walk(c, indent + 1)

    if rows:
        walk(rows[0]["id"], 0)
    return "\n".join(lines)
