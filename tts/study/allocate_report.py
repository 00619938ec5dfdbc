"""`tts allocate`'s files: allocate.json (the whole study), allocate.md (printed too) and mixture.json (the
allocation as a file the `mixture` strategy runs: `tts eval -s mixture -o mixture=PATH -n TOTAL`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tts.errors import UserError
from tts.mixture import MixtureComponent, MixtureFile
from tts.study.allocate import AllocateReport, BudgetResult

JSON_NAME, MD_NAME, MIXTURE_NAME = "allocate.json", "allocate.md", "mixture.json"


def mixture_of(report: AllocateReport) -> MixtureFile:
    """The allocation at the report's budget: one component per configuration that gets samples."""
    result = report.result
    components = [MixtureComponent(label=e.label, n=result.allocation[e.label], temperature=e.temperature,
                                   top_p=e.top_p, perturb=e.perturb, model=e.model, run=e.run)
                  for e in report.configs if result.allocation[e.label] > 0]
    unit = "samples" if report.cost == "samples" else "tokens"
    return MixtureFile(components=components, task=report.task,
                       note=f"tts allocate at a budget of {report.budget} {unit} per problem: held-out coverage "
                            f"{result.heldout:.4f}, best single configuration {result.best_single.heldout:.4f}")


def eval_command(report: AllocateReport, mixture_path: Path) -> str:
    """The `tts eval` line that runs the mixture (one model: the components' own, when they share one)."""
    mixture = mixture_of(report)
    models = mixture.models()
    parts = ["tts", "eval", "--task", report.task, "-s", "mixture", "-o", f"mixture={mixture_path}",
             "-n", str(mixture.total)]
    for key, value in report.task_options.items():
        parts += ["--task-option", f"{key}={json.dumps(value)}"]
    if len(models) == 1 and models[0]:
        parts += ["-m", str(models[0])]
    return shlex.join(parts)


def _allocation(result: BudgetResult) -> str:
    return ", ".join(f"{label} x{n}" for label, n in result.allocation.items() if n) or "nothing"


def _search(result: BudgetResult, limit: int) -> str:
    if result.method == "exhaustive":
        return f"exhaustive over {result.evaluated} allocations"
    return f"greedy + hill climbing (more than {limit} allocations)"


def render_markdown(report: AllocateReport, mixture_path: Path | None = None) -> str:
    unit = "samples" if report.cost == "samples" else "tokens"
    r = report.result
    lines = [
        "# Sample compute allocation (OSCA)", "",
        f"{report.paper}. Task {report.task}; {len(report.configs)} configurations; "
        f"{len(report.train_problems) + len(report.heldout_problems)} problems every run finished, "
        f"{len(report.train_problems)} for choosing (training) and {len(report.heldout_problems)} held out "
        f"(split seed {report.seed}). Budgets are {unit} per problem. Held-out coverage draws each configuration's "
        "samples without replacement from its own pool (docs/allocate.md).", "",
        "## Configurations", "",
        "| configuration | run | model | T | top_p | perturb | pool | tokens/sample | training pass@1 |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {e.label} | {e.run} | {e.model or 'default'} | {e.temperature:g} | {e.top_p:g} | {e.perturb or '-'} "
          f"| {e.pool} | {e.tokens_per_sample:.0f} | {e.train_pass_at_1:.3f} |" for e in report.configs), "",
        f"## Allocation at {report.budget} {unit} per problem", "",
        f"Search: {_search(r, report.search_limit)}. Allocation: {_allocation(r)} ({r.spent:.0f} {unit} per "
        "problem).", "",
        f"- held-out coverage: **{r.heldout:.4f}** (training objective {r.train:.4f})",
        f"- best single configuration on training, {r.best_single.label} x{r.best_single.samples}: held-out "
        f"{r.best_single.heldout:.4f} (training {r.best_single.train:.4f})",
        f"- difference: {r.heldout - r.best_single.heldout:+.4f}", "",
        "| single configuration | samples | training | held-out |", "|---|---|---|---|",
        *(f"| {s.label} | {s.samples} | {s.train:.4f} | {s.heldout:.4f} |" for s in r.singles), "",
        "## Coverage at each budget", "",
        f"| budget ({unit}) | allocation | search | training | held-out | best single (training) | its held-out "
        "| difference |", "|---|---|---|---|---|---|---|---|",
        *(f"| {b.budget} | {_allocation(b)} | {b.method} | {b.train:.4f} | {b.heldout:.4f} | "
          f"{b.best_single.label} x{b.best_single.samples} | {b.best_single.heldout:.4f} | "
          f"{b.heldout - b.best_single.heldout:+.4f} |" for b in report.curve),
    ]
    if mixture_path is not None:
        lines += ["", "## Run the mixture", "", "```bash", eval_command(report, mixture_path), "```"]
    lines += [f"\nNote: {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def write_allocation(report: AllocateReport, folder: Path) -> list[Path]:
    """allocate.json, allocate.md and mixture.json into `folder` (created); a UserError if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data, md, mixture = folder / JSON_NAME, folder / MD_NAME, folder / MIXTURE_NAME
        data.write_text(report.model_dump_json(indent=2) + "\n")
        mixture.write_text(mixture_of(report).model_dump_json(indent=2, exclude_none=True) + "\n")
        md.write_text(render_markdown(report, mixture))
        return [data, md, mixture]
    except OSError as exc:
        raise UserError(f"cannot write the allocation into {folder}: {exc.strerror or exc}") from None
