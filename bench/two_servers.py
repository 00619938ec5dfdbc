"""Requests per second through two `vllm serve` replicas against one, with the OpenAI backend's routing.

    python bench/two_servers.py [--problems 24] [-n 4] [--max-tokens 96] [--rounds 2]

Starts `vllm serve` of the built-in model twice, each bound to its own CPU core
(VLLM_CPU_OMP_THREADS_BIND), and runs the same `tts eval --backend openai` (self-consistency, GSM8K,
no scorer) through one replica and through both (`--base-url A --base-url B`), alternating rounds so
drift in machine load hits both. Then, as the same-hardware baseline, one replica bound to both cores.
Prints problems/s, HTTP requests/s and tokens/s of each and the ratios. On a machine with few cores
the `tts eval` client shares the cores with the servers; the numbers say so much and no more.
"""

from __future__ import annotations

import argparse
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


def start_server(model_dir: str, cores: str, log: Path, max_model_len: int = 2048) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_CPU_OMP_THREADS_BIND": cores}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", str(max_model_len), "--enforce-eager", "--enable-prefix-caching", "--seed", "0"]
    fh = log.open("w")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/v1"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vllm serve for {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"vllm serve at {url} not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_eval(urls: list[str], out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "tts.cli", "eval", "--backend", "openai", "--task", "gsm8k",
           "--limit", str(args.problems), "-s", "self-consistency", "-n", str(args.n),
           "--max-tokens", str(args.max_tokens), "--scorer", "none", "--out", str(out), "--no-progress"]
    for url in urls:
        cmd += ["--base-url", url]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    seconds = metrics["session_seconds"]
    calls = sum(r["usage"]["backend_calls"] for r in rows)
    tokens = sum(r["usage"]["completion_tokens"] for r in rows)
    return {"seconds": seconds, "problems_per_s": len(rows) / seconds, "requests_per_s": calls / seconds,
            "tokens_per_s": tokens / seconds, "accuracy": metrics["accuracy"]}


def show(name: str, r: dict) -> None:
    print(f"  {name:<28} {r['seconds']:7.1f} s  {r['problems_per_s']:6.3f} problems/s  "
          f"{r['requests_per_s']:6.3f} requests/s  {r['tokens_per_s']:7.1f} tok/s  acc {r['accuracy']:.3f}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from tts.models import resolve_model

    model_dir = resolve_model(None)
    tmp = Path(tempfile.mkdtemp(prefix="two-servers-"))
    results: dict[str, list[dict]] = {"one replica (1 core)": [], "two replicas (1 core each)": [],
                                      "one replica (2 cores)": []}
    a, url_a = start_server(model_dir, "0", tmp / "a.log")
    b, url_b = start_server(model_dir, "1", tmp / "b.log")
    try:
        wait_ready(url_a, a)
        wait_ready(url_b, b)
        print(f"{args.problems} GSM8K problems, self-consistency n={args.n}, max {args.max_tokens} tokens", flush=True)
        for i in range(args.rounds):
            for name, urls in (("one replica (1 core)", [url_a]), ("two replicas (1 core each)", [url_a, url_b])):
                r = run_eval(urls, tmp / f"{len(urls)}-{i}", args)
                results[name].append(r)
                show(f"{name} round {i + 1}", r)
    finally:
        stop(a)
        stop(b)
    c, url_c = start_server(model_dir, "0-1", tmp / "c.log")
    try:
        wait_ready(url_c, c)
        r = run_eval([url_c], tmp / "c", args)
        results["one replica (2 cores)"].append(r)
        show("one replica (2 cores)", r)
    finally:
        stop(c)
    best = {k: max(v, key=lambda r: r["problems_per_s"]) for k, v in results.items()}
    two, one, both = best["two replicas (1 core each)"], best["one replica (1 core)"], best["one replica (2 cores)"]
    print("best round of each:")
    for k, r in best.items():
        show(k, r)
    print(f"two replicas / one replica (same per-replica hardware): requests/s x{two['requests_per_s'] / one['requests_per_s']:.2f}, "
          f"tokens/s x{two['tokens_per_s'] / one['tokens_per_s']:.2f}")
    print(f"two replicas (1 core each) / one replica (2 cores): requests/s x{two['requests_per_s'] / both['requests_per_s']:.2f}")
    print(f"logs and run folders: {tmp}")


if __name__ == "__main__":
    main()
