"""Particle Gibbs (docs/algorithms/particle-filtering.md, "Particle Gibbs"; Puri et al. 2025; reference:
its_hub `particle_gibbs.py`).

`iterations` runs of particle filtering share the budget N: each run has N / iterations particles
(its_hub's split; N must be a multiple). After a run, a reference particle is drawn from its final
particles by softmax(logit(score) / tau); the next run keeps it in one of its slots (N / iterations - 1
free particles), and at every step t it takes part in the resampling as it stood after t steps, its
step-t score as its weight; a drawn copy is cut back to t steps and goes on from there (conditional
SMC). The answer comes from the last run's particles (reference included), chosen by `final`.
`iterations=1` is plain particle filtering.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tts.step_search import StepSearch, StepSearchStrategy, Track, softmax_of_logits
from tts.strategies.particle_filtering import ParticleFilteringConfig, filter_particles, final_weights, latest_score
from tts.strategy import StrategyContext
from tts.types import Problem, Result


class ParticleGibbsConfig(ParticleFilteringConfig):
    iterations: int = Field(2, ge=1, description="particle-filtering runs; each has n / iterations particles")

    @model_validator(mode="after")
    def _split(self) -> ParticleGibbsConfig:
        if self.n % self.iterations:
            raise ValueError(f"particle-gibbs splits n={self.n} across iterations={self.iterations}: n must be a "
                             "multiple of iterations")
        if self.iterations > 1 and self.n // self.iterations < 2:
            raise ValueError(f"particle-gibbs needs at least 2 particles per iteration (one is the reference): "
                             f"n={self.n} with iterations={self.iterations} gives {self.n // self.iterations}")
        return self


class ParticleGibbs(StepSearchStrategy):
    name = "particle-gibbs"
    description = "particle Gibbs: several particle-filtering runs sharing the budget, a reference particle retained"
    Config = ParticleGibbsConfig
    config: ParticleGibbsConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        search = StepSearch(problem, ctx, cfg, self.name)
        per_run = cfg.n // cfg.iterations
        reference: Track | None = None
        runs = []
        particles: list[Track] = []
        for it in range(cfg.iterations):
            free = per_run - (reference is not None)
            particles, history = await filter_particles(search, free, cfg.softmax_temperature, reference)
            weights = softmax_of_logits([latest_score(p) for p in particles], cfg.softmax_temperature)
            runs.append({"iteration": it, "history": history,
                         "answers": [ctx.answers.extract_answer(p.text, problem) for p in particles]})
            if it < cfg.iterations - 1:
                drawn = ctx.rng.choices(range(len(particles)), weights=weights.tolist())[0]
                reference = particles[drawn]
                runs[-1]["reference"] = drawn
        return search.finish(particles, temperature=cfg.softmax_temperature, runs=runs,
                             weights=final_weights(particles, cfg.softmax_temperature))
