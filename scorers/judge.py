"""Any model on any backend as a generative judge (docs/scorers/judge.md).

The candidate is appended to a verification prompt ("Is the answer above correct? Answer Yes or No.")
and the score is P(Yes) / (P(Yes) + P(No)) read from the next token's top-k log-probabilities
(Zheng et al. 2023, "Judging LLM-as-a-Judge"; Zhang et al. 2024, "Generative Verifiers"). At process
level every step prefix is judged and the step scores are aggregated. All requests of a batch (every
candidate, every prefix, every vote) go to the engine in one call, counted as scorer cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from tts.errors import UserError
from tts.scorer import Aggregation, Scorer, ScorerOptions, ScoringContext, aggregate, step_prefixes
from tts.scorers.judge_prompts import (
    DEFAULT_QUESTION,
    DEFAULT_STEP_QUESTION,
    Reading,
    judge_prompt,
    read_direct,
    read_explained,
    template_error,
)
from tts.types import Candidate, GenerationRequest, Problem, Sample, SamplingConfig, Verdict

if TYPE_CHECKING:
    from tts.backends.base import Backend

# Options that choose a judge model of its own; with none of them set the judge is the policy model.
_OWN_MODEL_FIELDS = ("model", "backend", "base_url", "backend_options")


class JudgeOptions(ScorerOptions):
    """The judge's options (`--scorer-option KEY=VALUE`)."""

    level: Literal["outcome", "process"] = Field(
        "outcome", description="outcome: judge each whole solution; process: judge every step prefix")
    aggregation: Aggregation = Field(
        "last", description="process level: how step scores become the score (last, min, prod or mean)")
    step_separator: str = Field("\n\n", min_length=1, description="process level: what separates steps")
    question: str = Field(DEFAULT_QUESTION, min_length=1, description="the question asked after a whole solution")
    step_question: str = Field(DEFAULT_STEP_QUESTION, min_length=1,
                               description="process level: the question asked after each step prefix")
    template: str | None = Field(
        None, description="a custom judge prompt sent as one user message, with {solution} (the candidate) and "
        "optionally {question} (the problem's question); replaces the generation prompt and the question")
    votes: int = Field(1, ge=1, le=64, description="judgements sampled per request and averaged (self-consistency "
                       "of the judge, for models whose probabilities are poorly calibrated); 1: one greedy reading")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature of the judgements when votes > 1")
    explain: bool = Field(False, description="let the judge explain first and end with \"Answer: Yes|No\"; the "
                          "explanation becomes the verdict's feedback")
    explain_tokens: int = Field(256, ge=8, le=8192, description="explain: most tokens of an explanation")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="a verdict passes when its score is at least this")
    top_logprobs: int = Field(20, ge=1, le=20, description="top-k log-probabilities read at the answer position")
    model: str | None = Field(None, description="the judge model; None (and no backend, base_url, backend_options "
                              "given): the policy model that generated the candidates")
    backend: str = Field("vllm", description="the judge model's backend (when it has its own model)")
    base_url: str | None = Field(None, description="the judge's server, for HTTP backends (openai)")
    backend_options: dict[str, Any] = Field(default_factory=dict,
                                            description="options of the judge's backend (as --backend-option)")

    # Where the judge's server answers changes how scores are fetched, not what they are (its served model
    # is part of `model`).
    outside_identity: ClassVar[frozenset[str]] = frozenset({"base_url"})

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None and (problem := template_error(value)):
            raise ValueError(problem)
        return value


class JudgeScorer(Scorer):
    """An LLM judge: P(Yes) of a verification question about each candidate (or each step of it)."""

    name = "judge"
    description = "an LLM (the policy or any model) asked whether each answer (or step) is correct: P(Yes)"
    Options = JudgeOptions
    options: JudgeOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.level = self.options.level
        self._backend: Backend | None = None

    # ---- the judge model ------------------------------------------------------------------------
    def judge_backend(self, ctx: ScoringContext) -> Backend:
        """The policy backend, or the judge's own model built once (backends are cached per process)."""
        opts = self.options
        if not any(f in opts.model_fields_set for f in _OWN_MODEL_FIELDS):
            return ctx.policy
        if self._backend is None:
            from tts.registry import build_backend

            self._backend = build_backend(opts.backend, opts.model, opts.base_url, **opts.backend_options)
        return self._backend

    def sampling(self) -> SamplingConfig:
        opts = self.options
        return SamplingConfig(
            n=opts.votes, temperature=opts.temperature if opts.votes > 1 else 0.0,
            max_tokens=opts.explain_tokens if opts.explain else 1, logprobs=True, top_logprobs=opts.top_logprobs)

    # ---- scoring --------------------------------------------------------------------------------
    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        opts = self.options
        process = opts.level == "process"
        question = opts.step_question if process else opts.question
        # Every request of the batch: (candidate, prompt); a candidate's requests are its steps, in order.
        pieces: list[list[str]] = []
        for c in candidates:
            if not c.text.strip():
                pieces.append([])
            else:
                pieces.append(step_prefixes(c.text, opts.step_separator) if process else [c.text])
        per_candidate = await self.judge(problem, pieces, question, ctx)
        return [self.verdict(mine, process) for mine in per_candidate]

    async def score_last_steps(self, problem: Problem, partials: list[Candidate], ctx: ScoringContext) -> list[float]:
        """Judge only each partial solution's last step prefix, with the step question (at either level):
        a step-level search keeps the earlier steps' scores, so each step costs one request, not one per
        step so far. An empty partial scores 0."""
        opts = self.options
        pieces = [step_prefixes(c.text, opts.step_separator)[-1:] for c in partials]
        per_candidate = await self.judge(problem, pieces, opts.step_question, ctx)
        return [min(max(sum(r.score for r in rs[0]) / len(rs[0]), 0.0), 1.0) if rs else 0.0
                for rs in per_candidate]

    async def judge(self, problem: Problem, pieces: list[list[str]], question: str,
                    ctx: ScoringContext) -> list[list[list[Reading]]]:
        """Judge every text of every candidate in one engine call: per candidate, per text, its readings."""
        opts = self.options
        sampling = self.sampling()
        requests = [GenerationRequest(prompt=judge_prompt(problem, text, question, explain=opts.explain,
                                                          template=opts.template), sampling=sampling)
                    for texts in pieces for text in texts]
        backend = self.judge_backend(ctx)
        out = await ctx.generate(backend, requests)
        readings = [self.read(samples, backend) for samples in out]
        grouped, at = [], 0
        for texts in pieces:
            grouped.append(readings[at: at + len(texts)])
            at += len(texts)
        return grouped

    def read(self, samples: list[Sample], backend: Backend) -> list[Reading]:
        """Each judgement sample of one request read as a score."""
        for s in samples:
            if s.top_logprobs is None:
                raise UserError(f"the judge needs top log-probabilities, and backend {backend.name!r} (model "
                                f"{backend.model!r}) returned none: choose a backend and server that return them "
                                "(vllm; openai against vllm serve, whose --max-logprobs must be at least the judge's "
                                "top_logprobs)")
        vote = self.options.votes > 1
        return [read_explained(s) if self.options.explain else read_direct(s, vote) for s in samples]

    def verdict(self, per_request: list[list[Reading]], process: bool) -> Verdict:
        """One candidate's verdict from the readings of its requests (one, or one per step)."""
        opts = self.options
        if not per_request:
            return Verdict(verifier=self.name, score=0.0, passed=False, step_scores=[] if process else None,
                           feedback="judge: the answer is empty (nothing to judge): score 0")
        scores = [sum(r.score for r in rs) / len(rs) for rs in per_request]
        score = aggregate(scores, opts.aggregation) if process else scores[0]
        score = min(max(score, 0.0), 1.0)
        return Verdict(verifier=self.name, score=score, passed=score >= opts.threshold,
                       feedback=self.feedback(per_request, scores, score, process),
                       step_scores=scores if process else None)

    def feedback(self, per_request: list[list[Reading]], scores: list[float], score: float, process: bool) -> str:
        """The explanation (explain=True), else the judged probability; what was odd about the answers."""
        opts = self.options
        votes = f" (mean of {opts.votes} judgements)" if opts.votes > 1 else ""
        if process:
            steps = ", ".join(f"{s:.2f}" for s in scores)
            text = f"judge: P(correct) per step = {steps}; {opts.aggregation}: {score:.2f}{votes}"
            focus = min(range(len(scores)), key=lambda i: (scores[i], -i))  # the weakest step (latest on ties)
        else:
            text = f"judge: P(correct) = {score:.2f}{votes}"
            focus = 0
        readings = per_request[focus]
        # The judgement closest to the step's mean speaks for it (its explanation, its note).
        reading = min(readings, key=lambda r: abs(r.score - scores[focus]))
        notes = sorted({r.note for r in readings if r.note})
        if notes:
            text += f" [{'; '.join(notes)}]"
        if opts.explain and reading.explanation:
            where = f"step {focus + 1}: " if process else ""
            return f"{where}{reading.explanation}\n({text})"
        return text
