"""Mixture: samples from several sampling configurations, majority vote over all (docs/allocate.md).

The configurations and their counts come from a mixture file, normally the allocation `tts allocate`
found (OSCA; Zhang et al. 2024, "Scaling LLM Inference with Optimized Sample Compute Allocation"):
`tts eval -s mixture -o mixture=PATH -n TOTAL`. n must equal the file's total, so the run folder's name
and `n` say the budget the file spends (a different -n is refused, not silently replaced). Each
component draws its n_c samples with its own temperature and top_p (so `tts eval --temperature/--top-p`
do not apply; max_tokens and the run's other sampling settings are shared), from the plain prompt or, with
`perturb`, from perturbed prompts (tts.perturb). Every component's samples are asked for in ONE engine
call: one request with n = n_c per plain component, n_c requests with n = 1 per perturbed one
(model-written hints and rephrasings need their own call first, as in `sample_candidates`). Perturbed
prompts are drawn from the problem's RNG component by component, in file order, so a seed gives the
same prompts.

Selection: majority vote over every candidate (self-consistency; `tts.selection.majority`), invalid
answers casting no vote. Each candidate's info["component"] is the label of the configuration that drew
it (and info["perturbation"] its perturbation); `Result.info["components"]` maps labels to counts.

One run uses one backend and so one model: a mixture whose components name different models is refused
(run each model's components separately). The components' model is not compared with `-m`: the file
records what the pools were drawn with; the run's config.json records what this run used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from tts import perturb as perturb_mod
from tts import selection
from tts.errors import UserError
from tts.mixture import MixtureComponent, MixtureFile, load_mixture, parse_mixture
from tts.strategy import Strategy, StrategyConfig, StrategyContext
from tts.types import Candidate, GenerationRequest, Problem, Result


class MixtureConfig(StrategyConfig):
    mixture: MixtureFile = Field(description="the path of a mixture file (`tts allocate` writes mixture.json), or "
                                 "the same object inline; n must equal its total")

    @field_validator("mixture", mode="before")
    @classmethod
    def _read(cls, value: Any) -> Any:
        """A path is read here, so config.json records the components themselves: resuming a run whose
        file changed since is refused as a different configuration."""
        if isinstance(value, str | Path):
            return load_mixture(value)
        if isinstance(value, dict):
            return parse_mixture(value, "the mixture option")
        return value

    @model_validator(mode="after")
    def _one_budget_one_model(self) -> MixtureConfig:
        mixture = self.mixture
        if self.n != mixture.total:
            parts = " + ".join(f"{c.n} {c.label}" for c in mixture.components)
            raise UserError(f"the mixture draws {mixture.total} samples per problem ({parts}) but n is {self.n}; "
                            f"run it with -n {mixture.total}")
        models = mixture.models()
        if len(models) > 1:
            names = ", ".join("the default model" if m is None else m for m in models)
            raise UserError(f"the mixture needs {len(models)} models ({names}) but a run uses one backend and one "
                            "model: run each model's components separately (one `tts eval -m MODEL` each)")
        return self


class Mixture(Strategy):
    name = "mixture"
    description = "samples from several sampling configurations (a `tts allocate` mixture file), majority vote"
    Config = MixtureConfig
    config: MixtureConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        components = self.config.mixture.components
        shared: dict[str, Any] = {}
        if ctx.wants_top_logprobs > ctx.sampling.top_logprobs:  # as sample_candidates: the scorers' needs
            shared["top_logprobs"] = ctx.wants_top_logprobs
        requests: list[GenerationRequest] = []
        owners: list[tuple[MixtureComponent, dict[str, Any] | None]] = []  # per request: component, perturbation
        for c in components:
            sampling = ctx.sampling.model_copy(update={"temperature": c.temperature, "top_p": c.top_p, **shared})
            if c.perturb is None:
                plain = sampling.model_copy(update={"n": c.n})
                requests.append(GenerationRequest(prompt=problem.prompt, sampling=plain))
                owners.append((c, None))
                continue
            drawn = await perturb_mod.perturbed_prompts(problem, c.n, c.perturb, rng=ctx.rng, generate=ctx.generate,
                                                        sampling=ctx.sampling)
            requests += perturb_mod.requests_for(drawn, sampling)
            owners += [(c, d.record) for d in drawn]
        candidates: list[Candidate] = []
        for (component, record), samples in zip(owners, await ctx.generate(requests), strict=True):
            for s in samples:
                candidate = ctx.candidate(problem, s)
                candidate.info["component"] = component.label
                if record is not None:
                    candidate.info["perturbation"] = record
                candidates.append(candidate)
        await ctx.score(problem, candidates)  # verdicts recorded for later studies; the vote ignores them
        groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        return ctx.finish_choice(problem, self.name, candidates, selection.majority(groups), groups,
                                 components={c.label: c.n for c in components})
