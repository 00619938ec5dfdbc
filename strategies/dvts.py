"""Diverse Verifier Tree Search (docs/algorithms/dvts.md; Beeching et al. 2024; reference:
huggingface/search-and-learn `sal/search/diverse_verifier_tree_search.py`).

The budget N is split into N/M independent subtrees. Each iteration every open subtree samples M
candidate next steps (one engine call for all subtrees: one request per subtree with n = M), every
candidate is scored (one scoring call), and the subtree advances greedily by its best candidate. A
subtree stops when its best step ends the answer (final answer, end-of-sequence, the answer cap) or
after `max_steps` (the last step runs to the end). Subtrees never exchange anything: each keeps its own
beam, which is what keeps the N answers diverse.

Output: each subtree gives M answers, its text before the last iteration plus each of its last M
candidates, scored by their own step scores: N answers. Answer: the best aggregated score, or the
weighted vote (`final`).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tts.step_search import StepSearch, StepSearchConfig, StepSearchStrategy, Track
from tts.strategy import StrategyContext
from tts.types import Problem, Result


class DVTSConfig(StepSearchConfig):
    beam_width: int = Field(4, ge=1, description="M: candidates per subtree per step; N/M subtrees")

    @model_validator(mode="after")
    def _divisible(self) -> DVTSConfig:
        if self.n % self.beam_width:
            raise ValueError(f"dvts splits n={self.n} into n/beam_width subtrees: n must be a multiple of "
                            f"beam_width={self.beam_width}")
        return self


class DVTS(StepSearchStrategy):
    name = "dvts"
    description = "Diverse Verifier Tree Search: N/M independent subtrees, each advanced greedily on the scorer"
    Config = DVTSConfig
    config: DVTSConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        search = StepSearch(problem, ctx, cfg, self.name)
        heads = [Track(origin=i) for i in range(cfg.n // cfg.beam_width)]
        last: list[list[Track]] = [[] for _ in heads]  # each subtree's last M scored candidates
        history = []
        for it in range(cfg.max_steps):
            open_ = [i for i, h in enumerate(heads) if not h.finished]
            if not open_:
                break
            steps = await search.next_steps([heads[i] for i in open_], [cfg.beam_width] * len(open_),
                                            final=it == cfg.max_steps - 1)
            parents = [heads[i] for i, group in zip(open_, steps) for _ in group]
            children = iter(await search.extend(parents, [s for group in steps for s in group]))
            for i, group in zip(open_, steps):
                last[i] = [next(children) for _ in group]
                best = max(range(len(last[i])), key=lambda j: last[i][j].score(cfg.aggregation))  # first on ties
                heads[i] = last[i][best]
            history.append({"open_subtrees": len(open_),
                            "head_scores": [round(heads[i].score(cfg.aggregation), 4) for i in open_]})
        answers = [t for group in last for t in group]
        return search.finish(answers, iterations=len(history), history=history, subtrees=len(heads))
