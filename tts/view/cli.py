"""`tts view RUN_DIR [--open] [--out FILE]`: write the viewer page of a run or study folder and print its path.

`register(subparsers)` adds the command to the `tts` parser (as tts.study_cli does); bad input is a
`UserError`, which `tts.cli.main` prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path

from tts.cli_args import unicode_text


def writable_file(text: str) -> Path:
    """An output file: not a folder, in an existing folder we may write in."""
    path = Path(unicode_text(text))
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write the file {path}: it is a folder")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write the file {path}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write the file {path}: no permission")
    return path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="write a self-contained HTML page of a run folder (problems, candidates, votes, verdicts, "
                     "search trees) or of a `tts scale` folder (plots, report); docs/view.md")
    p.add_argument("run", metavar="RUN_DIR", type=unicode_text, help="a run folder or a `tts scale` output folder")
    p.add_argument("--out", type=writable_file, default=None, metavar="FILE",
                   help="where to write the page (default: RUN_DIR/view.html)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from tts.view import write_view

    path = write_view(args.run, args.out)
    print(path)
    if args.open and not webbrowser.open(path.resolve().as_uri()):
        print(f"tts view: no web browser found on this machine; open {path} in one elsewhere (the page is one "
              "self-contained file)", file=sys.stderr)
    return 0
