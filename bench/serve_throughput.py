"""`tts serve` answering concurrent self-consistency requests against the same work through `tts eval`.

    python bench/serve_throughput.py [--problems 16] [-n 8] [--max-tokens 128] [--rounds 2]

Both use the in-process vLLM engine on the built-in model, GSM8K prompts, temperature 0.7, no scorer:
- eval:  `tts eval --task gsm8k -s self-consistency -n N --limit P` (its session time: generation,
         voting, grading and the run folder, engine start excluded);
- serve: one `tts serve --task gsm8k --scorer none` started once; each round sends the P problems' chat
         prompts at once through the official `openai` client (model `self-consistency:n=N`) and times
         the first request to the last answer.
Rounds alternate (eval, serve, eval, serve) and the best of each is compared. Prints problems/s and
completion tokens/s of each and the ratio serve / eval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_eval(out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "tts.cli", "eval", "--task", "gsm8k", "--limit", str(args.problems),
           "-s", "self-consistency", "-n", str(args.n), "--max-tokens", str(args.max_tokens), "--scorer", "none",
           "--out", str(out), "--no-progress", "--max-model-len", "2048"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    seconds = metrics["session_seconds"]
    tokens = sum(r["usage"]["completion_tokens"] for r in rows)
    return {"seconds": seconds, "problems_per_s": len(rows) / seconds, "tokens_per_s": tokens / seconds,
            "answered": len(rows)}


async def serve_round(url: str, prompts: list[list[dict]], args: argparse.Namespace) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=3600)

    async def one(messages: list[dict]) -> int:
        reply = await client.chat.completions.create(model=f"self-consistency:n={args.n}", messages=messages,
                                                     temperature=0.7, max_tokens=args.max_tokens)
        return reply.usage.completion_tokens

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(m) for m in prompts))
    seconds = time.perf_counter() - start
    await client.close()
    return {"seconds": seconds, "problems_per_s": len(prompts) / seconds, "tokens_per_s": sum(tokens) / seconds,
            "answered": len(tokens)}


def show(name: str, r: dict) -> None:
    print(f"  {name:<16} {r['seconds']:7.1f} s  {r['problems_per_s']:6.3f} problems/s  "
          f"{r['tokens_per_s']:7.1f} completion tok/s  ({r['answered']} answered)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from tts.registry import build_task

    prompts = [[m.model_dump() for m in it.problem.prompt] for it in build_task("gsm8k").load(args.problems)]
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "tts.cli", "serve", "--task", "gsm8k", "--scorer", "none",
                               "--port", str(port), "--max-model-len", "2048"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 600
        while True:
            if server.poll() is not None:
                raise SystemExit(f"tts serve exited with {server.returncode}; see {tmp / 'serve.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("tts serve not ready after 600 s")
            time.sleep(2)
        print(f"{args.problems} GSM8K problems at once, self-consistency n={args.n}, max {args.max_tokens} tokens",
              flush=True)
        evals, serves = [], []
        for i in range(args.rounds):
            evals.append(run_eval(tmp / f"eval-{i}", args))
            show(f"eval round {i + 1}", evals[-1])
            serves.append(asyncio.run(serve_round(url, prompts, args)))
            show(f"serve round {i + 1}", serves[-1])
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    e = max(evals, key=lambda r: r["tokens_per_s"])
    s = max(serves, key=lambda r: r["tokens_per_s"])
    print(f"best rounds: serve / eval = x{s['problems_per_s'] / e['problems_per_s']:.3f} problems/s, "
          f"x{s['tokens_per_s'] / e['tokens_per_s']:.3f} completion tokens/s")
    print(f"logs and run folders: {tmp}")


if __name__ == "__main__":
    main()
