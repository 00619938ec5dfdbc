"""`tts compare`: finished (or partial) runs side by side at matched compute, one point per run.

Each run folder written by `tts eval` is one point: its strategy, its options and its budget N (the
strategy's `n`), the accuracy (mean of `correct` over problems, with a 95% percentile bootstrap
interval over problems) and what it cost per problem. Only the problems finished in every run (and
in the pool) are compared; runs of different tasks or models are refused. docs/compare.md.

Per problem means, from each problem's `usage` in results.jsonl (summed by `tts.runner.summarise`,
so a FLOPs field a line lacks is unknown, never 0):
- generated tokens: completion_tokens; scorer tokens: scorer_prompt_tokens + scorer_completion_tokens;
  cached prompt tokens: cached_tokens + scorer_cached_tokens; calls: backend_calls, scorer_calls.
- FLOPs: generator_flops, scorer_flops, their total and the scorer's share; unknown (None) when any
  part is unknown for any problem.
- wall seconds per problem: metrics.json `session_seconds` / the problems generated in that session
  (`generated_this_session`, else `problems`): amortised over the concurrency the run had; latency:
  the mean of `usage.wall_time`, each problem's own time in the strategy. The engine's mean batch
  from metrics.json `engine_this_session.mean_batch`. These three are whole-session figures, not
  restricted to the common problems; unknown when metrics.json lacks them.

`--pool RUN_DIR`: a run that sampled n independent answers per problem (repeated sampling or any
sample-then-select strategy) gives, at each budget k <= n, a self-consistency point (majority vote)
and a `weighted-vote[<scorer>]` point per scorer recorded in its verdicts, each on the FIRST k samples
of every problem, as search-and-learn evaluates sub-budgets (the study selectors of
`tts.study.selectors` decide, ties credited 1/#tied as in `tts scale`). Their cost at k:
- generated tokens: the completion tokens of those k samples;
- generator FLOPs: the problem's generator FLOPs x (prompt - cached + tokens of the k samples) /
  (prompt - cached + all completion tokens): the prompt is prefilled once for a request of k samples
  as for one of n, the completions are those k samples' own (k/n when nothing was processed);
- scorer tokens, scorer cached tokens and scorer FLOPs: k/n of the problem's (every candidate is
  scored on its own), charged only to the points that read a model scorer: self-consistency reads no
  score, and scorers computed from the samples' own log-probabilities (`reads_sampled_tokens`: the
  confidence scorers) cost nothing more; a weighted vote on a model scorer (judge, reward model) is
  charged the pool's whole scorer cost (usage does not tell model scorers apart, so with several it is
  an upper bound, and a note says so); generator cached tokens: the problem's (one prompt, as for n);
- calls: the problem's (one generation request and one call per scorer, for k samples as for n);
- wall seconds, latency and mean batch: unknown, since batched time cannot be apportioned honestly.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from tts.errors import UserError
from tts.metrics import k_grid
from tts.runner import summarise
from tts.runs import RunFolder, read_config
from tts.study.pool import load_pools, scorer_names
from tts.study.selectors import Majority, ScoreWeightedVote, StudySelector
from tts.study.stats import bootstrap_interval
from tts.study.study import _model_name

CSV_NAME, MD_NAME, PNG_NAME = "compare.csv", "compare.md", "compare.png"
# Strategies whose samples are n independent draws of one request, so the first k are a k-sample run.
POOL_STRATEGIES = ("repeated-sampling", "self-consistency", "best-of-n", "weighted-vote", "perplexity", "rpc")


@dataclass
class ComparePoint:
    """One row of compare.csv: costs are means per problem over the compared problems; None is unknown."""

    source: str                      # "run" (a run folder) or "pool" (derived from --pool at budget k)
    run: str                         # the run folder
    strategy: str
    family: str                      # strategy and the options that tell its runs apart (one plotted line)
    label: str                       # family and budget
    options: str                     # the strategy's options as JSON (pool: {"n": k})
    budget: int | None               # N: the strategy's n (pool: k)
    problems: int
    accuracy: float
    accuracy_lo: float | None
    accuracy_hi: float | None
    generated_tokens: float
    scorer_tokens: float
    cached_tokens: float
    generator_flops: float | None
    scorer_flops: float | None
    total_flops: float | None
    scorer_flops_share: float | None
    backend_calls: float
    scorer_calls: float
    wall_seconds: float | None       # session seconds / problems generated in the session
    latency_seconds: float | None    # mean usage.wall_time
    mean_batch: float | None


@dataclass
class Comparison:
    points: list[ComparePoint]
    problems: int
    notes: list[str]


@dataclass
class _Run:
    path: Path
    config: dict[str, Any]
    results: dict[str, dict[str, Any]]  # problem id -> result line
    metrics: dict[str, Any] | None


def _load(path: Path) -> _Run:
    folder = RunFolder(path)
    config = read_config(folder.config_path)
    if config is None:
        raise UserError(f"{path} is not a run folder (no config.json)")
    results = {str(r["problem_id"]): r for r in folder.results()}
    if not results:
        raise UserError(f"{path} has no finished problem")
    return _Run(path, config, results, read_config(folder.metrics_path))


def _task(config: dict[str, Any]) -> str:
    options = config.get("task_options") or {}
    return f"{config.get('task')}" + (f" {json.dumps(options, sort_keys=True)}" if options else "")


def _check_alike(runs: Sequence[_Run]) -> None:
    """One task (and task options) and one model across every run, else a UserError naming two that differ."""
    for what, key in (("tasks", _task), ("models", _model_name)):
        first = runs[0]
        for other in runs[1:]:
            if key(other.config) != key(first.config):
                raise UserError(f"runs of different {what}: {first.path} has {key(first.config)}, {other.path} has "
                                f"{key(other.config)}; compare runs of one task and one model")


def _common(runs: Sequence[_Run], say: Callable[[str], None]) -> list[str]:
    common = set.intersection(*(set(r.results) for r in runs))
    if not common:
        raise UserError("the runs have no finished problem in common")
    for r in runs:
        if len(r.results) > len(common):
            say(f"compare: {len(r.results) - len(common)} of {len(r.results)} problems of {r.path} are not "
                "finished in every run; left out")
    return sorted(common)


def _value(x: Any) -> str:
    return x if isinstance(x, str) else json.dumps(x)


def _labels(runs: Sequence[_Run]) -> list[tuple[str, str]]:
    """(family, label) per run: the strategy, then the options (besides n) that differ among its runs."""
    options = [{k: v for k, v in (r.config.get("strategy_options") or {}).items() if k != "n"} for r in runs]
    out = []
    for r, opts in zip(runs, options):
        strategy = str(r.config.get("strategy"))
        peers = [o for s, o in zip(runs, options) if s.config.get("strategy") == strategy]
        varying = [k for k in sorted(opts) if any(p.get(k) != opts[k] for p in peers)]
        family = " ".join([strategy, *(f"{k}={_value(opts[k])}" for k in varying)])
        n = (r.config.get("strategy_options") or {}).get("n")
        out.append((family, " ".join([strategy, f"n={n}", *(f"{k}={_value(opts[k])}" for k in varying)])))
    labels = [label for _, label in out]
    return [(f"{family} ({r.path.name})", f"{label} ({r.path.name})") if labels.count(label) > 1 else (family, label)
            for r, (family, label) in zip(runs, out)]  # same strategy and options: the folder tells them apart


def _interval(values: np.ndarray, picks: np.ndarray) -> tuple[float | None, float | None]:
    lo, hi = bootstrap_interval(values[:, None], picks)
    return (None if np.isnan(lo[0]) else float(lo[0])), (None if np.isnan(hi[0]) else float(hi[0]))


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean, None (unknown) if any value is."""
    return None if any(v is None for v in values) else float(np.mean(np.asarray(values, dtype=float)))


def _total(generator: float | None, scorer: float | None) -> tuple[float | None, float | None]:
    total = None if generator is None or scorer is None else generator + scorer
    return total, (scorer / total if total and scorer is not None else None)


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def _session(metrics: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(wall seconds per problem generated this session, the engine's mean batch) from metrics.json."""
    if not metrics:
        return None, None
    seconds = _number(metrics.get("session_seconds"))
    done = _number(metrics.get("generated_this_session", metrics.get("problems")))
    engine = metrics.get("engine_this_session")
    batch = _number(engine.get("mean_batch")) if isinstance(engine, dict) else None
    return (seconds / done if seconds is not None and done else None), (batch or None)


def run_point(run: _Run, ids: Sequence[str], picks: np.ndarray, family: str, label: str) -> ComparePoint:
    rows = [{**r, "usage": r.get("usage") or {}, "correct": bool(r.get("correct")), "n_samples": r.get("n_samples", 0)}
            for r in (run.results[i] for i in ids)]
    correct = np.array([r["correct"] for r in rows], dtype=float)
    u = summarise(rows)["usage"]  # totals; a FLOPs field some line lacks is None
    p = len(rows)
    gen = None if u["generator_flops"] is None else u["generator_flops"] / p
    scorer = None if u["scorer_flops"] is None else u["scorer_flops"] / p
    wall, batch = _session(run.metrics)
    options = run.config.get("strategy_options") or {}
    return ComparePoint(
        "run", str(run.path), str(run.config.get("strategy")), family, label, json.dumps(options, sort_keys=True),
        options.get("n"), p, float(correct.mean()), *_interval(correct, picks),
        u["completion_tokens"] / p, (u["scorer_prompt_tokens"] + u["scorer_completion_tokens"]) / p,
        (u["cached_tokens"] + u["scorer_cached_tokens"]) / p, gen, scorer, *_total(gen, scorer),
        u["backend_calls"] / p, u["scorer_calls"] / p, wall, _mean([r["usage"].get("wall_time") for r in rows]), batch)


def _costs_at(usage: dict[str, Any], tokens: np.ndarray, k: int) -> dict[str, float | None]:
    """One problem's cost at the first k of its n pool samples (the module docstring says how)."""
    share = k / len(tokens)
    flops = {f: usage.get(f) for f in ("generator_flops", "scorer_flops")}  # absent: unknown
    prefill = usage.get("prompt_tokens", 0) - usage.get("cached_tokens", 0)
    processed = prefill + usage.get("completion_tokens", 0)
    ratio = (prefill + float(tokens[:k].sum())) / processed if processed > 0 else share
    return {
        "generated_tokens": float(tokens[:k].sum()),
        "scorer_tokens": share * (usage.get("scorer_prompt_tokens", 0) + usage.get("scorer_completion_tokens", 0)),
        "cached_tokens": usage.get("cached_tokens", 0) + share * usage.get("scorer_cached_tokens", 0),
        "scorer_cached_tokens": share * usage.get("scorer_cached_tokens", 0),
        "generator_flops": None if flops["generator_flops"] is None else flops["generator_flops"] * ratio,
        "scorer_flops": None if flops["scorer_flops"] is None else flops["scorer_flops"] * share,
        "backend_calls": usage.get("backend_calls", 0), "scorer_calls": usage.get("scorer_calls", 0),
    }


def pool_points(pool: _Run, ids: Sequence[str], budgets: Sequence[int], picks: np.ndarray,
                equivalent: Callable[[str, str], bool] | None = None) -> tuple[list[ComparePoint], list[str]]:
    """Self-consistency and weighted-vote[<scorer>] at each budget k, on the first k samples of the pool."""
    by_id = {str(p.problem_id): p for p in load_pools(RunFolder(pool.path), equivalent).pools}
    pools = [by_id[i] for i in ids]
    scorers = scorer_names(pools)
    notes = [] if scorers else [f"{pool.path}: no scorer verdicts in the samples, so no weighted-vote points"]
    selectors: list[tuple[str, StudySelector]] = [("self-consistency", Majority()),
                                                  *((f"weighted-vote[{s}]", ScoreWeightedVote(s)) for s in scorers)]
    free = _free_scorers(pool.config)
    charged = {"self-consistency": False, **{f"weighted-vote[{s}]": s not in free for s in scorers}}
    if sum(1 for s in scorers if s not in free) > 1:
        notes.append(f"{pool.path}: several model scorers were recorded; each weighted vote on one of them is "
                     "charged all their cost (usage does not tell them apart)")
    points = []
    for k in budgets:
        costs = [_costs_at(pool.results[i].get("usage") or {}, p.tokens, k) for i, p in zip(ids, pools)]
        cost = {key: _mean([c[key] for c in costs]) for key in costs[0]}
        for name, selector in selectors:
            credit = np.array([selector.credits(p, np.arange(k)[None, :])[0] for p in pools], dtype=float)
            paid = charged[name]
            gen, scorer = cost["generator_flops"], cost["scorer_flops"] if paid else 0.0
            points.append(ComparePoint(
                "pool", str(pool.path), name, f"{name} (pool)", f"{name} n={k} (pool)", json.dumps({"n": k}), k,
                len(ids),
                float(credit.mean()), *_interval(credit, picks), cost["generated_tokens"] or 0.0,
                (cost["scorer_tokens"] or 0.0) if paid else 0.0,
                (cost["cached_tokens"] or 0.0) - (0.0 if paid else cost["scorer_cached_tokens"] or 0.0),
                gen, scorer, *_total(gen, scorer),
                cost["backend_calls"] or 0.0, (cost["scorer_calls"] or 0.0) if paid else 0.0, None, None, None))
    return points, notes


def _free_scorers(config: dict[str, Any]) -> set[str]:
    """Labels of the pool's scorers that cost no model call: those computed from the samples' own tokens."""
    from tts.registry import get

    free = set()
    for entry in config.get("scorers") or []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        try:
            cls = get("scorers", name)
        except UserError:  # a plugin not installed here: assume it called a model
            continue
        if getattr(cls, "reads_sampled_tokens", False):
            free.add(str((entry.get("options") or {}).get("label") or name))
    return free


def _pool_budgets(pool: _Run, ids: Sequence[str], budgets: Sequence[int] | None, runs: Sequence[_Run]) -> list[int]:
    """The budgets asked for (each at most the pool's smallest n), else the runs' own N the pool can serve,
    else 1, 2, 4, ... up to that n."""
    strategy = pool.config.get("strategy")
    if strategy not in POOL_STRATEGIES:
        raise UserError(f"--pool {pool.path} is a {strategy} run; a pool needs independent samples "
                        f"({', '.join(POOL_STRATEGIES)})")
    n = min(int(pool.results[i].get("n_samples") or 0) for i in ids)
    if budgets:
        if max(budgets) > n:
            raise UserError(f"--budgets asks for {max(budgets)} samples, but the pool {pool.path} has only {n} for "
                            "some problem")
        return sorted(set(budgets))
    if n < 1:
        raise UserError(f"the pool {pool.path} has a problem without samples")
    own = sorted({b for r in runs if isinstance(b := (r.config.get("strategy_options") or {}).get("n"), int)
                  and 1 <= b <= n})
    return own or k_grid(n)


def compare(run_dirs: Sequence[str | Path], pool_dir: str | Path | None = None, budgets: Sequence[int] | None = None,
            bootstrap: int = 1000, seed: int = 0, equivalent: Callable[[str, str], bool] | None = None,
            say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Comparison:
    """The points of the runs (and, with a pool, the derived ones), on the problems every folder finished.

    Bad data is a UserError; everything is checked before the pool's samples are read.
    """
    runs = [_load(Path(d)) for d in run_dirs]
    pool = _load(Path(pool_dir)) if pool_dir is not None else None
    everyone = [*runs, *([pool] if pool else [])]
    _check_alike(everyone)
    ids = _common(everyone, say)
    ks = _pool_budgets(pool, ids, budgets, runs) if pool else []
    picks = np.random.default_rng(seed).integers(0, len(ids), size=(bootstrap, len(ids)))
    points = [run_point(r, ids, picks, family, label) for r, (family, label) in zip(runs, _labels(runs))]
    notes: list[str] = []
    if pool:
        say(f"compare: voting on the first k of {pool.path}'s samples, k = {', '.join(map(str, ks))}")
        derived, notes = pool_points(pool, ids, ks, picks, equivalent)
        points += derived
    return Comparison(points, len(ids), notes)


# ================================================================================================ files


def _fmt(x: float | None, kind: str = "num") -> str:
    if x is None:
        return "?"
    if kind == "flops":
        return f"{x:.2e}"
    if kind == "share":
        return f"{100 * x:.1f}%"
    if kind in ("seconds", "calls"):
        return f"{x:.3g}"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _order(p: ComparePoint) -> tuple[str, float, str]:
    return p.family, float(p.budget) if p.budget is not None else math.inf, p.label


def render_markdown(data: Comparison) -> str:
    head = ["strategy", "N", "accuracy [95% CI]", "gen tokens", "scorer tokens", "cached tokens", "FLOPs",
            "scorer FLOPs", "calls (gen+scorer)", "wall s/problem", "latency s", "mean batch"]
    lines = [f"Compute-matched comparison on {data.problems} problems common to every run; costs are means per "
             "problem, ? is unknown (docs/compare.md).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in sorted(data.points, key=_order):
        ci = "" if p.accuracy_lo is None or p.accuracy_hi is None else f" [{p.accuracy_lo:.3f}, {p.accuracy_hi:.3f}]"
        calls = f"{_fmt(p.backend_calls, 'calls')}+{_fmt(p.scorer_calls, 'calls')}"
        cells = [p.family, "?" if p.budget is None else str(p.budget), f"{p.accuracy:.3f}{ci}",
                 _fmt(p.generated_tokens), _fmt(p.scorer_tokens), _fmt(p.cached_tokens), _fmt(p.total_flops, "flops"),
                 _fmt(p.scorer_flops_share, "share"), calls,
                 _fmt(p.wall_seconds, "seconds"), _fmt(p.latency_seconds, "seconds"), _fmt(p.mean_batch)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, *(f"\nNote: {n}" for n in data.notes)]) + "\n"


def write_csv(data: Comparison, path: Path) -> Path:
    names = [f.name for f in fields(ComparePoint)]
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(names)
        for p in sorted(data.points, key=_order):
            out.writerow(["" if getattr(p, n) is None else getattr(p, n) for n in names])
    return path


def write_plot(data: Comparison, path: Path) -> Path:
    """Accuracy (95% intervals) against generated tokens and total FLOPs (log x) and wall seconds per problem;
    one line per strategy family across budgets, dashed for points derived from the pool."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    panels = [("generated_tokens", "generated tokens per problem", True), ("total_flops", "FLOPs per problem", True),
              ("wall_seconds", "wall seconds per problem", False)]
    families = sorted({p.family for p in data.points})
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
    for ax, (field, xlabel, log) in zip(axes, panels):
        drawn = False
        for i, family in enumerate(families):
            pts = sorted([p for p in data.points if p.family == family and (getattr(p, field) or 0) > 0], key=_order)
            if not pts:
                continue
            y = np.array([p.accuracy for p in pts])
            lo = np.array([p.accuracy if p.accuracy_lo is None else p.accuracy_lo for p in pts])
            hi = np.array([p.accuracy if p.accuracy_hi is None else p.accuracy_hi for p in pts])
            ax.errorbar([getattr(p, field) for p in pts], y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)],
                        color=plt.get_cmap("tab10")(i % 10), marker="os^Dv"[i % 5], capsize=3, label=family,
                        linestyle="--" if pts[0].source == "pool" else "-")
            for p in pts:  # the budget beside each point
                ax.annotate(f"{p.budget}", (getattr(p, field), p.accuracy), xytext=(4, 4), textcoords="offset points",
                            fontsize=7)
            drawn = True
        if log and drawn:
            ax.set_xscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "unknown for every point", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (95% bootstrap interval)")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{data.problems} problems common to every run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(data: Comparison, folder: Path) -> list[Path]:
    """compare.csv, compare.md and compare.png into `folder` (created); a UserError if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / MD_NAME
        md.write_text(render_markdown(data))
        return [write_csv(data, folder / CSV_NAME), md, write_plot(data, folder / PNG_NAME)]
    except OSError as exc:
        raise UserError(f"cannot write the comparison into {folder}: {exc.strerror or exc}") from None
