"""The output schema of a scaling study: scaling.json is a `ScalingFile` (one `ScalingStudy` per run)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tts.selection import MIN_PATHS_TO_PRUNE


class Point(BaseModel):
    k: int
    tokens: float = Field(description="mean completion tokens spent per problem at this k")
    value: float
    lo: float | None = Field(None, description="bootstrap 2.5% quantile over problems")
    hi: float | None = Field(None, description="bootstrap 97.5% quantile over problems")


class Curve(BaseModel):
    name: str
    label: str
    draws: int | None = Field(None, description="random subsets per problem and k; None when exact")
    note: str | None = None
    points: list[Point]

    def at(self, k: int) -> Point | None:
        return next((p for p in self.points if p.k == k), None)


class PowerLawFit(BaseModel):
    """log C(k) = a * k**b (docs/algorithms/repeated-sampling.md), fitted on the grid points with 0 < C(k) < 1."""

    a: float
    b: float
    r2: float | None
    ks: list[int]
    method: str

    def predict(self, k: float | np.ndarray) -> float | np.ndarray:
        return np.exp(self.a * np.power(k, self.b))


class ScorerQuality(BaseModel):
    """How well one scorer (or one aggregation of a process scorer's step scores) tells correct from incorrect.

    On every sample it scored, against the oracle's `correct`. The false-positive rate and the fLaws
    ceiling need pass flags (score >= the scorer's threshold); they are None (n/a) where the scorer
    gave none, and for an aggregation other than the one the scorer recorded as its score.
    """

    scorer: str
    aggregation: str | None = Field(None, description="None: the recorded score; last/min/prod/mean: of its "
                                                      "step scores (process scorers)")
    level: str = Field(description="'process' when its verdicts carry step scores, else 'outcome'")
    recorded: bool = Field(True, description="these scores are the ones the scorer recorded (its pass flags apply)")
    samples: int = Field(description="samples it scored")
    correct: int = Field(description="of those, how many the oracle marks correct")
    mean_score_correct: float | None
    mean_score_incorrect: float | None
    auroc: float | None = Field(description="ROC AUC of the score for correct vs incorrect; None with one class")
    flagged: int = Field(0, description="scored samples with a pass flag")
    false_positive_rate: float | None = Field(None, description="f: share of incorrect flagged samples it accepts")
    true_positive_rate: float | None = None
    ceiling: float | None = Field(None, description="fLaws p / (p + (1 - p) f), p the accuracy of flagged samples")

    @property
    def key(self) -> str:
        """`scorer`, or `scorer:aggregation` for an aggregation row."""
        return self.scorer if self.aggregation is None else f"{self.scorer}:{self.aggregation}"


class VerifierStudy(BaseModel):
    """The scorers against the oracle, and the fLaws ceiling (docs/algorithms/repeated-sampling.md).

    The first fields are for all verdicts together (a sample passes when every flag it has
    passed, as first-passing uses them); `scorers` has one row per scorer and, for process scorers,
    per aggregation of its step scores.
    """

    verifiers: list[str]
    samples: int = Field(description="samples with a pass flag from the scorers")
    sample_accuracy: float | None = Field(description="p: share of those samples the oracle marks correct")
    false_positive_rate: float | None = Field(description="f: share of incorrect samples the verifier accepts")
    true_positive_rate: float | None = Field(description="share of correct samples it accepts (fLaws assumes 1)")
    ceiling: float | None = Field(description="p / (p + (1 - p) f): accuracy of resampling as k grows without bound")
    predicted: list[Point] = Field(description="fLaws Acc(k) = p/(p+q) [1 - (1-p-q)^k], q = (1-p) f")
    scorers: list[ScorerQuality] = Field(default_factory=list, description="quality of each scorer on its own")

    def scorer(self, name: str, aggregation: str | None = None) -> ScorerQuality | None:
        return next((q for q in self.scorers if q.scorer == name and q.aggregation == aggregation), None)


class ProblemCoverage(BaseModel):
    problem_id: str
    n: int
    correct: int
    pass_at_k: list[float] = Field(description="aligned with the study's ks")


class StudySettings(BaseModel):
    draws: int
    rpc_fits: int
    seed: int
    bootstrap: int
    k_max: int | None
    min_paths: int = MIN_PATHS_TO_PRUNE


class AdaptivePoint(BaseModel):
    """One adaptive method replayed on random orders of the pool, against the curves at equal average spend
    (docs/adaptive-replay.md). Accuracies are shares of problems; spend is per problem."""

    name: str = Field(description="e.g. adaptive-consistency, early-stop[judge], deepconf-online")
    method: str = Field(description="the strategy it replays")
    options: dict[str, Any] = Field(default_factory=dict)
    budget: int = Field(description="most samples it may draw per problem (the study's largest k)")
    draws: int = Field(description="random orders replayed per problem")
    accuracy: float
    lo: float | None = Field(None, description="bootstrap 2.5% quantile over problems")
    hi: float | None = Field(None, description="bootstrap 97.5% quantile over problems")
    mean_samples: float
    mean_tokens: float = Field(description="completion tokens generated, an online-stopped trace up to its stop")
    majority_at_tokens: float | None = Field(None, description="majority vote's accuracy at mean_tokens, linear "
                                             "between the bracketing grid ks; None outside the grid")
    rpc_at_tokens: float | None = None
    majority_at_samples: float | None = Field(None, description="the same at mean_samples")
    rpc_at_samples: float | None = None
    vs_majority: float | None = Field(None, description="accuracy - majority_at_tokens, per problem then averaged")
    vs_majority_lo: float | None = Field(None, description="paired bootstrap 2.5% quantile of that difference")
    vs_majority_hi: float | None = None
    reference_samples: int = Field(description="samples majority@budget spends")
    reference_tokens: float | None = Field(None, description="tokens majority@budget spends")
    reference_accuracy: float | None = Field(None, description="majority@budget's accuracy")
    saving: float | None = Field(None, description="1 - mean_tokens / reference_tokens")


class ScalingStudy(BaseModel):
    run: str
    label: str
    task: str
    model: str | None
    strategy: str | None
    problems: int
    samples: int
    n_min: int
    n_max: int
    ks: list[int]
    mean_tokens_per_sample: float
    coverage: Curve
    selectors: list[Curve]
    power_law: PowerLawFit | None
    verifier: VerifierStudy | None
    per_problem: list[ProblemCoverage]
    settings: StudySettings
    timings: dict[str, float] = Field(default_factory=dict)
    adaptive: list[AdaptivePoint] = Field(default_factory=list, description="adaptive methods replayed (empty: "
                                          "none, or the study ran with --no-adaptive)")
    adaptive_skipped: list[str] = Field(default_factory=list, description="why a method was not replayed")

    def curve(self, name: str) -> Curve | None:
        if name == "coverage":
            return self.coverage
        return next((c for c in self.selectors if c.name == name), None)

    def smallest_k_reaching(self, name: str, target: float) -> int | None:
        """Smallest grid k at which a curve's point estimate reaches `target` (None if it never does)."""
        curve = self.curve(name)
        if curve is None:
            return None
        return next((p.k for p in curve.points if p.value >= target - 1e-12), None)


class ScalingFile(BaseModel):
    """scaling.json: one study per run folder analysed together."""

    version: int = 1
    studies: list[ScalingStudy]

