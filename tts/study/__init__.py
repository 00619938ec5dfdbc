"""Scaling study of a stored sample pool: coverage and selector accuracy at every budget k <= n.

Modules: `schema` (scaling.json), `pool` (run-folder reading, the group cache), `subsets` (the
k-subsets), `credits` (vectorised selector credits), `selectors` (the study-selector contract, the
built-ins and the `tts.selectors` registry), `stats` (bootstrap, power law, fLaws), `study`
(orchestration: `study_pools`, `study_run`) and `report` (files and plots); `compare` puts whole runs
side by side at matched compute (`tts compare`, docs/compare.md); `adaptive_replay`, `adaptive_study` and
`adaptive_report` replay the adaptive strategies on the pool at equal spend (docs/adaptive-replay.md).

Everything comes from a run folder's `samples.jsonl` (docs/architecture.md, "Sample once,
evaluate many"); nothing is generated again. Docs (docs/algorithms/): repeated-sampling.md (pass@k,
coverage, subsampled selector curves, exponentiated power-law fit, the fLaws ceiling of resampling
with an imperfect verifier), self-consistency.md (majority vote), rpc.md (RPC, perplexity),
best-of-n.md (best-of-N, weighted vote).

How each number is computed, and what is exact:
- coverage@k: the unbiased estimator per problem (exact), averaged over problems.
- selector accuracy@k: the expected accuracy of the selector on a uniformly random k-subset of the
  problem's pool, ties credited 1/#tied. Exact where the subsets can be
  enumerated (C(n, k) <= draws, always for k = n and for k = 1 with n <= draws); otherwise the mean
  over `draws` random subsets (seeded per problem; the same subsets for every selector and nested
  across k, so differences between selectors and between budgets are paired). A vote's winning
  group is credited with the share of its members the oracle accepts (0 or 1 whenever the oracle
  agrees with the task's equivalence, as it does for math answers).
- best-of-n[<scorer>]@k and weighted-vote[<scorer>]@k: best-of-n and the weighted vote on one
  scorer's own score, one pair per scorer recorded in the run, on the same subsets (exact likewise).
- scorer quality (`VerifierStudy.scorers`): per scorer, and per aggregation of a process scorer's
  step scores, AUROC against the oracle, the false-positive rate at the scorer's threshold and the
  fLaws ceiling, over every sample it scored (docs/study-selectors.md).
- first-passing@k: exact in closed form (no draws): for a random order, the first accepted sample is
  uniform over the accepted ones, so Acc = pass@k(n, #accepted) * #accepted-and-correct / #accepted.
- RPC@k: the Weibull fit depends on the subset, so RPC is run per subset exactly as the selector
  runs it, on the same subsets as the other selectors. Two things keep that affordable. (1) A
  group's mass after pruning lies between the mass of its never-prunable paths (not below the
  mean) and the mass of all its paths, so the groups that could win whatever the fit decides are
  known without fitting; when they are all equally correct the subset's credit is exact without a
  fit (the common case: a dominant answer, or no correct answer in the subset). (2) Of the subsets
  still unsettled, at most `rpc_fits` per problem and k run through the selector, a random sample
  standing for all of them (stratified: unbiased; each fit costs milliseconds). By default
  `rpc_fits` is sized so a study runs about RPC_FIT_BUDGET fits (every unsettled subset for a
  50-problem pool; 2 per problem and k for 1319 x 64: on a synthetic 300 x 64 pool, 2 instead of
  200 moved RPC@k by at most 0.005 against bootstrap intervals 0.09 wide, at 1/20 of the time). The
  curve's `note` and `timings` say how many subsets needed a fit and how many were run; with
  `rpc_fits >= draws` RPC is as exact as the others.
- `workers` > 1 spreads problems over processes (results do not depend on the count).
- intervals: percentile bootstrap over problems (95%), on per-problem values.
- tokens at k: k x mean completion tokens per sample (pooled), so curves can be drawn against tokens.
- the power law log C(k) = a k^b: non-linear least squares on log C over the grid points with
  0 < C < 1, started at a = log C(1), b = -0.5; R^2 on log C.

Answers are grouped once per problem and cached in the run folder (`groups.json`, see `pool`).
"""

from tts.study.pool import GROUPS_FILE, LoadedRun, ProblemPool, load_pools, read_run, task_equivalence
from tts.study.schema import (
    Curve,
    Point,
    PowerLawFit,
    ProblemCoverage,
    ScalingFile,
    ScalingStudy,
    ScorerQuality,
    StudySettings,
    VerifierStudy,
)
from tts.study.selectors import SelectorContext, StudySelector, register, study_selectors
from tts.study.study import DEFAULT_BOOTSTRAP, DEFAULT_DRAWS, study_pools, study_run
from tts.study.subsets import Subsets

__all__ = [
    "DEFAULT_BOOTSTRAP", "DEFAULT_DRAWS", "GROUPS_FILE", "Curve", "LoadedRun", "Point", "PowerLawFit",
    "ProblemCoverage", "ProblemPool", "ScalingFile", "ScalingStudy", "ScorerQuality", "SelectorContext",
    "StudySelector", "StudySettings", "Subsets", "VerifierStudy", "load_pools", "read_run", "register", "study_pools",
    "study_run", "study_selectors", "task_equivalence",
]
