"""`tts allocate`: OSCA's sample compute allocation over finished repeated-sampling runs (docs/allocate.md).

Zhang et al. 2024, "Scaling LLM Inference with Optimized Sample Compute Allocation". Each run folder is
one sampling configuration (temperature, top_p, prompt perturbation, model) with a pool of independent
samples per problem. The problems every run finished are split at random (seeded) into a training part,
where each configuration's per-problem success rate p[q, c] = correct / samples is estimated and the
allocation that maximises expected coverage is searched (tts.study.allocation), and a held-out part,
where the allocation is evaluated: each configuration's n_c samples drawn without replacement from its
own pool, coverage = mean_q [1 - prod_c C(n_qc - correct_qc, n_c) / C(n_qc, n_c)]. The baselines are
every single configuration at the same budget and the one that is best on the training part.

Budgets count samples per problem, or with `cost="tokens"` completion tokens per problem, a sample of
configuration c costing its mean completion tokens on the training part. Every budget must be servable
from every pool without replacement (each single configuration at the whole budget), else it is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from tts.errors import UserError
from tts.runs import RunFolder, read_config
from tts.study.allocation import (
    DEFAULT_LIMIT,
    Method,
    best_allocation,
    best_single,
    expected_coverage,
    heldout_coverage,
)
from tts.study.compare import POOL_STRATEGIES
from tts.study.pool import read_run
from tts.study.study import _model_name

PAPER = "Zhang et al. 2024, Scaling LLM Inference with Optimized Sample Compute Allocation (arXiv:2410.22480)"
DEFAULT_BUDGETS = (1, 2, 4, 8, 16)
Cost = Literal["samples", "tokens"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigEntry(_Model):
    """One sampling configuration: a run folder and the settings its samples were drawn with."""

    label: str
    run: str
    strategy: str
    model: str | None
    temperature: float
    top_p: float
    max_tokens: int | None
    perturb: str | None
    options: dict[str, Any]        # the run's strategy options besides n
    pool: int                      # samples per problem (the fewest any studied problem has)
    tokens_per_sample: float       # mean completion tokens per sample, training problems
    train_pass_at_1: float         # mean success rate over the training problems


class Single(_Model):
    label: str
    samples: int
    train: float                   # expected coverage on the training problems (the objective)
    heldout: float                 # coverage on the held-out problems, drawn without replacement


class BudgetResult(_Model):
    budget: int                    # samples per problem, or tokens per problem with cost "tokens"
    allocation: dict[str, int]     # configuration label -> samples, every configuration
    method: Method                 # exhaustive, or greedy with hill climbing past the search limit
    evaluated: int                 # allocations scored (exhaustive) or objective evaluations (greedy)
    spent: float                   # samples per problem, or expected tokens per problem (training means)
    train: float
    heldout: float
    best_single: Single            # the single configuration best on the training problems
    singles: list[Single]          # every single configuration at this budget


class AllocateReport(_Model):
    paper: str = PAPER
    task: str
    task_options: dict[str, Any]
    cost: Cost
    budget: int
    seed: int
    train_fraction: float
    search_limit: int
    train_problems: list[str]
    heldout_problems: list[str]
    configs: list[ConfigEntry]
    result: BudgetResult
    curve: list[BudgetResult]
    notes: list[str]


# ================================================================================================ reading


@dataclass
class _Run:
    path: Path
    config: dict[str, Any]
    correct: dict[str, np.ndarray]   # problem -> bool per sample
    tokens: dict[str, np.ndarray]    # problem -> completion tokens per sample


def _config(path: Path) -> dict[str, Any]:
    config = read_config(RunFolder(path).config_path)
    if config is None:
        raise UserError(f"{path} is not a run folder (no config.json)")
    strategy = config.get("strategy")
    if strategy not in POOL_STRATEGIES:
        raise UserError(f"{path} is a {strategy} run; allocation needs pools of independent samples of one "
                        f"configuration ({', '.join(POOL_STRATEGIES)})")
    if not isinstance((config.get("sampling") or {}).get("temperature"), int | float):
        raise UserError(f"{path}/config.json records no sampling temperature, so its configuration cannot be "
                        "named or run again")
    return config


def _task(config: dict[str, Any]) -> tuple[Any, Any]:
    return config.get("task"), config.get("task_options") or {}


def _read(path: Path, config: dict[str, Any]) -> _Run:
    _, by_problem = read_run(RunFolder(path))
    rows = by_problem.items()
    return _Run(path, config, {pid: np.array([bool(r.get("correct")) for r in samples]) for pid, samples in rows},
                {pid: np.array([int(r.get("completion_tokens") or 0) for r in samples]) for pid, samples in rows})


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    sampling = config.get("sampling") or {}
    options = config.get("strategy_options") or {}
    return {"model": _model_name(config), "temperature": float(sampling["temperature"]),
            "top_p": float(sampling.get("top_p", 1.0)), "perturb": options.get("perturb"),
            "max_tokens": sampling.get("max_tokens")}


_SHORT = {"temperature": "T", "max_tokens": "max_tokens", "top_p": "top_p", "perturb": "perturb", "model": "model"}


def _show(key: str, value: Any) -> str:
    if key == "model" and isinstance(value, str):
        return Path(value).name or value
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def labels(settings: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """Each configuration named by the settings that differ among the runs (`T=0.7 top_p=0.95`); the
    folder name when none differ, or added where two would share a label."""
    keys = [k for k in _SHORT if any(s[k] != settings[0][k] for s in settings)]
    out = [" ".join(f"{_SHORT[k]}={_show(k, s[k])}" for k in keys) or name for s, name in zip(settings, names)]
    return [f"{label} ({name})" if out.count(label) > 1 else label for label, name in zip(out, names)]


def split_problems(ids: Sequence[str], train_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) ids: a seeded shuffle of the sorted ids, the first round(fraction x count) for
    training; both parts sorted. The same ids, fraction and seed always give the same split."""
    order = sorted(ids)
    shuffled = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    k = round(train_fraction * len(order))
    if k == 0 or k == len(order):
        part = "training" if k == 0 else "held-out"
        count = f"{len(order)} problem{'s' if len(order) != 1 else ''}"
        raise UserError(f"--train-fraction {train_fraction:g} of the {count} every run finished leaves no {part} "
                        "problem")
    return sorted(shuffled[:k]), sorted(shuffled[k:])


# ================================================================================================ budgets


def check_budget(budget: int, flag: str, cost: Cost, costs: np.ndarray, caps: np.ndarray, names: Sequence[str]) -> None:
    """A UserError unless every single configuration can spend the budget from its pool without replacement."""
    if cost == "samples":
        c = int(np.argmin(caps))
        if budget > caps[c]:
            raise UserError(f"{flag} {budget} is more than the {caps[c]} samples per problem that {names[c]} holds "
                            "for some problem; coverage is drawn without replacement from each pool, so every "
                            "configuration must hold the whole budget")
        return
    if budget < costs.min():
        raise UserError(f"{flag} {budget} tokens buys no sample of any configuration (the cheapest costs "
                        f"{costs.min():.0f} tokens per sample)")
    for c, (unit, cap) in enumerate(zip(costs, caps)):
        if (bought := int((budget + 1e-9) // unit)) > cap:
            raise UserError(f"{flag} {budget} tokens buys {bought} samples of {names[c]} ({unit:.0f} tokens each), "
                            f"but its pool holds {cap} for some problem; coverage is drawn without replacement")


def default_budgets(cost: Cost, costs: np.ndarray, caps: np.ndarray) -> list[int]:
    """1, 2, 4, 8, 16 samples that every pool holds; with token costs, as many mean samples' worth of tokens."""
    out = []
    for k in DEFAULT_BUDGETS:
        budget = k if cost == "samples" else int(round(k * float(costs.mean())))
        try:
            check_budget(budget, "", cost, costs, caps, [""] * len(caps))
        except UserError:
            continue
        out.append(budget)
    return sorted(set(out))


# ================================================================================================ the study


@dataclass
class _Data:
    p: np.ndarray              # training problems x configurations: success rates
    correct: np.ndarray        # held-out problems x configurations: correct samples
    size: np.ndarray           # held-out problems x configurations: samples
    costs: np.ndarray          # per configuration: 1, or mean completion tokens per sample on training
    caps: np.ndarray           # per configuration: the fewest samples of any studied problem


def _at(budget: int, data: _Data, names: Sequence[str], limit: int) -> BudgetResult:
    found = best_allocation(data.p, data.costs, data.caps, budget, limit)
    C = len(names)
    singles = []
    for c in range(C):
        n = min(int(data.caps[c]), int((budget + 1e-9) // data.costs[c]))
        counts = [n if j == c else 0 for j in range(C)]
        singles.append(Single(label=names[c], samples=n, train=expected_coverage(data.p, counts),
                              heldout=heldout_coverage(data.correct, data.size, counts)))
    best, _ = best_single(data.p, data.costs, data.caps, budget)
    return BudgetResult(
        budget=budget, allocation=dict(zip(names, found.counts)), method=found.method, evaluated=found.evaluated,
        spent=float(np.dot(found.counts, data.costs)), train=found.value,
        heldout=heldout_coverage(data.correct, data.size, found.counts), best_single=singles[best], singles=singles)


def allocate(run_dirs: Sequence[str | Path], budget: int, budgets: Sequence[int] | None = None,
             train_fraction: float = 0.5, seed: int = 0, cost: Cost = "samples", limit: int = DEFAULT_LIMIT,
             say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> AllocateReport:
    """The allocation at `budget` (and at each of `budgets`), found on the training problems and evaluated on
    the held-out ones. Bad input is a UserError; the configs are checked before any sample is read."""
    paths = [Path(d) for d in run_dirs]
    if len(paths) < 2:
        raise UserError("allocation needs at least two runs (sampling configurations) to choose between")
    resolved = [p.resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise UserError(f"the run {paths[i]} is given twice")
    configs = [_config(p) for p in paths]
    for path, config in zip(paths[1:], configs[1:]):
        if _task(config) != _task(configs[0]):
            raise UserError(f"runs of different tasks: {paths[0]} has {_task(configs[0])}, {path} has {_task(config)}; "
                            "allocate between runs of one task")
    runs = [_read(p, c) for p, c in zip(paths, configs)]
    common = set.intersection(*(set(r.correct) for r in runs))
    if not common:
        raise UserError("the runs have no finished problem with samples in common")
    for r in runs:
        if len(r.correct) > len(common):
            say(f"allocate: {len(r.correct) - len(common)} of {len(r.correct)} problems of {r.path} are not "
                "finished in every run; left out")
    train, heldout = split_problems(sorted(common), train_fraction, seed)
    settings = [_settings(c) for c in configs]
    names = labels(settings, [p.name for p in paths])

    def matrix(ids: Sequence[str], of: Callable[[np.ndarray], Any]) -> np.ndarray:
        return np.array([[of(r.correct[i]) for r in runs] for i in ids], dtype=float)

    sizes = matrix(sorted(common), len)
    caps = sizes.min(axis=0).astype(int)
    tokens = np.array([np.concatenate([r.tokens[i] for i in train]).mean() for r in runs])
    if cost == "tokens":
        for name, t in zip(names, tokens):
            if t <= 0:
                raise UserError(f"--cost tokens: {name} records no completion tokens on the training problems")
    costs = tokens if cost == "tokens" else np.ones(len(runs))
    check_budget(budget, "--budget", cost, costs, caps, names)
    for b in budgets or []:
        check_budget(b, "--budgets", cost, costs, caps, names)
    data = _Data(p=matrix(train, np.mean), correct=matrix(heldout, np.sum), size=matrix(heldout, len),
                 costs=costs, caps=caps)
    entries = [ConfigEntry(label=name, run=str(r.path), strategy=str(r.config.get("strategy")), model=s["model"],
                           temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
                           perturb=s["perturb"],
                           options={k: v for k, v in (r.config.get("strategy_options") or {}).items() if k != "n"},
                           pool=int(cap), tokens_per_sample=float(t), train_pass_at_1=float(data.p[:, c].mean()))
               for c, (name, r, s, cap, t) in enumerate(zip(names, runs, settings, caps, tokens))]
    grid = sorted(set(budgets)) if budgets else default_budgets(cost, costs, caps)
    result = _at(budget, data, names, limit)
    curve = [result if b == budget else _at(b, data, names, limit) for b in grid]
    task, task_options = _task(configs[0])
    return AllocateReport(task=str(task), task_options=task_options, cost=cost, budget=budget, seed=seed,
                          train_fraction=train_fraction, search_limit=limit, train_problems=train,
                          heldout_problems=heldout, configs=entries, result=result, curve=curve,
                          notes=_notes(entries, result))


def _notes(entries: Sequence[ConfigEntry], result: BudgetResult) -> list[str]:
    notes = []
    used = [e for e in entries if result.allocation[e.label] > 0]
    models = list(dict.fromkeys(e.model for e in used))
    if len(models) > 1:
        notes.append(f"the allocation draws from {len(models)} models ({', '.join(str(m) for m in models)}); the "
                     "mixture strategy runs one model, so run each model's components separately")
    if len({e.max_tokens for e in used}) > 1:
        notes.append("the chosen runs used different max_tokens; `tts eval --max-tokens` applies to every "
                     "component of the mixture")
    if result.method == "greedy":
        notes.append(f"more allocations fit the budget than the search limit, so the allocation is greedy with "
                     f"hill climbing ({result.evaluated} objective evaluations), not proven optimal")
    return notes
