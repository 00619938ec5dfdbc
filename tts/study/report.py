"""Write a scaling study out: scaling.json, scaling.csv, PNG plots and report.md
(docs/architecture.md, "The run folder").

Plots: coverage and every selector's accuracy against k (log-x, 95% bootstrap bands, the fitted
power law dashed, the fLaws ceiling dotted when verdicts had pass flags) and the same
against completion tokens per problem. Several studies (runs) are overlaid in one plot, one colour
per run. A scorer's own selectors (`best-of-n[<scorer>]`, `weighted-vote[<scorer>]`) are thinner,
with hollow markers: one line style per selector, one marker (and, for one run, one colour) per
scorer. report.md embeds the plots, states the headline numbers in sentences and tabulates each
scorer's quality (`scorer_table`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from tts.errors import UserError
from tts.study.adaptive_report import adaptive_section, draw_adaptive
from tts.study.schema import Curve, Point, ScalingFile, ScalingStudy, ScorerQuality

JSON_NAME = "scaling.json"
CSV_NAME = "scaling.csv"
K_PLOT = "scaling_k.png"
TOKENS_PLOT = "scaling_tokens.png"
REPORT_NAME = "report.md"

# How each curve is drawn (line style: a name or an (offset, dash pattern) tuple; marker); colour is the run's.
LineStyle = str | tuple[int, tuple[int, ...]]
STYLES: dict[str, tuple[LineStyle, str]] = {
    "coverage": ("-", "o"),
    "majority": ("--", "s"),
    "rpc": ("-.", "^"),
    "perplexity": (":", "v"),
    "prob-weighted-vote": ((0, (5, 1, 1, 1)), "D"),
    "best-of-n": ((0, (3, 1)), "P"),
    "score-weighted-vote": ((0, (1, 2)), "X"),
    "first-passing": ((0, (4, 2, 1, 2)), "*"),
}
# A scorer's own selectors: the line style of the selector; the marker (and for one run the colour) is the scorer's.
SCORER_CURVE = re.compile(r"^(best-of-n|weighted-vote)\[(.+)\]$")
SCORER_STYLES: dict[str, LineStyle] = {"best-of-n": (0, (3, 1, 1, 1, 1, 1)), "weighted-vote": (0, (7, 2))}
SCORER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
HEADLINE_KS = (1, 4, 16)
# With several runs in one plot, only these curves get their interval band (the rest would blur it).
BANDED_WHEN_OVERLAID = {"coverage", "majority", "rpc"}


# ================================================================================================ files


def load_scaling(folder: str | Path) -> ScalingFile:
    path = Path(folder) / JSON_NAME
    if not path.exists():
        raise UserError(f"{path} not found: run `tts scale {folder}` first")
    try:
        return ScalingFile.model_validate_json(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not a scaling study ({str(exc).splitlines()[0]})") from None


def write_json(data: ScalingFile, folder: Path) -> Path:
    path = folder / JSON_NAME
    path.write_text(data.model_dump_json(indent=1) + "\n")
    return path


def write_csv(data: ScalingFile, folder: Path) -> Path:
    """Long format, one row per (run, curve, k): easy to load into a dataframe and re-plot."""
    path = folder / CSV_NAME
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["run", "label", "metric", "k", "tokens", "value", "lo", "hi", "draws"])
        for study in data.studies:
            curves = [study.coverage, *study.selectors]
            if study.verifier and study.verifier.predicted:
                curves.append(Curve(name="flaws-predicted", label="fLaws Acc(k)", points=study.verifier.predicted))
            for curve in curves:
                for p in curve.points:
                    out.writerow([study.run, study.label, curve.name, p.k, f"{p.tokens:.1f}", f"{p.value:.6f}",
                                  "" if p.lo is None else f"{p.lo:.6f}", "" if p.hi is None else f"{p.hi:.6f}",
                                  "" if curve.draws is None else curve.draws])
    return path


# ================================================================================================ plots


def _scorers_of(study: ScalingStudy) -> list[str]:
    """The scorers with their own selector curves in a study, in curve order."""
    found = [m.group(2) for c in study.selectors if (m := SCORER_CURVE.match(c.name))]
    return list(dict.fromkeys(found))


def _draw_curve(ax, curve: Curve, x: np.ndarray, color, run_label: str, many_runs: bool,
                scorers: list[str]) -> None:
    scorer = SCORER_CURVE.match(curve.name)
    if scorer:  # thinner, hollow markers: told apart from the scorer-agnostic selectors at a glance
        linestyle, marker = SCORER_STYLES[scorer.group(1)], SCORER_MARKERS[scorers.index(scorer.group(2))
                                                                           % len(SCORER_MARKERS)]
        width, face = 1.1, "none"
    else:
        (linestyle, marker), width, face = STYLES.get(curve.name, ("-", ".")), 1.6, color
    y = np.array([p.value for p in curve.points])
    label = f"{curve.label} [{run_label}]" if many_runs else curve.label
    ax.plot(x, y, linestyle=linestyle, marker=marker, color=color, label=label, linewidth=width, markersize=5,
            markerfacecolor=face)
    lo = [p.lo for p in curve.points]
    hi = [p.hi for p in curve.points]
    banded = curve.name in BANDED_WHEN_OVERLAID if many_runs else not (scorer and len(scorers) > 1)
    if banded and all(v is not None for v in lo + hi):
        ax.fill_between(x, lo, hi, color=color, alpha=0.15 if curve.name == "coverage" else 0.07, linewidth=0)


def _plot(data: ScalingFile, path: Path, against_tokens: bool) -> Path:
    many = len(data.studies) > 1
    fig, ax = plt.subplots(figsize=(9.5, 5.5))
    # tab10 is a ListedColormap, which has .colors; the stubs type get_cmap as returning the Colormap base
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    scorer_colors = plt.get_cmap("Dark2").colors  # type: ignore[attr-defined]
    for i, study in enumerate(data.studies):
        color = colors[i % len(colors)]
        per_k = study.mean_tokens_per_sample if against_tokens else 1.0
        ks = np.array(study.ks, dtype=float)
        scorers = _scorers_of(study)
        for j, curve in enumerate([study.coverage, *study.selectors]):
            # One run: a colour per curve (per scorer for a scorer's selectors, from another palette).
            # Several runs: a colour per run, the curve told by its style.
            own = SCORER_CURVE.match(curve.name)
            one_run = (scorer_colors[scorers.index(own.group(2)) % len(scorer_colors)] if own
                       else colors[j % len(colors)])
            _draw_curve(ax, curve, ks * per_k, color if many else one_run, study.label, many, scorers)
        if against_tokens:
            draw_adaptive(ax, study, color if many else None, many)
        fit = study.power_law
        if fit is not None:
            dense = np.geomspace(1, max(study.ks), 100)
            ax.plot(dense * per_k, fit.predict(dense), linestyle=(0, (6, 3)), color=color, alpha=0.6, linewidth=1,
                    label=f"fit log C = {fit.a:.2f}·k^{fit.b:.2f}" + (f" [{study.label}]" if many else ""))
        v = study.verifier
        if v is not None and v.ceiling is not None:
            ax.axhline(v.ceiling, color=color, linestyle=":", linewidth=1.2,
                       label=f"fLaws ceiling {v.ceiling:.2f}" + (f" [{study.label}]" if many else ""))
            if v.predicted:
                ax.plot([p.k * per_k for p in v.predicted], [p.value for p in v.predicted], color=color,
                        linestyle=":", alpha=0.5, linewidth=1,
                        label="fLaws Acc(k)" + (f" [{study.label}]" if many else ""))
    if against_tokens:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda x, _: f"{x:,.0f}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("completion tokens per problem (k × mean tokens per sample)")
    else:
        ax.set_xscale("log", base=2)
        ticks = sorted({k for s in data.studies for k in s.ks})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(k) for k in ticks])
        ax.set_xlabel("samples per problem k")
    top = max([p.hi if p.hi is not None else p.value for s in data.studies
               for c in [s.coverage, *s.selectors] for p in c.points]
              + [s.verifier.ceiling for s in data.studies if s.verifier and s.verifier.ceiling is not None])
    ax.set_ylim(0, min(1.02, max(0.1, 1.15 * top)))  # a weak model's curves stay readable
    ax.set_ylabel("share of problems")
    title = " vs ".join(s.label for s in data.studies)
    ax.set_title(f"Coverage and selector accuracy: {title}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ================================================================================================ report.md


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _point(curve: Curve, k: int) -> Point:
    """A curve's point at a grid k (every curve of a study has a point at each of the study's ks)."""
    p = curve.at(k)
    if p is None:
        raise ValueError(f"curve {curve.name!r} has no point at k={k}")
    return p


def _with_ci(curve: Curve, k: int) -> str:
    p = curve.at(k)
    if p is None:
        return "n/a"
    if p.lo is None or p.hi is None:
        return _pct(p.value)
    return f"{_pct(p.value)} (95% CI {_pct(p.lo)}–{_pct(p.hi)})"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def headline(study: ScalingStudy) -> list[str]:
    """The headline numbers of one study, as sentences."""
    k_max = max(study.ks)
    ks = [k for k in HEADLINE_KS if k in study.ks] or [k_max]
    lines = ["Coverage (unbiased pass@k) is " + _join([f"{_with_ci(study.coverage, k)} at k={k}" for k in ks])
             + (f", and {_with_ci(study.coverage, k_max)} at k={k_max}" if k_max not in ks else "") + "."]
    named = [(name, label) for name, label in (("majority", "majority vote"), ("rpc", "RPC"),
                                               ("perplexity", "perplexity"))
             if study.curve(name) is not None]
    for name, label in named:
        curve = study.curve(name)
        assert curve is not None  # `named` keeps only the curves the study has
        lines.append(f"{label[0].upper() + label[1:]} accuracy: "
                     + ", ".join(f"{_pct(p.value)} at k={p.k}" for p in curve.points) + ".")
    # a scorer's own selectors are in the scorer quality table (at the largest k)
    others = [c for c in study.selectors if c.name not in {n for n, _ in named} and not SCORER_CURVE.match(c.name)]
    if others:
        lines.append(f"At k={k_max}: " + _join([f"{c.label} {_with_ci(c, k_max)}" for c in others]) + ".")
    fit = study.power_law
    if fit is None:
        lines.append("Too few coverage points lie strictly between 0 and 1 to fit the power law.")
    else:
        r2 = "n/a" if fit.r2 is None else f"{fit.r2:.4f}"
        lines.append(f"The exponentiated power law log C(k) = a·k^b fits coverage with a = {fit.a:.3f}, "
                     f"b = {fit.b:.3f} (R² = {r2}, {len(fit.ks)} points, {fit.method}).")
    comparison = _rpc_against_majority(study, k_max)
    if comparison:
        lines.append(comparison)
    v = study.verifier
    if v is not None and v.samples:
        names = ", ".join(v.verifiers) or "the scorers"
        text = (f"The scorers together ({names}) accept {_pct(v.false_positive_rate)} of incorrect samples "
                f"(false-positive rate f) and {_pct(v.true_positive_rate)} of correct ones; with per-sample "
                f"accuracy p = {_pct(v.sample_accuracy)}, the fLaws ceiling p/(p+(1−p)f) is {_pct(v.ceiling)}")
        first = study.curve("first-passing")
        if first is not None:
            text += f", beside a measured first-passing accuracy of {_with_ci(first, k_max)} at k={k_max}"
        lines.append(text + ".")
    if v is not None and v.scorers:
        lines.append(_best_scorer_sentence(v.scorers))
    return lines


def _intervals_overlap_everywhere(a: Curve, b: Curve) -> bool | None:
    """True if the 95% intervals of two curves overlap at every k, False if they are apart at some k,
    None if there are no intervals (--bootstrap 0)."""
    pairs = [(p, q) for p in a.points if (q := b.at(p.k)) is not None]
    if not pairs:
        return None
    overlap = True
    for p, q in pairs:
        if p.lo is None or p.hi is None or q.lo is None or q.hi is None:
            return None
        overlap = overlap and p.lo <= q.hi and q.lo <= p.hi
    return overlap


def _rpc_against_majority(study: ScalingStudy, k_max: int) -> str | None:
    """The sentence comparing RPC with majority vote, or why the data supports no comparison."""
    majority, rpc = study.curve("majority"), study.curve("rpc")
    if majority is None or rpc is None:
        return None
    values = [p.value for c in study.selectors for p in c.points]
    eps = 1e-12
    if max(values) <= eps:
        cover = _point(study.coverage, k_max)
        why = (f"coverage is 0.0% at every k ≤ {k_max}" if max(p.value for p in study.coverage.points) <= eps else
               f"no selector picks a correct answer at any k, although coverage reaches {_pct(cover.value)} "
               f"at k={k_max}")
        return (f"Nothing was solved: every selector scores 0.0% ({why}), so no comparison between selectors "
                "(RPC against majority vote included) can be made.")
    if min(values) >= 1 - eps:
        return ("Every selector scores 100.0% at every k, so nothing separates them and no comparison between "
                "selectors (RPC against majority vote included) can be made.")
    target = _point(majority, k_max).value
    if target <= eps:
        return (f"Majority vote scores 0.0% at k={k_max}, so there is nothing for RPC to reach: no comparison "
                "of the samples each needs can be made.")
    overlap = _intervals_overlap_everywhere(rpc, majority)
    if overlap:
        return (f"RPC against majority@{k_max}'s accuracy ({_pct(target)}): the difference is not resolved. "
                f"The 95% bootstrap intervals of RPC and majority vote overlap at every k (at k={k_max}: RPC "
                f"{_with_ci(rpc, k_max)}, majority {_with_ci(majority, k_max)}), so this data cannot say which "
                "of the two is ahead at any budget; more problems would narrow the intervals.")
    unsure = (" (no bootstrap intervals were computed, so whether this is resolved is unknown)"
              if overlap is None else "")
    reached = study.smallest_k_reaching("rpc", target)
    if reached is None:
        best = max(rpc.points, key=lambda p: p.value)
        return (f"RPC does not reach majority@{k_max}'s accuracy ({_pct(target)}) at any k ≤ {k_max}; "
                f"its best is {_pct(best.value)} at k={best.k}{unsure}.")
    return (f"RPC first reaches majority@{k_max}'s accuracy ({_pct(target)}, point estimates) at k = {reached}"
            + (f", {k_max / reached:.0f}x fewer samples" if reached < k_max else "") + f"{unsure}.")


def _table(study: ScalingStudy) -> list[str]:
    curves = [study.coverage, *study.selectors]
    head = "| k | tokens/problem | " + " | ".join(c.name for c in curves) + " |"
    rows = [head, "|" + "---|" * (len(curves) + 2)]
    for k in study.ks:
        cells = []
        for c in curves:
            p = _point(c, k)
            ci = "" if p.lo is None or p.hi is None else f" [{100 * p.lo:.1f}, {100 * p.hi:.1f}]"
            cells.append(f"{100 * p.value:.1f}{ci}")
        rows.append(f"| {k} | {_point(study.coverage, k).tokens:.0f} | " + " | ".join(cells) + " |")
    return rows


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def scorer_line(q: ScorerQuality) -> str:
    """One scorer's quality on one line (the `tts scale` summary)."""
    fpr = _num(q.false_positive_rate) if q.flagged else "n/a"
    return (f"scorer {q.key} ({q.level}): samples={q.samples} correct={q.correct} AUROC={_num(q.auroc)} "
            f"FPR={fpr} fLaws-ceiling={_num(q.ceiling)} mean-score correct={_num(q.mean_score_correct)} "
            f"incorrect={_num(q.mean_score_incorrect)}")


def _best_scorer_sentence(rows: list[ScorerQuality]) -> str:
    ranked = [q for q in rows if q.auroc is not None]
    if not ranked:
        return ("No scorer saw both correct and incorrect samples, so no AUROC can be computed "
                "(see the scorer quality table).")
    best = max(ranked, key=lambda q: q.auroc or 0.0)
    return (f"Of {len(rows)} scorer row(s), {best.key} separates correct from incorrect samples best "
            f"(AUROC {best.auroc:.3f} on {best.samples} samples; see the scorer quality table).")


def scorer_table(study: ScalingStudy) -> list[str]:
    """The scorer quality table: one row per scorer and per aggregation of a process scorer's step scores."""
    v = study.verifier
    if v is None or not v.scorers:
        return []
    k = max(study.ks)
    rows = ["| scorer | level | samples | correct | AUROC | FPR at threshold | fLaws ceiling | mean score "
            f"(correct) | mean score (incorrect) | best-of-n@{k} | weighted-vote@{k} |", "|" + "---|" * 11]
    for q in v.scorers:
        cells = []
        for name in ("best-of-n", "weighted-vote"):
            curve = study.curve(f"{name}[{q.scorer}]") if q.aggregation is None else None
            point = curve.at(k) if curve is not None else None
            cells.append("–" if point is None else _pct(point.value))
        fpr = _pct(q.false_positive_rate) if q.flagged else "n/a"
        rows.append(f"| {q.key} | {q.level} | {q.samples} | {q.correct} | {_num(q.auroc)} | {fpr} | "
                    f"{_pct(q.ceiling)} | {_num(q.mean_score_correct)} | {_num(q.mean_score_incorrect)} | "
                    + " | ".join(cells) + " |")
    notes = ["", ("AUROC: ROC AUC of the score for correct against incorrect samples (oracle), n/a with one "
                  "class. FPR: share of incorrect samples the scorer passes at its own threshold (n/a without "
                  "pass flags, or for an aggregation other than the recorded score). fLaws ceiling: "
                  "p/(p+(1−p)·FPR), the accuracy of resampling until accepted as k grows (p: share of the "
                  "flagged samples that are correct). `scorer:last|min|prod|mean` rows aggregate a process "
                  "scorer's step scores.")]
    return rows + notes


def _method_notes(study: ScalingStudy) -> list[str]:
    s = study.settings
    notes = [(f"Selector accuracy is the expected accuracy on a random k-subset of each problem's pool, ties "
              f"credited 1/#tied; subsets are enumerated when C(n, k) ≤ {s.draws}, else {s.draws} seeded draws "
              f"(seed {s.seed}). Intervals: 95% percentile bootstrap over problems ({s.bootstrap} resamples).")]
    for c in study.selectors:
        exactness = "exact" if c.draws is None else f"{c.draws} draws per problem and k"
        notes.append(f"{c.label}: {exactness}" + (f"; {c.note}" if c.note else "") + ".")
    t = study.timings
    if t:
        notes.append(f"Analysis time: {t.get('total_seconds', 0):.1f} s ({t.get('grouping_seconds', 0):.1f} s "
                     f"grouping answers, {int(t.get('equivalence_calls', 0))} equivalence checks; "
                     f"{int(t.get('weibull_fits', 0))} Weibull fits).")
    return notes


def render_markdown(data: ScalingFile) -> str:
    title = " vs ".join(s.label for s in data.studies)
    out = [f"# Scaling study: {title}", ""]
    for study in data.studies:
        out.append(f"- `{study.run}`: task **{study.task}**, model `{study.model or 'default'}`, strategy "
                   f"`{study.strategy}`; {study.problems} problems × "
                   + (f"{study.n_min}" if study.n_min == study.n_max else f"{study.n_min}–{study.n_max}")
                   + f" samples, {study.mean_tokens_per_sample:.0f} completion tokens per sample on average.")
    out += ["", f"![Coverage and selector accuracy against k]({K_PLOT})", "",
            f"![Coverage and selector accuracy against completion tokens]({TOKENS_PLOT})", ""]
    for study in data.studies:
        out += [f"## {study.label}" if len(data.studies) > 1 else "## Headline numbers", ""]
        out += headline(study)
        out += [""] + _table(study) + [""]
        table = scorer_table(study)
        if table:
            out += ["### Scorer quality" if len(data.studies) > 1 else "## Scorer quality", ""] + table + [""]
        out += adaptive_section(study, "###" if len(data.studies) > 1 else "##")
        out += ["Method notes:", ""]
        out += [f"- {n}" for n in _method_notes(study)] + [""]
    out += [(f"Data: `{JSON_NAME}` (everything, per-problem coverage included) and `{CSV_NAME}` "
             "(one row per run, curve and k)."), ""]
    return "\n".join(out)


def write_report(data: ScalingFile, folder: str | Path, write_data: bool = True) -> list[Path]:
    """All outputs into `folder`: scaling.json and scaling.csv (unless only re-rendering), plots, report.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_json(data, folder)] if write_data else []
    written.append(write_csv(data, folder))
    written.append(_plot(data, folder / K_PLOT, against_tokens=False))
    written.append(_plot(data, folder / TOKENS_PLOT, against_tokens=True))
    path = folder / REPORT_NAME
    path.write_text(render_markdown(data))
    written.append(path)
    return written
