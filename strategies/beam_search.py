"""PRM beam search (docs/algorithms/beam-search.md; Snell et al. 2024; reference: huggingface/search-and-learn
`sal/search/beam_search.py`).

N beams; each iteration every open beam writes ONE next step (one engine call for all), every new
partial answer is scored (one scoring call), beams that finished move to the completed pool, and the
top N/M open beams by aggregated score survive (duplicates by text dropped first, when asked). Survivors
are replicated cyclically back to N, so each survivor is expanded about M ways in the next iteration
(one request per survivor with n = its copies, which shares its prefix in the engine). The last
iteration runs every open beam to the end of its answer.

Answer: among the first N completed beams (or the N best, `sort_completed`), replicated to N when fewer,
the best aggregated score, or the weighted vote (`final`).
"""

from __future__ import annotations

from pydantic import Field

from tts.step_search import StepSearch, StepSearchConfig, StepSearchStrategy, Track, replicate
from tts.strategy import StrategyContext
from tts.types import Problem, Result


class BeamSearchConfig(StepSearchConfig):
    beam_width: int = Field(4, ge=1, description="M: each surviving beam is expanded about M ways; N/M survive")
    filter_duplicates: bool = Field(True, description="drop open beams whose text repeats another's before ranking")
    sort_completed: bool = Field(False, description="keep the N best completed beams, not the first N")


def first_of_each_text(beams: list[Track]) -> list[Track]:
    """The beams in order, each text kept once (its first beam), as the reference's duplicate filter."""
    seen: set[str] = set()
    out = []
    for b in beams:
        if b.text not in seen:
            seen.add(b.text)
            out.append(b)
    return out


class BeamSearch(StepSearchStrategy):
    name = "beam-search"
    description = "PRM beam search: N beams, one scored step each per iteration, the top N/M kept and replicated"
    Config = BeamSearchConfig
    config: BeamSearchConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        search = StepSearch(problem, ctx, cfg, self.name)
        keep = max(cfg.n // cfg.beam_width, 1)
        survivors = [Track()]  # every beam starts from the empty answer: one survivor copied N times
        completed: list[Track] = []
        history = []
        for it in range(cfg.max_steps):
            counts = replicate(len(survivors), cfg.n)
            final = it == cfg.max_steps - 1
            steps = await search.next_steps(survivors, counts, final)
            parents = [t for t, group in zip(survivors, steps) for _ in group]
            beams = await search.extend(parents, [s for group in steps for s in group])
            completed += [b for b in beams if b.finished]
            open_ = [b for b in beams if not b.finished]
            if cfg.filter_duplicates:
                open_ = first_of_each_text(open_)
            ranked = sorted(range(len(open_)), key=lambda i: open_[i].score(cfg.aggregation), reverse=True)
            survivors = [open_[i] for i in sorted(ranked[:keep])]
            history.append({"beams": len(beams), "completed": len(completed), "open": len(open_),
                            "kept_scores": [round(b.score(cfg.aggregation), 4) for b in survivors]})
            if not survivors:
                break
        if cfg.sort_completed:
            completed = sorted(completed, key=lambda b: b.score(cfg.aggregation), reverse=True)
        final_beams = completed[: cfg.n]
        if final_beams and len(final_beams) < cfg.n:
            final_beams = [final_beams[i % len(final_beams)] for i in range(cfg.n)]  # cyclic, as the reference
        return search.finish(final_beams, iterations=len(history), history=history, completed=len(completed))
