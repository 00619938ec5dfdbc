"""`tts scale`, `tts report` and `tts compare`: studies of stored run folders (no generation).

    tts scale RUN_DIR [RUN_DIR ...] [--draws D] [--rpc-fits F] [--seed S] [--bootstrap B] [--k-max K]
              [--workers W] [--out DIR]
    tts report RUN_DIR
    tts compare RUN_DIR [RUN_DIR ...] --out DIR [--pool RUN_DIR] [--budgets 4,8,16] [--bootstrap B] [--seed S]

`register(subparsers)` adds them to the `tts` parser; handlers return an exit code and raise
`UserError` for bad input, which `tts.cli.main` prints as one line with exit code 2. Flags are
validated here (argparse types, `cmd_scale`), not in `tts.study`, whose functions take plain
arguments. The curves are every study selector registered under the `tts.selectors` entry points,
then `best-of-n[<scorer>]` and `weighted-vote[<scorer>]` for every scorer recorded in the run, whose
quality (AUROC, false-positive rate, fLaws ceiling) the summary prints one line each. numpy, scipy
and matplotlib are imported only when a command runs, so `tts --help` stays fast. `tts compare` puts
runs side by side at matched compute (tts.study.compare, docs/compare.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tts.cli_args import non_negative_int, positive_int, positive_int_list, writable_folder
from tts.errors import UserError


def register(subparsers) -> None:
    """Add `scale`, `report` and `compare` to the `tts` subcommands (each sets `func`)."""

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


def _unique_labels(paths: list[Path]) -> list[str]:
    """Folder names, made unique with their parent's name where two runs share one."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{name}" if names.count(name) > 1 else name for p, name in zip(paths, names)]


def cmd_scale(args: argparse.Namespace) -> int:
    from tts.study import ScalingFile, study_run

    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not run.is_dir():
            raise UserError(f"run folder not found: {run}")
    if args.seed < 0:
        raise UserError(f"--seed must not be negative, got {args.seed}")
    studies = [study_run(run, draws=args.draws, rpc_fits=args.rpc_fits, seed=args.seed, k_max=args.k_max,
                         bootstrap=args.bootstrap, workers=args.workers, label=label)
               for run, label in zip(runs, _unique_labels(runs))]
    out = Path(args.out) if args.out else runs[0]
    written = _write(ScalingFile(studies=studies), out)
    for study in studies:
        _print_summary(study)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tts.study import ScalingFile, study_run
    from tts.study.report import JSON_NAME, load_scaling

    folder = Path(args.run)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    if (folder / JSON_NAME).exists():
        written = _write(load_scaling(folder), folder, write_data=False)
    else:
        written = _write(ScalingFile(studies=[study_run(folder)]), folder)
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
