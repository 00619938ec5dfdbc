"""Requests per second through 1, 2 and 4 simulated replicas: does the OpenAI backend's routing fill them?

    python bench/routing_scaling.py [--problems 200] [-n 4] [--capacity 8] [--service 0.2]

Each replica is a small OpenAI-compatible server (FastAPI + uvicorn, in this process's threads) that
answers at most `--capacity` requests at once, each after `--service` seconds, like a server on its own
machine with a fixed batch size: its throughput is capacity / service requests per second, whatever the
CPU of this machine. The same `tts eval --backend openai` (self-consistency, GSM8K prompts, no scorer) runs
through 1, 2 and 4 of them; prints requests/s, the ratio to one replica, and how the requests were spread.
Real replicas on a shared 2-core machine cannot show this (they take the cores from each other); see
bench/two_servers.py for that measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica(capacity: int, service: float) -> tuple[str, dict[str, int]]:
    """Start one simulated replica in a daemon thread; its URL and its request counter."""
    app = FastAPI()
    counter = {"requests": 0}
    gate: dict[str, asyncio.Semaphore] = {}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": "bench"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        sem = gate.setdefault("sem", asyncio.Semaphore(capacity))
        async with sem:
            await asyncio.sleep(service)
        counter["requests"] += 1
        n = int(body.get("n", 1))
        return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": "sim",
                "choices": [{"index": i, "message": {"role": "assistant", "content": "The answer is 42."},
                             "finish_reason": "stop"} for i in range(n)],
                "usage": {"prompt_tokens": 50, "completion_tokens": 6 * n, "total_tokens": 50 + 6 * n}}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", counter


def run(urls: list[str], out: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "tts.cli", "eval", "--backend", "openai", "--task", "gsm8k",
           "--limit", str(args.problems), "-s", "self-consistency", "-n", str(args.n), "--scorer", "none",
           "--out", str(out), "--no-progress", "--concurrency", str(args.concurrency)]
    for url in urls:
        cmd += ["--base-url", url]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == args.problems
    return sum(r["usage"]["backend_calls"] for r in rows) / metrics["session_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--capacity", type=int, default=8)
    ap.add_argument("--service", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    replicas = [replica(args.capacity, args.service) for _ in range(4)]
    tmp = Path(tempfile.mkdtemp(prefix="routing-"))
    ideal = args.capacity / args.service
    print(f"{args.problems} problems, each replica at most {args.capacity} requests at once, {args.service} s each "
          f"({ideal:.0f} requests/s per replica at most); --concurrency {args.concurrency}")
    base = None
    for k in (1, 2, 4):
        before = [c["requests"] for _, c in replicas]
        rate = run([u for u, _ in replicas[:k]], tmp / f"r{k}", args)
        spread = [c["requests"] - b for (_, c), b in zip(replicas, before)][:k]
        base = base or rate
        print(f"  {k} replica(s): {rate:6.1f} requests/s  x{rate / base:.2f} of one  ({rate / (k * ideal):.0%} of "
              f"their capacity)  requests per replica {spread}", flush=True)


if __name__ == "__main__":
    main()
