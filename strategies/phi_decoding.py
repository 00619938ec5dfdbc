"""φ-Decoding: step-wise decoding with foresight rollouts, advantage + alignment sampling and adaptive
pruning (docs/algorithms/phi-decoding.md; reference: xufangzhi/phi-Decoding `phi_decoding-origin.py`).

Each step, for the beams still open (M = `beams` at first):
1. candidates: N one-line steps per beam (T=0.6, stop at the delimiter), one engine call for all beams;
2. in-width pruning: candidates whose step mlogp is not above mu - sigma_rate*sigma get no rollout
   (topped up to the beam width from the dropped ones, sampled with softmax(mlogp/tau));
3. foresight: each kept candidate is rolled out to the end of the answer (one call); F = mlogp of the
   rollout tokens only (caution 2), advantage A = F - F of the parent beam;
4. selection: pool S = kept candidates with A > 0 and a non-empty rollout. If |S| >= width, the rollouts
   are clustered (TF-IDF + k-means, K=3) and `width` candidates are drawn without replacement from
   P = (softmax(cluster share) + softmax(A/tau)) / 2 over S; otherwise, or if clustering fails, from
   softmax(A/tau) over all kept candidates;
5. in-depth pruning: stop when all chosen steps are identical and t >= min_depth_steps, or when one
   cluster held more than depth_threshold of the pool at this step and t+1 >= min_depth_steps.
Then every open beam is completed (one call), A_b = mlogp(completion) - F_b, and one beam is picked:
pool = beams with A_b > 0 and a non-empty completion; k-means (K=2) on the completions; within the
LARGER cluster b ~ softmax(A/tau). The reference code indexes the wrong cluster when cluster 1 is the
larger one; this implements the intended rule, as the spec asks. An empty pool picks b ~ softmax(-A/tau)
over all beams (the sign as in the reference code); a failed clustering, b ~ softmax(A/tau) over all.

Decisions where the paper is silent (finished answers, the one-step cluster-agreement stop, successive
sampling, the unused `n`, the temperatures): docs/algorithms/phi-decoding.md.
Candidates are the M final answers (text = initial prefix + steps + completion); confidence is the
share of them whose answer is equivalent to the chosen one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from tts.clustering import (
    DEFAULT_EMBEDDING_MODEL,
    ClusteringError,
    ClusteringMethod,
    cluster_texts,
    require_embeddings,
)
from tts.selection import group_answers
from tts.stepwise import (
    DEFAULT_ANSWER_PATTERN,
    DEFAULT_DELIMITER,
    Step,
    StepFormat,
    StepState,
    ended_without_text,
    flops_report,
    next_step_requests,
    rollout_requests,
    step_from_sample,
    usage_of,
    with_request_seeds,
)
from tts.strategies.phi_selection import (
    FinalSelection,
    Selection,
    WidthPruning,
    choose_final,
    choose_next,
    width_prune,
)
from tts.strategy import Strategy, StrategyConfig, StrategyContext
from tts.types import (
    Candidate,
    GenerationRequest,
    Problem,
    Result,
    Sample,
    SamplingConfig,
    Usage,
    finite_or_none,
)

PHASES = ("steps", "foresight", "final")


class PhiDecodingConfig(StrategyConfig):
    """Defaults are the origin script's (docs/algorithms/phi-decoding.md, "Defaults and options")."""

    n: int = Field(8, ge=1, description="not used by φ-Decoding: its budget is beams x candidates x steps")
    beams: int = Field(4, ge=1, description="M (step_beam_size): beams kept per step")
    candidates: int = Field(4, ge=1, description="N (num_rollout): candidate steps sampled per beam")
    max_steps: int = Field(8, ge=1, description="T_max (num_foresight): step iterations at most")
    step_temperature: float = Field(0.6, ge=0.0)
    step_max_tokens: int = Field(1024, ge=1)
    rollout_temperature: float = Field(1.0, ge=0.0)
    rollout_max_tokens: int = Field(1024, ge=1, description="cap on each foresight rollout")
    final_temperature: float = Field(1.0, ge=0.0)
    final_max_tokens: int = Field(3000, ge=1)
    tau: float = Field(0.1, gt=0.0, description="softmax temperature of the log-prob and advantage weights")
    clusters: int = Field(3, ge=1, description="K: k-means clusters of the foresight paths")
    final_clusters: int = Field(2, ge=1, description="k-means clusters of the final completions")
    width_pruning: bool = True
    sigma_rate: float = Field(1.0, ge=0.0, description="in-width pruning drops step mlogp <= mu - sigma_rate*sigma")
    depth_pruning: bool = True
    depth_threshold: float = Field(0.7, gt=0.0, le=1.0, description="delta: cluster share that stops the loop")
    min_depth_steps: int = Field(4, ge=0, description="least_foresight_num: no in-depth stop before this step")
    positive_advantage_only: bool = Field(True, description="adv_above0: only A > 0 enters clustering")
    clustering: ClusteringMethod = "tfidf"
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    delimiter: str = Field(DEFAULT_DELIMITER, min_length=1, description="a step is the text up to this string")
    initial_prefix: str = Field("The reasoning steps are:\n\n", description="answer text every beam starts from")
    answer_pattern: str | None = Field(DEFAULT_ANSWER_PATTERN, description="regex; a step matching it ends the answer")
    end_marker: str | None = Field(None, description="e.g. <end_of_reasoning>, where the prompt asks for one")

    @model_validator(mode="after")
    def _embeddings_available(self) -> PhiDecodingConfig:
        if self.clustering == "embedding":
            require_embeddings()
        return self


# ----------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Beam:
    state: StepState
    value: float = 0.0  # F of the foresight that chose it (the parent value of its children)
    advantage: float | None = None  # A it was chosen with
    path: str = ""  # its foresight path; for a finished beam, its last step


@dataclass
class CandidateStep:
    beam: int  # slot of the parent beam
    step: Step
    value: float | None = None  # F
    path: str = ""
    rolled_out: bool = False
    rollout_tokens: int = 0
    advantage: float | None = None
    kept_at: int | None = None  # index among the kept candidates (None: pruned in width)
    pool_at: int | None = None  # index in the selection pool
    chosen: bool = False

    def record(self, labels: Sequence[int] | None, sel: Selection) -> CandidateRecord:
        j, kept = self.kept_at, self.kept_at is not None
        return CandidateRecord(
            beam=self.beam, step=self.step.text, step_mlogp=finite_or_none(self.step.mean_logprob),
            step_tokens=self.step.token_count, finished=self.step.finished, kept=kept,
            foresight_mlogp=finite_or_none(self.value) if kept else None, foresight_tokens=self.rollout_tokens,
            advantage=finite_or_none(self.advantage) if kept else None, in_pool=self.pool_at is not None,
            cluster=labels[self.pool_at] if labels is not None and self.pool_at is not None else None,
            alignment=sel.alignment[j] if j is not None else None,
            probability=sel.probabilities[j] if j is not None else None, chosen=self.chosen)


# ----------------------------------------------------------------------------- step records (info["steps"])


@dataclass
class CandidateRecord:
    """One candidate step; the foresight fields are None for a candidate pruned in width."""

    beam: int
    step: str
    step_mlogp: float | None
    step_tokens: int
    finished: bool
    kept: bool
    foresight_mlogp: float | None
    foresight_tokens: int
    advantage: float | None
    in_pool: bool
    cluster: int | None
    alignment: float | None
    probability: float | None
    chosen: bool


@dataclass
class WidthRecord:
    mu: float | None
    sigma: float | None
    threshold: float | None
    pruned: int
    added_back: int


@dataclass
class SelectionRecord:
    mode: str
    cluster_shares: list[float]
    early_stop: bool


@dataclass
class BeamRecord:
    parent: int | None  # slot of the beam it extends; None for a beam frozen earlier
    steps: int
    finished: bool
    value: float | None


@dataclass
class StepRecord:
    step: int
    width: int
    candidates: list[CandidateRecord]
    width_pruning: WidthRecord
    rollouts: int
    selection: SelectionRecord
    beams: list[BeamRecord]
    depth_stop: str | None


class PhiDecoding(Strategy):
    name = "phi-decoding"
    description = "φ-Decoding: step-wise foresight sampling (advantage + cluster alignment) with width/depth pruning"
    Config = PhiDecodingConfig
    config: PhiDecodingConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        c = self.config
        self.format = StepFormat(delimiter=c.delimiter, answer_pattern=c.answer_pattern, end_marker=c.end_marker)

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        return await _Search(self, problem, ctx).run()


class _Search:
    """One problem's search: beams, per-step records and per-phase token counts."""

    def __init__(self, strategy: PhiDecoding, problem: Problem, ctx: StrategyContext):
        self.name = strategy.name
        self.cfg: PhiDecodingConfig = strategy.config
        self.fmt = strategy.format
        self.problem = problem
        self.ctx = ctx
        self.phase_usage = {phase: Usage() for phase in PHASES}
        self.records: list[StepRecord] = []

    # ---- engine and clustering --------------------------------------------------------------
    def _sampling(self, n: int, temperature: float, max_tokens: int) -> SamplingConfig:
        base = self.ctx.sampling
        return SamplingConfig(n=n, temperature=temperature, top_p=base.top_p, max_tokens=max_tokens,
                              seed=base.seed, logprobs=True)

    async def _generate(self, phase: str, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """One engine call for the whole phase (the engine batches it with other problems' calls)."""
        if not requests:
            return []
        out = await self.ctx.generate(with_request_seeds(requests, self.ctx.rng))
        self.phase_usage[phase] = self.phase_usage[phase] + usage_of(out, self.ctx.backend.parameter_count)
        return out

    async def _cluster(self, texts: list[str], k: int) -> list[int] | None:
        seed = self.ctx.rng.randrange(2**31)
        try:
            labels = await asyncio.to_thread(cluster_texts, texts, k, method=self.cfg.clustering, seed=seed,
                                             embedding_model=self.cfg.embedding_model)
        except ClusteringError:
            return None
        return [int(x) for x in labels]

    # ---- the step loop ----------------------------------------------------------------------
    async def run(self) -> Result:
        cfg = self.cfg
        beams = [Beam(StepState(prefix=cfg.initial_prefix)) for _ in range(cfg.beams)]
        stop_reason, steps_run = "max_steps", 0
        for t in range(cfg.max_steps):
            beams, depth_stop = await self._step(t, beams)
            steps_run = t + 1
            if depth_stop:
                stop_reason = depth_stop
                break
            if all(b.state.finished for b in beams):
                stop_reason = "all_finished"
                break
        return await self._finish(beams, stop_reason, steps_run)

    async def _step(self, t: int, beams: list[Beam]) -> tuple[list[Beam], str | None]:
        cfg, rng, prompt = self.cfg, self.ctx.rng, self.problem.prompt
        open_slots = [i for i, b in enumerate(beams) if not b.state.finished]
        width = len(open_slots)

        # 1. candidate steps
        step_sampling = self._sampling(cfg.candidates, cfg.step_temperature, cfg.step_max_tokens)
        outs = await self._generate("steps", next_step_requests(prompt, [beams[i].state for i in open_slots],
                                                                step_sampling, self.fmt))
        cands = [CandidateStep(slot, step_from_sample(s, self.fmt)) for slot, samples in zip(open_slots, outs)
                 for s in samples]

        # 2. in-width pruning
        mlogps = [c.step.mean_logprob for c in cands]
        if cfg.width_pruning:
            width_info = width_prune(mlogps, cfg.sigma_rate, cfg.tau, width, rng)
        else:
            width_info = WidthPruning(list(range(len(cands))), [], float(np.mean(mlogps)), float(np.std(mlogps)),
                                      -math.inf)
        kept = [cands[i] for i in width_info.kept]
        for j, c in enumerate(kept):
            c.kept_at = j

        # 3. foresight
        to_roll = [c for c in kept if not c.step.finished]
        rollout_sampling = self._sampling(1, cfg.rollout_temperature, cfg.rollout_max_tokens)
        outs = await self._generate("foresight", rollout_requests(
            prompt, [beams[c.beam].state.text + c.step.written for c in to_roll], rollout_sampling, self.fmt))
        for c, (sample,) in zip(to_roll, outs):
            c.rolled_out, c.rollout_tokens = True, sample.token_count
            if ended_without_text(sample):  # the model stopped right after this step: it ended the answer
                c.step = c.step.model_copy(update={"finished": True})
            else:
                c.value, c.path = sample.mean_logprob or 0.0, sample.text
        for c in kept:
            if c.step.finished:  # the path after the parent is the step itself
                c.value, c.path = c.step.mean_logprob, c.step.text
            c.advantage = c.value - beams[c.beam].value

        # 4. selection
        advantages = [c.advantage for c in kept]
        pool = [i for i, c in enumerate(kept)
                if c.path.strip() and (c.advantage > 0 or not cfg.positive_advantage_only)]
        for p, i in enumerate(pool):
            kept[i].pool_at = p
        labels = await self._cluster([kept[i].path for i in pool], cfg.clusters) if len(pool) >= width else None
        sel = choose_next(advantages, pool, labels, width, cfg.tau, cfg.depth_threshold, rng)
        chosen = [kept[i] for i in sel.chosen]
        for c in chosen:
            c.chosen = True
        successors = iter(Beam(beams[c.beam].state.extend(c.step), c.value, c.advantage, c.path) for c in chosen)
        new_beams = [next(successors) if slot in open_slots else b for slot, b in enumerate(beams)]

        # 5. in-depth pruning
        depth_stop = None
        if cfg.depth_pruning:
            if len({c.step.text.strip() for c in chosen}) == 1 and t >= cfg.min_depth_steps:
                depth_stop = "identical_steps"
            elif sel.early_stop and t + 1 >= cfg.min_depth_steps:
                depth_stop = "cluster_agreement"

        parents = iter(c.beam for c in chosen)
        self.records.append(StepRecord(
            step=t, width=width, candidates=[c.record(labels, sel) for c in cands],
            width_pruning=WidthRecord(finite_or_none(width_info.mu), finite_or_none(width_info.sigma),
                                      finite_or_none(width_info.threshold), pruned=len(cands) - len(kept),
                                      added_back=len(width_info.added_back)),
            rollouts=sum(c.rolled_out for c in kept),
            selection=SelectionRecord(sel.mode, sel.cluster_shares, sel.early_stop),
            beams=[BeamRecord(next(parents) if slot in open_slots else None, b.state.depth, b.state.finished,
                              finite_or_none(b.value)) for slot, b in enumerate(new_beams)],
            depth_stop=depth_stop))
        return new_beams, depth_stop

    # ---- final completion and selection -----------------------------------------------------
    async def _finish(self, beams: list[Beam], stop_reason: str, steps_run: int) -> Result:
        cfg, ctx = self.cfg, self.ctx
        open_slots = [i for i, b in enumerate(beams) if not b.state.finished]
        final_sampling = self._sampling(1, cfg.final_temperature, cfg.final_max_tokens)
        outs = await self._generate("final", rollout_requests(
            self.problem.prompt, [beams[i].state.text for i in open_slots], final_sampling, self.fmt))
        completions: dict[int, Sample] = {slot: samples[0] for slot, samples in zip(open_slots, outs)}

        paths, advantages = [], []
        for slot, beam in enumerate(beams):
            if slot in completions:
                sample = completions[slot]
                paths.append(sample.text)
                advantages.append((sample.mean_logprob or 0.0) - beam.value)
            else:  # finished inside the loop: its completion was its last step
                paths.append(beam.path)
                advantages.append(beam.advantage if beam.advantage is not None else 0.0)
        pool = [b for b in range(len(beams))
                if paths[b].strip() and (advantages[b] > 0 or not cfg.positive_advantage_only)]
        labels = await self._cluster([paths[b] for b in pool], cfg.final_clusters) if pool else None
        final = choose_final(advantages, pool, labels, cfg.tau, ctx.rng)

        candidates = [self._candidate(slot, beam, completions.get(slot), advantages[slot], slot in pool)
                      for slot, beam in enumerate(beams)]
        if labels is not None:
            for b, label in zip(pool, labels):
                candidates[b].info["cluster"] = label
        await ctx.score(self.problem, candidates)
        chosen = candidates[final.chosen]
        info = self._summary(stop_reason, steps_run, final, pool, labels, advantages)
        return ctx.finish(self.problem, self.name, answer=chosen.answer,
                          confidence=self._agreement(candidates, final.chosen), chosen=final.chosen,
                          candidates=candidates, info=info)

    def _candidate(self, slot: int, beam: Beam, completion: Sample | None, advantage: float,
                   in_pool: bool) -> Candidate:
        state = beam.state
        text = state.text + (completion.text if completion else "")
        tokens = state.token_count + (completion.token_count if completion else 0)
        logprob = state.logprob_sum + ((completion.logprob_sum or 0.0) if completion else 0.0)
        finish = completion.finish_reason if completion else state.steps[-1].finish_reason
        return Candidate(
            text=text,
            answer=self.ctx.answers.extract_answer(text, self.problem),
            completion_tokens=tokens,
            mean_logprob=finite_or_none(logprob / tokens) if tokens else None,
            finish_reason=finish,
            info={"beam": slot, "steps": state.depth, "finished_in_loop": completion is None,
                  "final_advantage": finite_or_none(advantage), "in_final_pool": in_pool,
                  "step_logprobs": [finite_or_none(x) for x in state.cumulative_logprobs]},
        )

    def _agreement(self, candidates: list[Candidate], chosen: int) -> float | None:
        if candidates[chosen].answer is None:
            return None
        groups = group_answers([c.answer for c in candidates], self.ctx.answers.equivalent)
        group = next(g for g in groups if chosen in g)
        return len(group) / len(candidates)

    # ---- records ----------------------------------------------------------------------------
    def _summary(self, stop_reason, steps_run, final: FinalSelection, pool, labels, advantages) -> dict[str, Any]:
        cfg = self.cfg
        candidates_total = sum(len(r.candidates) for r in self.records)
        width_pruned = sum(r.width_pruning.pruned for r in self.records)
        depth_pruned = cfg.max_steps - steps_run if stop_reason in ("identical_steps", "cluster_agreement") else 0
        compute = flops_report(self.ctx.usage, self.ctx.backend.parameter_count)
        compute["phases"] = {phase: u.model_dump(exclude={"verifier_calls", "wall_time"})
                             for phase, u in self.phase_usage.items()}
        return {
            "steps": [asdict(r) for r in self.records],
            "steps_run": steps_run,
            "stop_reason": stop_reason,
            "candidate_steps": candidates_total,
            "width_pruned_steps": width_pruned,
            "width_pruned_share": width_pruned / candidates_total if candidates_total else 0.0,
            "depth_pruned_steps": depth_pruned,
            "depth_pruned_share": depth_pruned / cfg.max_steps,
            "rollouts": sum(r.rollouts for r in self.records),
            "final": {"mode": final.mode, "pool": list(pool), "clusters": labels, "members": final.members,
                      "advantages": [finite_or_none(a) for a in advantages],
                      "probabilities": final.probabilities, "chosen": final.chosen},
            "compute": compute,
        }
