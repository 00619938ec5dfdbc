"""Particle filtering (docs/algorithms/particle-filtering.md; Puri et al. 2025, "Rollout Roulette";
references: probabilistic-inference-scaling `sal/search/particle_gibbs.py`, its_hub `particle_gibbs.py`).

Generation is a state-space model: the policy is the transition kernel (one step at a time) and the
scorer's step score r is an approximate likelihood. N particles start empty. Each iteration:
1. every active particle writes one step (one engine call for all) and the new step is scored given the
   whole partial answer (one scoring call; the paper's "model-based aggregation");
2. weights w = softmax(logit(r) / tau) over ALL particles, finished ones included (r = the latest step
   score, clipped to [1e-6, 1 - 1e-6]); N indices are drawn with replacement from w (multinomial) and the
   particles are replaced by copies of the drawn ones. A finished particle that is drawn stays finished
   and is never extended.
The search ends when no particle is active (each ends at the final answer, the end-of-sequence token, the
answer cap, or `max_steps`, whose step runs to the end). Answer: the particle with the largest weight
(`final=score`, its_hub's argmax), one drawn from the weights (`sample`), or the weighted vote.

`particle-gibbs` (strategies/particle_gibbs.py) repeats this with a retained reference particle.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from tts.step_search import StepSearch, StepSearchConfig, StepSearchStrategy, Track, softmax_of_logits
from tts.strategy import StrategyContext
from tts.types import Problem, Result


class ParticleFilteringConfig(StepSearchConfig):
    softmax_temperature: float = Field(1.0, gt=0.0, description="tau in softmax(logit(r) / tau)")


async def filter_particles(search: StepSearch, n: int, tau: float, reference: Track | None = None,
                           ) -> tuple[list[Track], list[dict[str, object]]]:
    """One particle-filtering run of `n` free particles; returns the final particles and each step's record.

    With a `reference` (particle Gibbs) the reference takes part in every resampling as it stood at the
    current step (its step-t score is its weight; a drawn copy is cut back to t steps and goes on from
    there: the reference at its weight at step t, not its final one, unlike its_hub), and is returned, whole,
    as one more particle. No resampling follows the last step (as the PF paper's code; its_hub resamples
    once more, which can lose the best particle before its argmax).
    """
    rng, cfg = search.ctx.rng, search.cfg
    particles = [Track(origin=i) for i in range(n)]
    history: list[dict[str, object]] = []
    for t in range(cfg.max_steps):
        active = [i for i, p in enumerate(particles) if not p.finished]
        if not active:
            break
        steps = await search.next_steps([particles[i] for i in active], [1] * len(active),
                                        final=t == cfg.max_steps - 1)
        grown = await search.extend([particles[i] for i in active], [g[0] for g in steps])
        for i, p in zip(active, grown):
            particles[i] = p
        if all(p.finished for p in particles):  # nothing left to extend: no resampling (the loop's condition)
            history.append({"step": t + 1, "active": len(active), "resampled": False})
            break
        pool = list(particles)
        if reference is not None:
            pool.append(reference.truncated(t + 1))
        weights = softmax_of_logits([latest_score(p) for p in pool], tau)
        drawn = rng.choices(range(len(pool)), weights=weights.tolist(), k=n)
        particles = [pool[j] for j in drawn]
        history.append({"step": t + 1, "active": len(active), "resampled": True,
                        "weights": [round(float(w), 4) for w in weights], "drawn": drawn})
    return particles + ([reference] if reference is not None else []), history


def latest_score(track: Track) -> float:
    """A particle's weight input: its latest step's score (mean over scorers); 0.5 (logit 0) before any step."""
    scores = track.mean_step_scores()
    return scores[-1] if scores else 0.5


def final_weights(tracks: Sequence[Track], tau: float) -> list[float]:
    return [float(w) for w in softmax_of_logits([latest_score(t) for t in tracks], tau)]


class ParticleFiltering(StepSearchStrategy):
    name = "particle-filtering"
    description = ("particle filtering: N particles, one scored step each per iteration, resampled by "
                   "softmax(logit(score))")
    Config = ParticleFilteringConfig
    config: ParticleFilteringConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        search = StepSearch(problem, ctx, cfg, self.name)
        particles, history = await filter_particles(search, cfg.n, cfg.softmax_temperature)
        return search.finish(particles, temperature=cfg.softmax_temperature, history=history,
                             weights=final_weights(particles, cfg.softmax_temperature))
