"""What scoring costs beside generation: best-of-n at n = 16 on GSM8K, scored by each scorer.

    python bench/scorer_cost.py [--model qwen2.5-coder-0.5b] [--limit 8] [-n 16] [--max-tokens 384]

Phase 1 draws n samples for each problem (all problems at once, as `tts eval` does) with top-20
log-probabilities per token. Then each scorer scores the same candidates, again all problems at once:
the judge at outcome level, the judge at process level (every step prefix), and the confidence scorers
(no model call). For each it prints scorer tokens, FLOPs (2 x parameters x tokens, with and without
the prefix-cache discount) and wall time as a share of generation's, all measured in this one run.
Shares, not absolute times: machines differ.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from tts.registry import build_backend, build_scorer, build_task
from tts.strategy import StrategyContext
from tts.types import Candidate, SamplingConfig, Usage

SCORERS = {
    "judge (outcome)": ("judge", {}),
    "judge (process)": ("judge", {"level": "process"}),
    "group-confidence": ("group-confidence", {}),
    "mean-logprob": ("mean-logprob", {}),
}


def share(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "n/a"
    return f"{part / whole:.1%}"


async def main(args: argparse.Namespace) -> None:
    task = build_task("gsm8k")
    items = task.load(args.limit)
    backend = build_backend("vllm", args.model)
    sampling = SamplingConfig(max_tokens=args.max_tokens, top_logprobs=20)

    async def draw(item) -> tuple[list[Candidate], Usage]:
        ctx = StrategyContext(backend=backend, answers=task, sampling=sampling)
        return await ctx.sample_candidates(item.problem, args.n), ctx.usage

    t = time.perf_counter()
    drawn = await asyncio.gather(*(draw(it) for it in items))
    gen_wall = time.perf_counter() - t
    gen = sum((u for _, u in drawn), Usage())
    tokens = gen.prompt_tokens - gen.cached_tokens + gen.completion_tokens
    print(f"{len(items)} problems x n={args.n}, {args.model}: generation {gen.completion_tokens} tokens generated, "
          f"{gen.prompt_tokens} prompt ({gen.cached_tokens} cached), {gen_wall:.1f} s, "
          f"{gen.generator_flops or 0:.3g} FLOPs")
    print(f"{'scorer':<18} {'scorer tokens':>14} {'share':>7} {'FLOPs share':>12} {'no cache':>9} {'wall share':>11}")
    for label, (name, options) in SCORERS.items():
        scorer = build_scorer(name, **options)

        async def score(item, candidates, scorer=scorer) -> Usage:
            ctx = StrategyContext(backend=backend, answers=task, sampling=sampling, scorers=[scorer])
            copies = [c.model_copy(update={"verdicts": []}) for c in candidates]
            await ctx.score(item.problem, copies)
            return ctx.usage

        t = time.perf_counter()
        used = await asyncio.gather(*(score(it, cands) for it, (cands, _) in zip(items, drawn)))
        wall = time.perf_counter() - t
        u = sum(used, Usage())
        scored = u.scorer_prompt_tokens - u.scorer_cached_tokens + u.scorer_completion_tokens
        print(f"{label:<18} {scored:>14} {share(scored, tokens):>7} {share(u.scorer_flops, gen.generator_flops):>12} "
              f"{share(u.scorer_flops_no_cache, gen.generator_flops_no_cache):>9} {share(wall, gen_wall):>11}")
    print("scorer tokens = prompt tokens the engine computed (not served by the prefix cache) + generated tokens;"
          " the share is against generation's tokens counted the same way")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("-n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=384)
    asyncio.run(main(parser.parse_args()))
