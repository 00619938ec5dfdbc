"""Shards of a run: `tts eval --shard I/N` runs the I-th of N slices of a task (docs/sharding.md).

The rule is round-robin over the task's order after `--limit`: problem k (0-based) goes to shard
(k mod N) + 1. It depends only on the position, so it is stable (the same command always gives the
same slice), balanced (shard sizes differ by at most one) and spreads a benchmark's ordering (easy
problems first, one topic after another) over every shard instead of handing one shard the hard tail.
Each problem's RNG depends only on the seed and its id (`tts.runner.problem_rng`), so a problem's
samples are the same whichever shard runs it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")

# config.json keys a shard run adds besides "shard": the ids it runs, and how many the whole study has.
SHARD_IDS_KEY = "shard_problem_ids"
STUDY_SIZE_KEY = "study_problems"


class Shard(BaseModel):
    """Which slice: `index` of `count`, both from 1 (as SLURM's --array=1-N numbers its tasks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    index: int = Field(ge=1)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _index_within_count(self) -> Shard:
        if self.index > self.count:
            raise ValueError(f"shard index {self.index} is above the shard count {self.count}")
        return self

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """Appended to the default run folder name (the hash stays that of the unsharded run)."""
        return f"-shard{self.index}of{self.count}"

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items, in the task's order: those at positions k with k mod count == index - 1."""
        return list(items[self.index - 1 :: self.count])


def shard_spec(text: str) -> Shard:
    """argparse type for --shard I/N (1 <= I <= N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N (e.g. 2/8), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise argparse.ArgumentTypeError(f"the shard count N must be at least 1, got {text!r}")
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"the shard index I must be from 1 to {count}, got {text!r}")
    return Shard(index=index, count=count)
