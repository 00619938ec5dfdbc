"""`Result.info` of a pick-one strategy: one model, one meaning per key.

Every strategy that samples candidates and picks one with a selector (self-consistency,
repeated-sampling, perplexity, best-of-n, rpc) returns through `StrategyContext.finish_choice`, which
fills these keys from the selector's `Selection`:

- `tied_indices`: one candidate index per option tied with the winner (the chosen one included),
  ascending; an evaluation can credit 1/len(tied) for a tie. Empty when the strategy abstains.
- `tied_answers`: the answers of those candidates, same order.
- `invalid`: candidates with no extracted answer.
- `groups`: group-based selectors only (majority, weighted vote, RPC): one record per answer group
  in order of first occurrence: its answer (first member's), member `count` and the `score` the vote
  compared (member count for majority, summed weight for a weighted vote, probability mass over
  distinct unpruned paths for RPC). Each candidate's `info["group"]` is its group's position here
  (-1: no answer).

Strategy-specific keys sit beside them (each documented in its strategy's module): RPC `pruned`,
`fit`, `fallback`; best-of-n `scores`, `verifiers`; repeated-sampling `selection_passed`; an
abstaining selector's `reason`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GroupInfo(BaseModel):
    answer: str | None = Field(description="the answer of the group's first member")
    count: int = Field(description="members of the group")
    score: float = Field(description="what the vote compared: count, summed weight or probability mass")


class ChoiceInfo(BaseModel):
    """The shared keys of a pick-one strategy's `Result.info` (see the module docstring)."""

    model_config = ConfigDict(extra="allow")  # strategy-specific keys, documented by each strategy

    tied_indices: list[int] = Field(description="one candidate per option tied with the winner, ascending")
    tied_answers: list[str | None] = Field(description="the answers of `tied_indices`, same order")
    invalid: int = Field(description="candidates with no extracted answer")
    groups: list[GroupInfo] | None = Field(None, description="group-based selectors: one record per answer group")
