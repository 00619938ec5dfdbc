"""The `reward-model` scorer: a real outcome or process reward model run by vLLM (docs/scorers/reward-models.md).

Process reward models (Lightman et al. 2023; Wang et al. 2024; Zhang et al. 2025) give each step of a
solution a score; the scorer aggregates them into the candidate's score (`aggregation`, default the
last step's, as search-and-learn does). Pooling models (Qwen2.5-Math-PRM, Skywork PRM, outcome reward
models) run on vLLM's pooling runner; PRMs that are causal LMs (RLHFlow, Math-Shepherd) run on the
generate runner and are read through the log-probabilities of their "+"/"-" tokens. Each family's format
lives in `scorers/prm_formats.py`.

All candidates of one `score()` call go to the engine in one batch, and the engine thread batches the
requests of every problem in flight together (`tts.backends.vllm_pooling`). The reward model's tokens
and FLOPs are counted as scorer cost.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from pydantic import Field

from tts.errors import UserError
from tts.scorer import (
    DEFAULT_STEP_SEPARATOR,
    Aggregation,
    Scorer,
    ScorerOptions,
    ScoringContext,
    aggregate,
)
from tts.scorers import prm_formats
from tts.scorers.prm_formats import FAMILIES, Encoded, Family
from tts.types import Candidate, Problem, Sample, Verdict

FamilyName = Literal["auto", "qwen2.5-math-prm", "skywork-prm", "rlhflow-prm", "math-shepherd", "orm"]


class RewardModelOptions(ScorerOptions):
    model: str = Field(description="local folder of the reward model (config.json, *.safetensors, tokenizer)")
    family: FamilyName = Field("auto", description="format and pooling: " + "; ".join(
        f"{f.name}: {f.summary}" for f in FAMILIES.values()) + "; auto: from config.json's architectures")
    aggregation: Aggregation = Field("last", description="step scores -> score: last, min, prod or mean")
    step_separator: str = Field(DEFAULT_STEP_SEPARATOR, description="where the candidate's text is cut into steps")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="passed = score >= threshold")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] | None = Field(
        None, description="weights and activations (default: float32 on CPU, the model's own on GPU)")
    max_model_len: int = Field(4096, ge=16, description="longest prompt the reward model takes")
    kv_cache_gb: int = Field(1, ge=1, description="CPU: the reward model's KV cache in GiB")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="GPU: share of memory its engine may take")
    max_num_seqs: int | None = Field(None, ge=1, description="most sequences in one engine batch (default: vLLM's)")

    outside_identity = frozenset({"max_model_len", "kv_cache_gb", "gpu_memory_utilization", "max_num_seqs"})


class RewardModelScorer(Scorer):
    name = "reward-model"
    description = "an outcome or process reward model (Qwen2.5-Math-PRM, Skywork, RLHFlow, Math-Shepherd, ORM) in vLLM"
    Options = RewardModelOptions
    options: RewardModelOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        from tts.models import resolve_model

        opts = self.options
        self.model = resolve_model(opts.model)
        self.family: Family = prm_formats.detect_family(self.model, opts.family)
        self.level = "outcome" if self.family.pooling == "last" else "process"
        self.tokenizer = _load_tokenizer(self.model)
        self.tag_id: int | None = None
        if self.family.step_tag is not None:
            self.tag_id = prm_formats.single_token(self.tokenizer, self.family.step_tag, self.family.name, self.model)
        self.label_ids: list[int] = []
        if self.family.pooling == "next-token":
            self.label_ids = [prm_formats.single_token(self.tokenizer, t, self.family.name, self.model)
                              for t in ("+", "-")]
        self._engine: Any = None
        self._orm_task: Literal["classify", "token_classify"] = "classify"
        self._start_lock = asyncio.Lock()

    # ---- engine --------------------------------------------------------------------------
    async def engine(self) -> Any:
        """The reward model's engine, started (in a worker thread) by the first batch that needs it."""
        async with self._start_lock:
            if self._engine is None:
                from tts.backends.vllm_pooling import scoring_engine

                o = self.options
                self._engine = await asyncio.to_thread(
                    scoring_engine, self.model, self.family.runner, dtype=o.dtype, max_model_len=o.max_model_len,
                    kv_cache_gb=o.kv_cache_gb, gpu_memory_utilization=o.gpu_memory_utilization,
                    max_num_seqs=o.max_num_seqs)
                if self.family.pooling == "last" and "classify" not in self._engine.supported_tasks:
                    self._orm_task = "token_classify"
        return self._engine

    def _params(self) -> Any:
        from vllm import PoolingParams, SamplingParams

        pooling = self.family.pooling
        if pooling == "step-tag":
            return PoolingParams(task="token_classify", step_tag_id=self.tag_id, use_activation=False)
        if pooling == "flagged":
            return PoolingParams(task="token_classify", use_activation=False)
        if pooling == "last":
            return PoolingParams(task=self._orm_task, use_activation=False)
        return SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(self.label_ids),
                              logprob_token_ids=list(self.label_ids))

    # ---- scoring -------------------------------------------------------------------------
    def encode(self, problem: Problem, candidate: Candidate) -> tuple[list[str], Encoded]:
        """The candidate's steps (cleaned of the family's tag) and the prompts the engine gets for it."""
        return prm_formats.encode_candidate(self.family, self.tokenizer, problem.question, candidate.text,
                                            self.options.step_separator)

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext) -> list[Verdict]:
        engine = await self.engine()
        plans: list[tuple[list[str], Encoded | None, str]] = []
        batch: list[tuple[list[int], Any]] = []
        params = self._params()
        for cand in candidates:
            steps, enc = self.encode(problem, cand)
            longest = max((len(p) for p in enc.prompts), default=0)
            if not steps and self.family.pooling != "last":
                plans.append((steps, None, "no step to score"))
            elif longest + 1 > engine.max_model_len:
                plans.append((steps, None, f"too long for the reward model ({longest} tokens, max_model_len="
                                           f"{engine.max_model_len})"))
            else:
                plans.append((steps, enc, ""))
                batch.extend((ids, params) for ids in enc.prompts)
        outputs = await engine.run(batch)  # one engine submission for the whole batch
        if batch:
            ctx.usage.scorer_calls += 1
        for (ids, _), out in zip(batch, outputs):
            completion = 1 if self.family.runner == "generate" else 0
            ctx.usage.add_scoring([Sample(text="", token_count=completion, prompt_tokens=len(ids),
                                          cached_tokens=int(getattr(out, "num_cached_tokens", 0) or 0))],
                                  engine.parameter_count)
        verdicts, pos = [], 0
        for steps, enc, why in plans:
            if enc is None:
                verdicts.append(Verdict(verifier=self.name, score=0.0, passed=False, step_scores=[],
                                        feedback=f"PRM: {why}"))
                continue
            n = len(enc.prompts)
            step_scores = self.read_scores(outputs[pos:pos + n], enc, len(steps))
            pos += n
            verdicts.append(self.verdict(step_scores))
        return verdicts

    def verdict(self, step_scores: list[float]) -> Verdict:
        score = min(1.0, max(0.0, aggregate(step_scores, self.options.aggregation)))
        shown = ", ".join(f"{s:.3f}" for s in step_scores)
        kind = "PRM step scores" if self.level == "process" else "ORM score"
        feedback = f"{kind}: [{shown}] -> {self.options.aggregation} = {score:.3f}"
        return Verdict(verifier=self.name, score=score, passed=score >= self.options.threshold,
                       step_scores=step_scores, feedback=feedback)

    def read_scores(self, outputs: list[Any], enc: Encoded, n_steps: int) -> list[float]:
        """Step scores from vLLM's outputs for one candidate (one output per prompt)."""
        pooling = self.family.pooling
        if pooling == "next-token":
            return [_plus_probability(out, self.label_ids) for out in outputs]
        rows = _rows(outputs[0])
        if pooling == "step-tag":
            scores = [_positive(row) for row in rows]
        elif pooling == "flagged":
            scores = [_positive(rows[i]) for i in enc.positions or []]
        else:
            return [_positive(rows[-1])]
        if len(scores) != n_steps:
            raise UserError(f"reward model {self.model}: {len(scores)} scored positions for {n_steps} steps; "
                            f"the {self.family.name} step tag does not tokenize as written")
        return scores

    async def aclose(self) -> None:
        """Nothing: the engine is shared by the process's scorers on this model (`close_scoring_engines`)."""


def _load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model)
    except Exception as exc:  # noqa: BLE001 - any failure to read the folder's tokenizer is the user's to fix
        raise UserError(f"reward model {model}: cannot load its tokenizer ({type(exc).__name__}: {exc})") from None


def _rows(out: Any) -> list[list[float]]:
    """A pooling output as rows of floats: [positions][labels] (a 1-D output is one row)."""
    data = out.outputs.data
    data = data.float().cpu().tolist() if hasattr(data, "tolist") else data
    if data and not isinstance(data[0], list):
        return [data]
    return data


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _positive(row: list[float]) -> float:
    """One position's score in [0, 1]: sigmoid of a single logit, else the softmax probability of label 1."""
    if len(row) == 1:
        return _sigmoid(row[0])
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return exps[1] / sum(exps)


def _plus_probability(out: Any, label_ids: list[int]) -> float:
    """P(+) / (P(+) + P(-)) from the log-probabilities of the one generated position."""
    (position,) = out.outputs[0].logprobs[:1]
    plus, minus = (float(position[i].logprob) for i in label_ids)
    return _sigmoid(plus - minus)
