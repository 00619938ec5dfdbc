"""DeepConf: vote only with the traces the model was sure of (docs/algorithms/deepconf.md).

Fu et al. 2025, "Deep Think with Confidence". A trace's confidence C is its lowest group confidence: the
least confident window of `window` consecutive tokens, where a token's confidence is the mean negative
log-probability of its `top_k` most likely tokens (`tts.confidence`). Answers are grouped by the task's
equivalence; a trace with no answer never votes.

* offline: sample n traces whole; keep those whose C reaches the (100 - keep_percent)-th percentile of the
  answered traces' C; confidence-weighted vote (weight = C) over the kept ones.
* online: `warmup` traces whole set the threshold s (the same percentile of their C); then rounds of `round`
  traces, each watched while generated and stopped (aborted in the engine) at the first window whose mean
  falls below s. Before each round the consensus is checked: the confidence-weighted share of the leading
  answer over every trace that ran to its end (warm-up ones included); sampling stops once it reaches
  `consensus`, or when n traces are spent, so no trace is started after the decision. The vote, as in the
  reference: warm-up traces with C >= s and online traces that ran to the end with C >= s, weighted by C.

`Result.info` adds to the shared pick-one keys: mode, threshold, traces, tokens (every token generated,
those of stopped traces included), voters; online also warmup, aborted, consensus (the last share checked),
history (the share at each check) and stopped_by ("consensus" or "budget"); offline kept. Each candidate's
info: group_confidence (C), voted, warmup (online), aborted (stopped traces); info["group"] is -1 for a
trace that cast no vote. confidence = the winning answer's share of the voters' weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from tts import selection
from tts.adaptive import weighted_leader
from tts.backends.base import Watcher
from tts.confidence import WindowMonitor, lowest_group_confidence, threshold_from_warmup
from tts.errors import BackendError
from tts.strategy import Strategy, StrategyConfig, StrategyContext
from tts.types import Candidate, Problem, Result


class DeepConfConfig(StrategyConfig):
    n: int = Field(16, ge=1, description="trace budget: every trace generated, warm-up included")
    mode: Literal["online", "offline"] = Field(
        "online", description="online: stop low-confidence traces while they are generated, and sampling at "
                              "consensus; offline: filter whole traces")
    keep_percent: float = Field(10.0, ge=1.0, le=100.0,
                                description="eta: keep traces whose confidence reaches the (100 - eta)-th "
                                            "percentile (10: DeepConf-low, 90: DeepConf-high)")
    window: int = Field(64, ge=1, description="tokens per confidence group (the paper's 2048, scaled to traces "
                                              "about 30 times shorter)")
    top_k: int = Field(20, ge=1, le=20, description="k most likely tokens in a token's confidence")
    warmup: int = Field(4, ge=1, description="online: traces generated whole to set the stopping threshold "
                                             "(the paper's 16 of 512, scaled)")
    consensus: float = Field(0.95, gt=0.0, le=1.0, description="online: stop sampling once the leading answer's "
                                                               "confidence-weighted share reaches this (tau)")
    round: int = Field(4, ge=1, description="online: watched traces generated together after the warm-up; the "
                                            "consensus is checked before each round")

    @model_validator(mode="after")
    def _warmup_within_budget(self) -> DeepConfConfig:
        if self.mode == "online" and self.warmup > self.n:
            raise ValueError(f"warmup ({self.warmup}) exceeds the trace budget n ({self.n})")
        return self


class WindowWatcher(Watcher):
    """Stops a trace at its first full window whose mean token confidence is below the threshold."""

    def __init__(self, window: int, threshold: float):
        self.monitor = WindowMonitor(window, threshold)

    def observe(self, confidences: Sequence[float]) -> bool:
        return self.monitor.push(confidences)


def trace_confidence(candidate: Candidate, window: int) -> float:
    """C of one trace: its lowest group confidence (0 for an empty trace, as the reference)."""
    if candidate.trace is None:
        if candidate.completion_tokens == 0:
            return 0.0
        raise BackendError("deepconf needs every trace's top-k log-probabilities, and the backend returned none")
    return lowest_group_confidence(candidate.trace.token_confidence(), window)


def offline_filter(confidences: Sequence[float], answered: Sequence[bool], keep_percent: float
                   ) -> tuple[float | None, list[bool]]:
    """The threshold (the percentile over the answered traces only, as the reference filters those) and
    which traces are kept: answered with C at or above it. (None, nobody) when no trace has an answer."""
    pool = [c for c, a in zip(confidences, answered) if a]
    if not pool:
        return None, [False] * len(confidences)
    threshold = threshold_from_warmup(pool, keep_percent)
    return threshold, [a and c >= threshold for c, a in zip(confidences, answered)]


class DeepConf(Strategy):
    name = "deepconf"
    description = ("confidence-filtered, confidence-weighted vote; online: low-confidence traces stopped while "
                   "generated, sampling stopped at consensus (DeepConf)")
    Config = DeepConfConfig
    config: DeepConfConfig

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        if self.config.mode == "offline":
            return await self._offline(problem, ctx)
        return await self._online(problem, ctx)

    async def _offline(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        candidates = await ctx.sample_candidates(problem, cfg.n, top_logprobs=cfg.top_k)
        confs = [trace_confidence(c, cfg.window) for c in candidates]
        threshold, kept = offline_filter(confs, [c.answer is not None for c in candidates], cfg.keep_percent)
        groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
        return self._vote(problem, ctx, candidates, confs, kept, groups, mode="offline", threshold=threshold,
                          kept=sum(kept))

    async def _online(self, problem: Problem, ctx: StrategyContext) -> Result:
        cfg = self.config
        candidates = await ctx.sample_candidates(problem, cfg.warmup, top_logprobs=cfg.top_k)
        for c in candidates:
            c.info["warmup"] = True
        confs = [trace_confidence(c, cfg.window) for c in candidates]
        threshold = threshold_from_warmup(confs, cfg.keep_percent)
        history: list[float] = []
        while True:
            groups = selection.Groups.of_answers([c.answer for c in candidates], ctx.answers.equivalent)
            finished = [None if c.info.get("aborted") or g < 0 else g for c, g in zip(candidates, groups.ids.tolist())]
            history.append(weighted_leader(finished, confs)[1])
            if history[-1] >= cfg.consensus:
                stopped_by = "consensus"
                break
            if len(candidates) >= cfg.n:
                stopped_by = "budget"
                break
            watchers = [WindowWatcher(cfg.window, threshold) for _ in range(min(cfg.round, cfg.n - len(candidates)))]
            new = await ctx.sample_watched(problem, watchers, top_logprobs=cfg.top_k)
            for c in new:
                c.info["warmup"] = False
            candidates += new
            confs += [trace_confidence(c, cfg.window) for c in new]
        voters = [c.answer is not None and not c.info.get("aborted") and conf >= threshold
                  for c, conf in zip(candidates, confs)]
        return self._vote(problem, ctx, candidates, confs, voters, groups, mode="online", threshold=threshold,
                          warmup=cfg.warmup, aborted=sum(bool(c.info.get("aborted")) for c in candidates),
                          consensus=history[-1], history=history, stopped_by=stopped_by)

    def _vote(self, problem: Problem, ctx: StrategyContext, candidates: list[Candidate], confs: list[float],
              voters: list[bool], groups: selection.Groups, **extra: Any) -> Result:
        """Confidence-weighted vote of the voters (weight = C, ties to the answer seen first)."""
        for c, conf, votes in zip(candidates, confs, voters):
            c.info["group_confidence"] = conf
            c.info["voted"] = votes
        voting = selection.Groups.from_ids([g if v else -1 for g, v in zip(groups.ids.tolist(), voters)])
        pick = selection.weighted_vote(voting, confs)
        if pick.chosen is None:
            extra["reason"] = "no trace with an answer reached the confidence threshold"
        return ctx.finish_choice(problem, self.name, candidates, pick, voting, traces=len(candidates),
                                 tokens=sum(c.completion_tokens for c in candidates), voters=sum(voters), **extra)
