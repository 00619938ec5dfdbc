"""Time the scaling study on a synthetic GSM8K-sized pool: 1319 problems x 64 samples.

    python bench/analysis_speed.py [--problems 1319] [--n 64] [--draws 200] [--rpc-fits F] [--workers W] [--verifier]

The pool is written as a real run folder (config.json naming the gsm8k task, samples.jsonl,
results.jsonl through tts.runs.RunFolder) and analysed by `tts.study.study_run`, so the time
includes reading, grouping with the task's own answer equivalence, every selector (RPC's Weibull
fits included), the bootstrap and the fits. Answers look like GSM8K outputs: one correct number
per problem, a few popular wrong numbers (many duplicates), the same value written differently
("18", "18.0", "$18"), some unanswered samples; mean log-probs are higher for correct samples.
The goal (issue 4): under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tts.runs import RunFolder
from tts.study import DEFAULT_DRAWS, study_run
from tts.types import Candidate, Result, Verdict


def synthetic_run(path: Path, problems: int, n: int, seed: int = 0, verifier: bool = False) -> None:
    rng = np.random.default_rng(seed)
    run = RunFolder(path)
    run.open({"task": "gsm8k", "task_options": {"seed": 0}, "strategy": "repeated-sampling",
              "strategy_options": {"n": n}, "model": "synthetic", "backend": "none", "sampling": {}, "seed": seed})
    for p in range(problems):
        gold = int(rng.integers(2, 5000))
        distractors = [gold + int(d) for d in rng.choice([-10, -2, -1, 1, 2, 5, 10, 100], size=4, replace=False)]
        p_correct = rng.beta(0.7, 0.9)
        candidates, oracle = [], []
        for i in range(n):
            u = rng.random()
            if u < 0.05:
                value, answer = None, None
            elif u < 0.05 + 0.95 * p_correct:
                value = gold
            else:
                value = distractors[min(int(rng.zipf(1.6)) - 1, 3)] if rng.random() < 0.8 else int(rng.integers(1, 10**4))
            if value is not None:
                answer = rng.choice([f"{value}", f"{value}.0", f"${value}", f"{value:,}"], p=[0.85, 0.05, 0.05, 0.05])
            ok = value == gold
            mean_lp = float(min(-0.01, rng.normal(-0.25 if ok else -0.45, 0.12)))
            text = f"... so the answer is {answer}. (path {i if rng.random() > 0.05 else 0})"
            verdicts = []
            if verifier:
                accepted = ok or rng.random() < 0.2
                verdicts = [Verdict(verifier="synthetic-examples", score=1.0 if accepted else rng.random() * 0.9,
                                    passed=accepted)]
            candidates.append(Candidate(text=text, answer=answer, completion_tokens=int(max(20, rng.normal(180, 60))),
                                        mean_logprob=mean_lp, verdicts=verdicts))
            oracle.append(Verdict(verifier="oracle", score=float(ok), passed=ok))
        result = Result(problem_id=f"gsm8k/{p}", strategy="repeated-sampling", answer=candidates[0].answer,
                        chosen=0, candidates=candidates)
        run.append(result, oracle, oracle[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--draws", type=int, default=DEFAULT_DRAWS)
    ap.add_argument("--rpc-fits", type=int, default=None, help="default: sized to the fit budget")
    ap.add_argument("--workers", type=int, default=1, help="processes for the selectors")
    ap.add_argument("--verifier", action="store_true", help="add a selection verifier with a 20%% false-positive rate")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run"
        t = time.perf_counter()
        synthetic_run(path, args.problems, args.n, verifier=args.verifier)
        print(f"wrote synthetic pool: {args.problems} problems x {args.n} samples in {time.perf_counter() - t:.1f} s")
        for attempt in ("first (groups answers)", "second (groups cached)"):
            t = time.perf_counter()
            study = study_run(path, draws=args.draws, rpc_fits=args.rpc_fits, workers=args.workers)
            total = time.perf_counter() - t
            samples = args.problems * args.n
            print(f"\n{attempt}: {total:.2f} s total, {total / samples * 1e6:.1f} us per sample")
            print(json.dumps({k: round(v, 3) for k, v in study.timings.items()}, indent=1))
        for curve in [study.coverage, *study.selectors]:
            print(f"{curve.name:>20}: " + "  ".join(f"@{p.k}={p.value:.3f}" for p in curve.points))
        fit = study.power_law
        if fit:
            print(f"power law: a={fit.a:.3f} b={fit.b:.3f} R^2={fit.r2:.4f}")


if __name__ == "__main__":
    main()
