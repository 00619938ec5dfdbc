"""`tts scale`, `tts report`, `tts compare` and `tts allocate`: studies of stored run folders (no generation).

    tts scale RUN_DIR [RUN_DIR ...] [--draws D] [--rpc-fits F] [--seed S] [--bootstrap B] [--k-max K]
              [--workers W] [--out DIR]
              [--no-adaptive | --ac-threshold P,... --early-stop-tau T,... --deepconf-keep PCT,...]
    tts report RUN_DIR
    tts compare RUN_DIR [RUN_DIR ...] --out DIR [--pool RUN_DIR] [--budgets 4,8,16] [--bootstrap B] [--seed S]
    tts allocate RUN_DIR RUN_DIR [...] --budget B --out DIR [--budgets 1,2,4] [--train-fraction F] [--seed S]
                 [--cost samples|tokens]

`register(subparsers)` adds them to the `tts` parser; handlers return an exit code and raise
`UserError` for bad input, which `tts.cli.main` prints as one line with exit code 2. Flags are
validated here (argparse types, `cmd_scale`), not in `tts.study`, whose functions take plain
arguments. The curves are every study selector registered under the `tts.selectors` entry points,
then `best-of-n[<scorer>]` and `weighted-vote[<scorer>]` for every scorer recorded in the run, whose
quality (AUROC, false-positive rate, fLaws ceiling) the summary prints one line each; then the adaptive
methods replayed on the pool against majority and RPC at equal spend (docs/adaptive-replay.md). numpy, scipy
and matplotlib are imported only when a command runs, so `tts --help` stays fast. `tts compare` puts
runs side by side at matched compute (tts.study.compare, docs/compare.md); `tts allocate` finds OSCA's
mix of sampling configurations (tts.study.allocate, docs/allocate.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tts.cli_args import list_of, non_negative_int, positive_int, positive_int_list, probability, writable_folder
from tts.errors import UserError

ADAPTIVE_OPTIONS = ("ac_threshold", "early_stop_tau", "deepconf_keep")


def percent(text: str) -> float:
    """A share in percent, 1 <= x <= 100 (--deepconf-keep, as deepconf's keep_percent)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 1 <= value <= 100:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a percentage from 1 to 100, got {text!r}")
    return value


def register(subparsers) -> None:
    """Add `scale`, `report`, `compare` and `allocate` to the `tts` subcommands (each sets `func`)."""

    sc = subparsers.add_parser(
        "scale", help="coverage, selector accuracy (majority, RPC, perplexity, ...) and the power-law fit "
                      "at every k, from a run's stored samples; writes scaling.json/.csv, plots and report.md")
    sc.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folder(s) made by `tts eval`; several are overlaid")
    sc.add_argument("--draws", type=positive_int, default=200,
                    help="random k-subsets per problem and k (subsets are enumerated when there are fewer)")
    sc.add_argument("--rpc-fits", type=positive_int, default=None,
                    help="most Weibull fits per problem and k for RPC (default: sized to about 10000 fits in all)")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--bootstrap", type=non_negative_int, default=1000,
                    help="bootstrap resamples over problems for the 95%% intervals")
    sc.add_argument("--k-max", type=positive_int, default=None, help="largest k (default: the smallest pool size)")
    sc.add_argument("--workers", type=positive_int, default=1,
                    help="processes for the selectors (1319 problems x 64 samples take about 17 s with one)")
    sc.add_argument("--out", default=None, type=writable_folder, help="output folder (default: the first RUN_DIR)")
    sc.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                    help="replay adaptive-consistency, early-stop (per scorer) and deepconf (needs top-20 token "
                         "traces) on random orders of each pool, against majority and RPC at equal spend")
    sc.add_argument("--ac-threshold", type=list_of(probability), default=None, metavar="P[,P...]",
                    help="adaptive-consistency: stop once the leader is the majority with this probability "
                         "(default 0.95; several, comma-separated, give one row each)")
    sc.add_argument("--early-stop-tau", type=list_of(probability), default=None, metavar="T[,T...]",
                    help="early-stop: the score (or weighted vote share) that stops sampling (default 0.9)")
    sc.add_argument("--deepconf-keep", type=list_of(percent), default=None, metavar="PCT[,PCT...]",
                    help="deepconf: percent of traces kept, offline and by the online threshold (default 10)")
    sc.set_defaults(func=cmd_scale)

    rp = subparsers.add_parser(
        "report", help="rewrite report.md, plots and scaling.csv from a folder's scaling.json "
                       "(runs `tts scale` with defaults first if there is none)")
    rp.add_argument("run", metavar="RUN_DIR")
    rp.set_defaults(func=cmd_report)

    cp = subparsers.add_parser(
        "compare", help="runs side by side at matched compute: accuracy with bootstrap intervals against tokens, "
                        "FLOPs and wall time; writes compare.csv, compare.md and compare.png (docs/compare.md)")
    cp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders made by `tts eval` (one task, one model)")
    cp.add_argument("--out", required=True, type=writable_folder, help="output folder")
    cp.add_argument("--pool", default=None, metavar="RUN_DIR",
                    help="a run of n independent samples per problem: adds self-consistency and weighted-vote "
                         "points on its first k samples at each budget")
    cp.add_argument("--budgets", type=positive_int_list, default=None, metavar="K,K,...",
                    help="budgets k for the --pool points (default: the runs' own n that the pool can serve)")
    cp.add_argument("--bootstrap", type=non_negative_int, default=1000,
                    help="bootstrap resamples over problems for the 95%% intervals")
    cp.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap resamples")
    cp.set_defaults(func=cmd_compare)

    al = subparsers.add_parser(
        "allocate", help="OSCA: the mix of sampling configurations (one run each) that maximises coverage at a "
                         "budget, chosen on training problems and evaluated on held-out ones; writes allocate.json, "
                         "allocate.md and mixture.json for `tts eval -s mixture` (docs/allocate.md)")
    al.add_argument("runs", nargs="+", metavar="RUN_DIR",
                    help="repeated-sampling run folders of one task, one per sampling configuration")
    al.add_argument("--budget", required=True, type=positive_int,
                    help="samples per problem (with --cost tokens: completion tokens per problem)")
    al.add_argument("--budgets", type=positive_int_list, default=None, metavar="B,B,...",
                    help="budgets of the coverage table (default 1,2,4,8,16 that every pool holds; with --cost "
                         "tokens, as many mean samples' worth of tokens)")
    al.add_argument("--train-fraction", type=open_fraction, default=0.5,
                    help="share of the common problems the allocation is chosen on; the rest are held out")
    al.add_argument("--seed", type=non_negative_int, default=0, help="seed of the training/held-out split")
    al.add_argument("--cost", choices=["samples", "tokens"], default="samples",
                    help="what a budget counts: samples, or completion tokens (a sample of a configuration costs "
                         "its mean on the training problems)")
    al.add_argument("--out", required=True, type=writable_folder, help="output folder")
    al.set_defaults(func=cmd_allocate)


def open_fraction(text: str) -> float:
    """A share strictly between 0 and 1 (--train-fraction: both parts must keep problems)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and less than 1, got {text!r}")
    return value


def _unique_labels(paths: list[Path]) -> list[str]:
    """Folder names, made unique with their parent's name where two runs share one."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{name}" if names.count(name) > 1 else name for p, name in zip(paths, names)]


def cmd_scale(args: argparse.Namespace) -> int:
    from tts.study import ScalingFile, study_run
    from tts.study.adaptive_study import AdaptiveSettings

    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not run.is_dir():
            raise UserError(f"run folder not found: {run}")
    if args.seed < 0:
        raise UserError(f"--seed must not be negative, got {args.seed}")
    given = {name: getattr(args, name) for name in ADAPTIVE_OPTIONS if getattr(args, name) is not None}
    if given and not args.adaptive:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UserError(f"{flags} set the adaptive replays, which --no-adaptive turns off")
    adaptive = AdaptiveSettings(**given) if args.adaptive else None
    studies = [study_run(run, draws=args.draws, rpc_fits=args.rpc_fits, seed=args.seed, k_max=args.k_max,
                         bootstrap=args.bootstrap, workers=args.workers, label=label, adaptive=adaptive)
               for run, label in zip(runs, _unique_labels(runs))]
    out = Path(args.out) if args.out else runs[0]
    written = _write(ScalingFile(studies=studies), out)
    for study in studies:
        _print_summary(study)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tts.study import ScalingFile, study_run
    from tts.study.adaptive_study import AdaptiveSettings
    from tts.study.report import JSON_NAME, load_scaling

    folder = Path(args.run)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    if (folder / JSON_NAME).exists():
        written = _write(load_scaling(folder), folder, write_data=False)
    else:
        written = _write(ScalingFile(studies=[study_run(folder, adaptive=AdaptiveSettings())]), folder)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tts.study.compare import compare, render_markdown, write_comparison

    for run in [*args.runs, *([args.pool] if args.pool else [])]:
        if not Path(run).is_dir():
            raise UserError(f"run folder not found: {run}")
    if args.budgets is not None and args.pool is None:
        raise UserError("--budgets is only for --pool")
    data = compare(args.runs, args.pool, args.budgets, bootstrap=args.bootstrap, seed=args.seed)
    written = write_comparison(data, Path(args.out))
    print(render_markdown(data), end="")
    print("wrote: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def cmd_allocate(args: argparse.Namespace) -> int:
    from tts.study.allocate import allocate
    from tts.study.allocate_report import MIXTURE_NAME, render_markdown, write_allocation

    for run in args.runs:
        if not Path(run).is_dir():
            raise UserError(f"run folder not found: {run}")
    report = allocate(args.runs, args.budget, args.budgets, train_fraction=args.train_fraction, seed=args.seed,
                      cost=args.cost)
    written = write_allocation(report, Path(args.out))
    print(render_markdown(report, Path(args.out) / MIXTURE_NAME), end="")
    print("wrote: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def _write(data, folder: Path, write_data: bool = True) -> list[Path]:
    from tts.study.report import write_report

    try:
        return write_report(data, folder, write_data=write_data)
    except OSError as exc:
        raise UserError(f"cannot write the study into {folder}: {exc.strerror or exc}") from None


def _print_summary(study) -> None:
    k_max = max(study.ks)
    cover = "  ".join(f"@{p.k}={p.value:.3f}" for p in study.coverage.points)
    print(f"{study.label}: {study.problems} problems x {study.n_min} samples; coverage {cover}")
    print(f"  at k={k_max}: " + "  ".join(f"{c.name}={c.at(k_max).value:.3f}" for c in study.selectors))
    if study.power_law:
        fit = study.power_law
        r2 = "n/a" if fit.r2 is None else f"{fit.r2:.4f}"
        print(f"  power law log C(k) = a k^b: a={fit.a:.3f} b={fit.b:.3f} R^2={r2}")
    if study.verifier is not None:
        from tts.study.report import scorer_line

        for quality in study.verifier.scorers:
            print("  " + scorer_line(quality))
    from tts.study.adaptive_report import summary_line

    for point in study.adaptive:
        print("  adaptive " + summary_line(point, study.adaptive))
    for why in study.adaptive_skipped:
        print("  adaptive not replayed: " + why)
