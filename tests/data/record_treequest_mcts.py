"""Record the trace that tests/test_treesearch.py compares `tts.treesearch.StandardMCTS` with.

Runs treequest 0.3.3's own `StandardMCTS` (not a re-implementation) on 200 seeded scripted score
sequences and writes, per case, the tree it builds: the parent of every node, every node's visit count
and value sum, and the best node `treequest.top_k` reports. The scores are scripted in creation order
(the i-th node added gets scores[i]), so two implementations that make the same decisions build the
same tree. treequest is not a dependency of this project; to regenerate:

    pip download treequest==0.3.3 --no-deps -d /tmp/tq && unzip /tmp/tq/*.whl -d /tmp/tq/whl
    # treequest imports ulid-py only for trial ids; any module with `new()` returning a unique id will do
    PYTHONPATH=/tmp/tq/whl:<dir with ulid.py> python tests/data/record_treequest_mcts.py
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import treequest
from treequest import StandardMCTS, top_k

OUT = Path(__file__).with_name("treequest_0.3.3_standard_mcts.jsonl")
CASES = 200


def case_options(seed: int) -> dict:
    rng = random.Random(seed)
    n = rng.randint(8, 24)
    decimals = rng.choice([1, 2, 2, 3])  # one decimal: many exact ties in scores and in UCT
    return {
        "case": seed,
        "actions": rng.choice([["a"], ["a"], ["a", "b"]]),
        "samples_per_action": rng.choice([1, 2, 2, 3]),
        "exploration_weight": rng.choice([math.sqrt(2), math.sqrt(2), 0.5, 3.0]),
        "batch": rng.choice([1, 1, 2, 3, 5]),
        "scores": [round(rng.random(), decimals) for _ in range(n)],
    }


def record(opts: dict) -> dict:
    algo = StandardMCTS(samples_per_action=opts["samples_per_action"],
                        exploration_weight=opts["exploration_weight"])
    state = algo.init_tree()
    scores, n = opts["scores"], len(opts["scores"])
    while len(state.tree) - 1 < n:
        state, trials = algo.ask_batch(state, min(opts["batch"], n - (len(state.tree) - 1)), opts["actions"])
        for trial in trials:  # told in the order asked; the reference drops results past the leaf's queue
            index = len(state.tree) - 1  # expand_idx of the node this result would become
            state = algo.tell(state, trial.trial_id, (index, scores[index]))
    nodes = state.tree.get_nodes()  # root (expand_idx -1) first, then creation order
    assert [node.expand_idx for node in nodes] == list(range(-1, n))
    (best_index, _), = top_k(state, algo, 1)
    return {
        **opts,
        # node ids as tts numbers them: root 0, then 1, 2, ... in creation order (expand_idx + 1)
        "parents": [None] + [node.parent.expand_idx + 1 for node in nodes[1:]],
        # the action that made each non-root node (actions are one letter each)
        "node_actions": "".join(state.trial_store.finished_trials[node.trial_id].action for node in nodes[1:]),
        "visits": [state.visit_counts.get(node.expand_idx, 0) for node in nodes],
        "values": [round(state.value_sums.get(node.expand_idx, 0.0), 6) for node in nodes],
        "best": best_index + 1,
    }


def main() -> None:
    logging.disable(logging.WARNING)  # one line per dropped result past a leaf's queue
    version = getattr(treequest, "__version__", None)
    lines = [json.dumps({"reference": "treequest", "version": version or "0.3.3", "cases": CASES})]
    lines += [json.dumps(record(case_options(seed)), separators=(",", ":")) for seed in range(CASES)]
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
