"""What the `tts` command prints: a run's metrics with what each number means, and `tts list`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tts import registry


def _print_metrics(out: Path, metrics: dict[str, Any], engine_log: Path | None = None) -> None:
    """The run's numbers, each with what it means."""
    u, cov = metrics["usage"], metrics["coverage"]
    print(f"run folder: {out}" + (f"  (engine output: {engine_log.name}; --verbose shows it here)"
                                  if engine_log else ""))
    print(f"{metrics['problems']} problems; the share of them where")
    print(f"  {'accuracy':<12}{metrics['accuracy']:.3f}  the answer the strategy chose is correct")
    for key, value in cov.items():  # "pass@k": the unbiased estimate from the samples drawn
        k = key.split("@")[-1]
        what = "one sample is correct" if k == "1" else f"at least one of {k} samples is correct"
        print(f"  {'coverage@' + k:<12}{value:.3f}  {what}")
    rate = metrics.get("completion_tokens_per_second_this_session")
    seconds = metrics.get("session_seconds")
    print(f"tokens: {u['completion_tokens']} generated, {u['prompt_tokens']} prompt ({u['cached_tokens']} cached)"
          + (f"; {seconds:.0f} s, {rate:.1f} tok/s" if rate and seconds
             else "  (nothing new generated: resumed a finished run)"))
    if u.get("scorer_calls") or u.get("verifier_calls"):
        print(f"scoring: {u.get('scorer_prompt_tokens', 0)} prompt tokens ({u.get('scorer_cached_tokens', 0)} cached), "
              f"{u.get('scorer_completion_tokens', 0)} generated in {u.get('scorer_calls', 0)} engine calls; "
              f"{u.get('verifier_calls', 0)} verifier checks")
    gen, score = u.get("generator_flops"), u.get("scorer_flops")
    if gen:
        share = f" ({score / gen:.1%} of generation)" if score is not None else ""
        print(f"FLOPs (2 x parameters x tokens, prefix cache discounted): generation {gen:.3g}, scoring "
              f"{'unknown' if score is None else f'{score:.3g}'}{share}")


def _option_help(kind: str, name: str) -> str:
    """ "key=default, ..." for a plugin's declared options (what -o / --task-option / --backend-option
    accept); a strategy's n is left out (it is -n)."""
    try:
        model = registry.options_model(kind, name)
    except ImportError:
        return ""
    if model is None:
        return ""
    parts = []
    for key, field in model.model_fields.items():
        if kind == "strategies" and key == "n":
            continue
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        parts.append(f"{key}={default if len(default) <= 40 else default[:37] + '...'}")
    return ", ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    flags = {"strategies": "-o KEY=VALUE", "tasks": "--task-option KEY=VALUE", "backends": "--backend-option KEY=VALUE",
             "scorers": "--scorer-option KEY=VALUE"}
    for kind in registry.KINDS:
        print(f"{kind}:")
        for name, description in registry.describe(kind):
            print(f"  {name:<20} {description}")
            options = _option_help(kind, name) if kind in flags else ""
            if options:
                print(f"  {'':<20} options ({flags[kind]}): {options}")
    return 0
