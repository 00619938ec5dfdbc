"""Generated tokens/s of the toolkit's vLLM backend on a fixed sampling workload.

    python bench/quick_throughput.py [--prompts 16] [-n 8] [--max-tokens 128] [--model M]

Prints engine start time and tokens/s; run it under different environments (e.g. OMP_NUM_THREADS)
to compare. A fuller sweep of engine settings is the subject of bench/engine_throughput.py (issue 3).
"""

import argparse
import asyncio
import time

from tts.types import ChatMessage, GenerationRequest, SamplingConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from tts.backends.vllm import VLLMBackend

    t0 = time.perf_counter()
    backend = VLLMBackend(args.model, max_model_len=2048)
    start = time.perf_counter() - t0
    cfg = SamplingConfig(n=args.n, temperature=0.8, max_tokens=args.max_tokens)
    reqs = [GenerationRequest(prompt=[ChatMessage(role="user", content=f"Write a short story about the number {i}.")],
                              sampling=cfg) for i in range(args.prompts)]

    async def run():
        t = time.perf_counter()
        outs = await asyncio.gather(*(backend.generate([r]) for r in reqs))
        return sum(s.token_count for (o,) in outs for s in o), time.perf_counter() - t

    tokens, secs = asyncio.run(run())
    print(f"engine start {start:.1f} s; {args.prompts} prompts x n={args.n} x {args.max_tokens} tokens: "
          f"{tokens} tokens in {secs:.1f} s = {tokens / secs:.1f} tok/s")
    backend.close()


if __name__ == "__main__":
    main()
