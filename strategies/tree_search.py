"""The LLM side of tree search, shared by `mcts`, `ab-mcts-a` and `ab-mcts-m` (docs/algorithms/tree-search.md).

The algorithm (tts.treesearch) decides which nodes to expand with which action; this module turns each
expansion into a generation and a score. Expanding the root samples a fresh answer from the problem's
prompt; expanding an answer asks the model to refine it given its feedback (strategies.refinement).
Each new answer is scored by the context's scorers (by default the judge on math, the docstring examples
on code): score = mean of their verdict scores, feedback = their feedback texts, which the next refinement
shows the model. They never see the reference, so neither does the search; with no scorer it is refused.

Budget: `n` generations (plus an optional cap on completion tokens). Each step asks the algorithm for
up to `batch_size` expansions (the reference recommends at most about 5: larger batches make trees too
wide) and sends them to the engine in one call per backend, then scores them concurrently. The answer
is the best-scoring node (ties: the earliest). The Result keeps every node as a candidate (tree node
i >= 1 is `candidates[i - 1]`) and the whole tree in `info["tree"]`.

Actions: by default one, the context's backend with the context's sampling. An action may change the
temperature / top_p, or name another model, whose backend comes from `tts.registry.build_backend` (cached
per process) on first use.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tts.backends.base import Backend
from tts.errors import UserError
from tts.scorer import Scorer
from tts.strategies.refinement import refinement_prompt
from tts.strategy import Strategy, StrategyConfig, StrategyContext
from tts.treesearch.tree import Expansion, ExpansionResult, SearchState, TreeSearchAlgorithm, tree_rows
from tts.types import Candidate, GenerationRequest, Problem, Prompt, Result, Sample

NO_SCORER = ("tree search scores every answer with a scorer, and none was given (--scorer judge serves any task; "
             "code tasks default to their docstring examples)")


class Action(BaseModel):
    """One way to generate a child: the context's model, or another one, with optional sampling changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="label in the tree (default: derived from the other fields)")
    model: str | None = Field(None, description="another model (default: the context's backend and model)")
    backend: str = Field("vllm", description="backend kind serving `model`")
    base_url: str | None = Field(None, description="server URL when `backend` is openai")
    options: dict[str, Any] = Field(default_factory=dict, description="extra options for that backend")
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.model or "default"]
        if self.temperature is not None:
            parts.append(f"T={self.temperature:g}")
        if self.top_p is not None:
            parts.append(f"top_p={self.top_p:g}")
        return " ".join(parts)


class TreeSearchConfig(StrategyConfig):
    n: int = Field(8, ge=1, description="number of generations (the budget): one per tree node")
    batch_size: int = Field(5, ge=1, le=64, description="expansions asked of the algorithm per step")
    max_total_tokens: int | None = Field(None, ge=1, description="stop expanding once this many completion "
                                         "tokens are spent on the problem (the step in flight finishes)")
    actions: list[Action] = Field(default_factory=lambda: [Action()], min_length=1)

    @field_validator("actions")
    @classmethod
    def _unique_labels(cls, actions: list[Action]) -> list[Action]:
        labels = [a.label for a in actions]
        if len(set(labels)) != len(labels):
            raise ValueError(f"actions need distinct names, got {labels}")
        return actions


class TreeSearchStrategy(Strategy):
    """A strategy = its options + an algorithm object; the search itself is `TreeSearch`."""

    Config = TreeSearchConfig
    config: TreeSearchConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.algorithm = self.build_algorithm()

    @abstractmethod
    def build_algorithm(self) -> TreeSearchAlgorithm:
        """The pure search algorithm configured from `self.config`."""

    def check_scorers(self, scorers: list[Scorer]) -> None:
        if not scorers:
            raise UserError(NO_SCORER)

    async def run(self, problem: Problem, ctx: StrategyContext) -> Result:
        search = TreeSearch(self.algorithm, self.config, problem, ctx)
        state = await search.run()
        return search.result(state, self.name)


class TreeSearch:
    """One problem's search: ask the algorithm, generate and score, tell, until the budget is spent."""

    def __init__(self, algorithm: TreeSearchAlgorithm, config: TreeSearchConfig, problem: Problem,
                 ctx: StrategyContext):
        if not ctx.scorers:
            raise UserError(NO_SCORER)
        self.algorithm = algorithm
        self.config = config
        self.problem = problem
        self.ctx = ctx
        self.actions = {a.label: a for a in config.actions}
        self.batch_sizes: list[int] = []
        self.stopped = "budget"

    # ---- the loop -------------------------------------------------------------------------------
    async def run(self, state: SearchState | None = None) -> SearchState:
        """Search until the budget is spent; `state` resumes a search paused between two steps."""
        if state is None:
            state = self.algorithm.init(list(self.actions), seed=self.ctx.rng.getrandbits(63))
        while (done := len(state.answers)) < self.config.n:
            cap = self.config.max_total_tokens
            if cap is not None and self.ctx.usage.completion_tokens >= cap:
                self.stopped = "token cap"
                break
            k = min(self.config.batch_size, self.config.n - done)
            if self.algorithm.slow_ask:  # e.g. NUTS fits: keep the event loop free
                asked = await asyncio.to_thread(self.algorithm.ask, state, k, inplace=True)
            else:
                asked = self.algorithm.ask(state, k, inplace=True)
            state, expansions = asked
            results = await self.generate_and_score(state, expansions)
            self.algorithm.tell(state, results, inplace=True)
            self.batch_sizes.append(len(expansions))
        return state

    # ---- generate and score ---------------------------------------------------------------------
    def prompt_for(self, state: SearchState, parent_id: int) -> Prompt:
        parent = state.nodes[parent_id]
        if parent.parent is None:
            return self.problem.prompt
        return refinement_prompt(self.problem, parent.payload, parent.feedback)

    def backend_for(self, action: Action) -> Backend:
        if action.model is None:
            return self.ctx.backend
        from tts.registry import build_backend  # lazy: starts an engine only when such an action is used

        return build_backend(action.backend, action.model, action.base_url, **action.options)

    async def generate_on(self, backend: Backend, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if backend is self.ctx.backend:
            return await self.ctx.generate(requests)
        out = await backend.generate(requests)  # another model: count its usage against this problem too
        self.ctx.usage.backend_calls += 1
        for samples in out:
            self.ctx.usage.add_request(samples, backend.parameter_count)
        return out

    async def generate_and_score(self, state: SearchState, expansions: list[Expansion]) -> list[ExpansionResult]:
        # expansions of the same node with the same action share one request (n > 1, one prefill)
        groups: dict[tuple[int, str], list[Expansion]] = {}
        for e in expansions:
            groups.setdefault((e.parent, e.action), []).append(e)
        per_backend: dict[int, tuple[Backend, list[tuple[int, str]], list[GenerationRequest]]] = {}
        for (parent, label), members in groups.items():
            action = self.actions[label]
            update: dict[str, Any] = {"n": len(members)}
            if action.temperature is not None:
                update["temperature"] = action.temperature
            if action.top_p is not None:
                update["top_p"] = action.top_p
            if self.ctx.wants_top_logprobs > self.ctx.sampling.top_logprobs:  # confidence scorers read them
                update["top_logprobs"] = self.ctx.wants_top_logprobs
            if self.ctx.sampling.seed is not None:  # one seed per expansion, or a repeated prompt repeats its answer
                update["seed"] = self.ctx.sampling.seed + 1 + members[0].id
            request = GenerationRequest(prompt=self.prompt_for(state, parent),
                                        sampling=self.ctx.sampling.model_copy(update=update))
            backend = self.backend_for(action)
            entry = per_backend.setdefault(id(backend), (backend, [], []))
            entry[1].append((parent, label))
            entry[2].append(request)
        outputs = await asyncio.gather(*(self.generate_on(b, reqs) for b, _, reqs in per_backend.values()))
        samples: dict[tuple[int, str], list[Sample]] = {}
        for (_, keys, _), out in zip(per_backend.values(), outputs):
            samples.update({key: list(s) for key, s in zip(keys, out)})
        candidates = [self.ctx.candidate(self.problem, samples[(e.parent, e.action)].pop(0)) for e in expansions]
        await self.ctx.score(self.problem, candidates)
        return [ExpansionResult(expansion=e.id, score=score(c), feedback=feedback(c), tokens=c.completion_tokens,
                                payload=c) for e, c in zip(expansions, candidates)]

    # ---- the result -----------------------------------------------------------------------------
    def result(self, state: SearchState, strategy: str) -> Result:
        nodes = state.answers
        candidates: list[Candidate] = []
        for node in nodes:
            cand: Candidate = node.payload
            cand.info.update({"node": node.id, "parent": node.parent, "depth": node.depth, "action": node.action,
                              "score": node.score})
            candidates.append(cand)
        best = state.best()
        info = {
            "algorithm": state.algorithm,
            "tree": tree_rows(state),
            "batch_sizes": list(self.batch_sizes),
            "generations": len(nodes),
            "stopped": self.stopped,
            "best_node": best.id if best else None,
            "max_depth": max((n.depth for n in nodes), default=0),
            "root_children": len(state.root.children),
            "action_counts": dict(Counter(n.action for n in nodes)),
        }
        return self.ctx.finish(self.problem, strategy, answer=best.payload.answer if best else None,
                               confidence=best.score if best else None, chosen=best.id - 1 if best else None,
                               candidates=candidates, info=info)


def score(candidate: Candidate) -> float:
    """The node's score: the mean of its scorers' verdict scores."""
    return sum(v.score for v in candidate.verdicts) / len(candidate.verdicts)


def feedback(candidate: Candidate) -> str:
    return "\n".join(v.feedback for v in candidate.verdicts if v.feedback)
