"""The adaptive section of report.md and its markers on the accuracy-against-tokens plot
(docs/adaptive-replay.md). Kept apart from report.py, which draws and writes everything else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tts.study.schema import AdaptivePoint, ScalingStudy

MARKERS = ("*", "p", "h", "8", "d", "H", "<", ">")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(value: float | None, lo: float | None, hi: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    fmt = (lambda x: f"{100 * x:+.1f}") if signed else (lambda x: f"{100 * x:.1f}")
    return fmt(value) + ("" if lo is None or hi is None else f" [{fmt(lo)}, {fmt(hi)}]")


def options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())


SWEPT = ("threshold", "tau", "keep_percent")  # the options `tts scale` can give several values of


def display_name(p: AdaptivePoint, points: Sequence[AdaptivePoint]) -> str:
    """The method's name, with its swept option when the study replayed the method at several values."""
    if sum(q.name == p.name for q in points) < 2:
        return p.name
    return p.name + "".join(f" {k}={p.options[k]:g}" for k in SWEPT if isinstance(p.options.get(k), float | int))


def summary_line(p: AdaptivePoint, points: Sequence[AdaptivePoint] = ()) -> str:
    """One method on one line (the `tts scale` summary)."""
    return (f"{display_name(p, points)}: accuracy={_pct(p.accuracy)} samples={p.mean_samples:.2f} "
            f"tokens={p.mean_tokens:.0f} "
            f"saving={_pct(p.saving)} vs majority@{p.budget}; at equal tokens majority={_pct(p.majority_at_tokens)} "
            f"rpc={_pct(p.rpc_at_tokens)}")


def _row(p: AdaptivePoint) -> str:
    cells = [f"`{p.name}`", options_text(p.options), _ci(p.accuracy, p.lo, p.hi), f"{p.mean_samples:.2f}",
             f"{p.mean_tokens:.0f}", _pct(p.saving), _pct(p.majority_at_tokens), _pct(p.rpc_at_tokens),
             _ci(p.vs_majority, p.vs_majority_lo, p.vs_majority_hi, signed=True), _pct(p.majority_at_samples),
             _pct(p.rpc_at_samples)]
    return "| " + " | ".join(cells) + " |"


def adaptive_section(study: ScalingStudy, heading: str = "##") -> list[str]:
    """The table of replayed adaptive methods and the lines saying which were not replayed (empty if neither)."""
    if not study.adaptive and not study.adaptive_skipped:
        return []
    out = [f"{heading} Adaptive compute at equal spend", ""]
    if study.adaptive:
        first = study.adaptive[0]
        ref = f"majority@{first.budget}: {_pct(first.reference_accuracy)} with {first.reference_samples} samples, " \
              f"{(first.reference_tokens or 0):.0f} tokens per problem"
        out += [f"Each method replayed on {first.draws} random orders of every problem's pool, budget "
                f"{first.budget} samples ({ref}). Accuracy in %, 95% bootstrap interval over problems.", "",
                "| method | options | accuracy | samples | tokens | tokens saved vs majority@"
                f"{first.budget} | majority at equal tokens | RPC at equal tokens | − majority at equal tokens "
                "(paired) | majority at equal samples | RPC at equal samples |", "|" + "---|" * 11]
        out += [_row(p) for p in study.adaptive]
        out += ["", ("Spend is the completion tokens generated per problem (a DeepConf trace stopped online counts "
                     "up to its stop); 'at equal tokens/samples' is the curve's accuracy interpolated linearly "
                     "between the two grid k that bracket the method's mean spend (n/a outside the grid).")]
    out += [f"- not replayed: {why}" for why in study.adaptive_skipped]
    return out + [""]


def draw_adaptive(ax, study: ScalingStudy, color, many_runs: bool) -> None:
    """Markers (with their 95% interval) at each method's mean tokens and accuracy on the tokens plot.

    color None (one run): a colour per method; else the run's colour, the method told by its marker.
    """
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("Set1").colors  # type: ignore[attr-defined]  # a ListedColormap
    for j, p in enumerate(study.adaptive):
        c = palette[j % len(palette)] if color is None else color
        err = None if p.lo is None or p.hi is None else [[max(p.accuracy - p.lo, 0)], [max(p.hi - p.accuracy, 0)]]
        label = f"{display_name(p, study.adaptive)} (adaptive)" + (f" [{study.label}]" if many_runs else "")
        ax.errorbar([p.mean_tokens], [p.accuracy], yerr=err, marker=MARKERS[j % len(MARKERS)], markersize=9,
                    color=c, ecolor=c, elinewidth=1, capsize=3, linestyle="none", label=label,
                    markeredgecolor="black", markeredgewidth=0.6)
