"""A run folder: config.json, samples.jsonl and results.jsonl (append-only), metrics.json.

A problem counts as finished once its line is in results.jsonl; its samples are written just before.
Opening a folder again drops whatever a crash left half-written (a torn last line, samples of a
problem without a result), so a resumed run neither regenerates finished problems nor duplicates lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from tts.errors import UserError
from tts.types import Result, Verdict, finite_or_none

# Fields of config.json that define the run; resuming with any of them changed is refused.
IDENTITY_KEYS = ("task", "task_options", "strategy", "strategy_options", "model", "backend", "sampling", "seed",
                 "dtype")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a file; a torn final line (a crash mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.samples_path = self.path / "samples.jsonl"
        self.results_path = self.path / "results.jsonl"
        self.metrics_path = self.path / "metrics.json"

    # ---- opening ---------------------------------------------------------------------------
    def open(self, config: dict[str, Any]) -> set[str]:
        """Create or resume the run; return the ids of problems already finished."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            old = json.loads(self.config_path.read_text())
            changed = [k for k in IDENTITY_KEYS if old.get(k) != config.get(k)]
            if changed:
                raise UserError(
                    f"{self.path} holds a different run (differs in: {', '.join(changed)}); "
                    "choose another --out folder"
                )
        self.config_path.write_text(json.dumps(config, indent=2, default=str) + "\n")
        return self._repair()

    def _repair(self) -> set[str]:
        results = _read_lines(self.results_path)
        seen: set[str] = set()
        unique = []
        for row in results:
            if row["problem_id"] not in seen:
                seen.add(row["problem_id"])
                unique.append(row)
        samples = _read_lines(self.samples_path)
        kept = [s for s in samples if s["problem_id"] in seen]
        if len(unique) != len(results) or self._has_torn_line(self.results_path):
            _rewrite(self.results_path, unique)
        if len(kept) != len(samples) or self._has_torn_line(self.samples_path):
            _rewrite(self.samples_path, kept)
        return seen

    @staticmethod
    def _has_torn_line(path: Path) -> bool:
        if not path.exists() or path.stat().st_size == 0:
            return False
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"

    def is_complete(self, config: dict[str, Any], problem_ids: list[str]) -> bool:
        """True if this folder holds the same run with every one of these problems finished."""
        if not self.config_path.exists():
            return False
        old = json.loads(self.config_path.read_text())
        if any(old.get(k) != config.get(k) for k in IDENTITY_KEYS):
            return False
        done = {r["problem_id"] for r in _read_lines(self.results_path)}
        return set(problem_ids) <= done

    # ---- appending -------------------------------------------------------------------------
    def append(self, result: Result, oracle: list[Verdict], chosen_verdict: Verdict | None) -> None:
        """Write one finished problem: every sample, then its result line (which marks it finished)."""
        with self.samples_path.open("a", encoding="utf-8") as fh:
            for i, (cand, verdict) in enumerate(zip(result.candidates, oracle)):
                row = {
                    "problem_id": result.problem_id,
                    "index": i,
                    "text": cand.text,
                    "answer": cand.answer,
                    "completion_tokens": cand.completion_tokens,
                    "mean_logprob": finite_or_none(cand.mean_logprob),
                    "finish_reason": cand.finish_reason,
                    "selection": [v.model_dump() for v in cand.verdicts],
                    "correct": verdict.passed,
                    "oracle_feedback": verdict.feedback[:500],
                    "chosen": i == result.chosen,
                    "info": cand.info,
                }
                fh.write(json.dumps(row) + "\n")
        row = {
            "problem_id": result.problem_id,
            "strategy": result.strategy,
            "answer": result.answer,
            "confidence": result.confidence,
            "chosen": result.chosen,
            "correct": bool(chosen_verdict and chosen_verdict.passed),
            "n_samples": len(result.candidates),
            "n_correct_samples": sum(bool(v.passed) for v in oracle),
            "usage": result.usage.model_dump(),
            "info": result.info,
        }
        with self.results_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()

    # ---- reading ---------------------------------------------------------------------------
    def results(self) -> list[dict[str, Any]]:
        return _read_lines(self.results_path)

    def samples(self) -> Iterator[dict[str, Any]]:
        yield from _read_lines(self.samples_path)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        self.metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
