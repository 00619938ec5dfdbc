"""Generated tokens/s of the vLLM engine on CPU under the settings that matter, in one run.

    python bench/engine_throughput.py [--model NAME] [--prompts 32] [-n 8] [--max-tokens 128]
                                      [--only default,bf16,...] [--json out.json]

Each setting runs in a fresh process (engine environment variables are read once at start) through
the toolkit's own vLLM backend, on two fixed workloads:
- "sampling": P prompts x n samples x T tokens at temperature 0.8 (what repeated sampling and
  self-consistency produce);
- "prefix": 8 long shared prefixes, each continued by 8 separate requests (what tree search and
  step-wise decoding produce; the prefix cache should make the shared part free).
It prints tokens/s per setting and the ratio to the current default, and checks that each setting
gives the same greedy tokens and (to 1e-3) the same logprobs as the default on a few prompts, so a
faster setting that changes outputs is flagged. The default is measured first and again last: the
difference between the two is the noise on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# name -> (environment overrides, VLLMBackend keyword overrides)
SETTINGS: dict[str, tuple[dict[str, str], dict]] = {
    "default": ({}, {}),
    "multiprocess-engine": ({"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, {}),
    "omp-1-thread": ({"OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "0"}, {}),
    "omp-nobind": ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, {}),
    "max-num-seqs-256": ({}, {"max_num_seqs": 256}),
    "max-num-seqs-512": ({}, {"max_num_seqs": 512}),
    "batched-tokens-1024": ({}, {"engine_kwargs": {"max_num_batched_tokens": 1024}}),
    "batched-tokens-8192": ({}, {"engine_kwargs": {"max_num_batched_tokens": 8192}}),
    "kv-cache-1gb": ({}, {"kv_cache_gb": 1}),
    "kv-cache-6gb": ({}, {"kv_cache_gb": 6}),
    "bf16": ({}, {"dtype": "bfloat16"}),
    "no-prefix-caching": ({}, {"enable_prefix_caching": False}),
}

PREFIX_STORY = (
    "A farmer keeps careful records. In spring she plants 14 rows of beans with 23 plants in each row, "
    "and 9 rows of peas with 31 plants in each row. Each bean plant yields 12 pods and each pea plant "
    "yields 17 pods. She sells pods in bags of 25 and keeps whatever does not fill a bag. "
) * 4


def _worker(args: argparse.Namespace) -> None:
    """Run both workloads under the current environment and print one JSON line."""
    import asyncio

    from tts.backends.vllm import VLLMBackend
    from tts.types import ChatMessage, GenerationRequest, SamplingConfig

    kwargs = json.loads(args.backend_kwargs)
    t0 = time.perf_counter()
    backend = VLLMBackend(args.model, max_model_len=2048, seed=0, **kwargs)
    start = time.perf_counter() - t0
    scheduler = backend.info()["scheduler"]

    def chat(text: str) -> list[ChatMessage]:
        return [ChatMessage(role="user", content=text)]

    sampling = SamplingConfig(n=args.n, temperature=0.8, max_tokens=args.max_tokens)
    sampling_reqs = [GenerationRequest(prompt=chat(f"Write a short story about the number {i}."), sampling=sampling)
                     for i in range(args.prompts)]
    step = SamplingConfig(n=1, temperature=0.8, max_tokens=args.max_tokens // 2)
    prefix_reqs = [
        GenerationRequest(prompt=chat(f"{PREFIX_STORY} Question {p}: how many full bags does she sell?"),
                          continuation=f"Let me work through this step by step. Attempt {c}:", sampling=step)
        for p in range(8) for c in range(8)
    ]
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=32)
    check_reqs = [GenerationRequest(prompt=chat(q), sampling=greedy)
                  for q in ("What is 17 * 23?", "Name three prime numbers.", "Say hello in French.")]

    async def timed(reqs):
        t = time.perf_counter()
        outs = await asyncio.gather(*(backend.generate([r]) for r in reqs))
        secs = time.perf_counter() - t
        samples = [s for (o,) in outs for s in o]
        return {"tokens": sum(s.token_count for s in samples), "seconds": secs,
                "prompt_tokens": sum(s.prompt_tokens for (o,) in outs for s in o[:1]),
                "cached_tokens": sum(s.cached_tokens for (o,) in outs for s in o[:1])}

    async def main():
        await backend.generate(check_reqs[:1])  # warm-up: first-call costs are not throughput
        checks = await asyncio.gather(*(backend.generate([r]) for r in check_reqs))
        result = {"sampling": await timed(sampling_reqs), "prefix": await timed(prefix_reqs)}
        result["greedy"] = [{"text": s.text, "logprobs": s.token_logprobs} for ((s,),) in checks]
        return result

    result = asyncio.run(main())
    result.update(start_seconds=start, **scheduler)
    backend.close()
    print("RESULT " + json.dumps(result), flush=True)


def _run_setting(name: str, args: argparse.Namespace) -> dict | None:
    env_over, kwargs = SETTINGS[name]
    env = {**os.environ, **env_over}
    cmd = [sys.executable, __file__, "--worker", "--model", args.model or "", "--prompts", str(args.prompts),
           "-n", str(args.n), "--max-tokens", str(args.max_tokens), "--backend-kwargs", json.dumps(kwargs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    print(f"  {name}: failed (exit {proc.returncode}): {' | '.join(tail)}", flush=True)
    return None


def _same_outputs(a: dict, b: dict) -> str:
    for x, y in zip(a["greedy"], b["greedy"]):
        if x["text"] != y["text"]:
            return "DIFFERENT TEXT"
        if x["logprobs"] and y["logprobs"]:
            diff = max(abs(p - q) for p, q in zip(x["logprobs"], y["logprobs"]))
            if diff > 1e-3:
                return f"logprobs differ by {diff:.1e}"
    return "same"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name/folder (default: the built-in SmolLM2-135M)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(SETTINGS))
    ap.add_argument("--json", default=None, help="also write all measurements to this file")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per setting")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend-kwargs", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.model = args.model or None
    if args.worker:
        _worker(args)
        return

    names = args.only.split(",") if args.only else list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    order = ["default"] + [n for n in names if n != "default"] + ["default"]  # default first and last
    print(f"model: {args.model or 'smollm2-135m (default)'}; sampling workload {args.prompts} prompts x n={args.n} "
          f"x {args.max_tokens} tokens; prefix workload 8 prefixes x 8 continuations x {args.max_tokens // 2} tokens; "
          f"{os.cpu_count()} CPUs", flush=True)
    results: dict[str, dict] = {}
    for i, name in enumerate(order):
        key = name if i < len(order) - 1 else "default (again, last)"
        print(f"running {key} ...", flush=True)
        r = _run_setting(name, args)
        if r is not None:
            results[key] = r
            print(f"  {key}: sampling {r['sampling']['tokens'] / r['sampling']['seconds']:.1f} tok/s, "
                  f"prefix {r['prefix']['tokens'] / r['prefix']['seconds']:.1f} tok/s", flush=True)

    base = results.get("default")
    print()
    print(f"{'setting':<24} {'sampling tok/s':>14} {'ratio':>6} {'prefix tok/s':>12} {'ratio':>6} "
          f"{'cached %':>8} {'start s':>7}  outputs vs default   (max_num_seqs, batched tokens)")
    for key, r in results.items():
        s_rate = r["sampling"]["tokens"] / r["sampling"]["seconds"]
        p_rate = r["prefix"]["tokens"] / r["prefix"]["seconds"]
        cached = 100 * r["prefix"]["cached_tokens"] / max(r["prefix"]["prompt_tokens"], 1)
        if base:
            s_ratio = s_rate / (base["sampling"]["tokens"] / base["sampling"]["seconds"])
            p_ratio = p_rate / (base["prefix"]["tokens"] / base["prefix"]["seconds"])
            same = _same_outputs(r, base)
        else:
            s_ratio = p_ratio = float("nan")
            same = "?"
        print(f"{key:<24} {s_rate:>14.1f} {s_ratio:>6.2f} {p_rate:>12.1f} {p_ratio:>6.2f} {cached:>8.0f} "
              f"{r['start_seconds']:>7.1f}  {same:<20} ({r['max_num_seqs']}, {r['max_num_batched_tokens']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
