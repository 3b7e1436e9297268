"""``containercheck``: merge matrix files from several runs/hosts, render them, list probes."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from . import probing
from .matrix import Matrix, merge
from .report import render_json, render_terminal


def _load(path: str) -> Matrix:
    try:
        return Matrix.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise SystemExit(f"containercheck: {path}: no such file") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"containercheck: {path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``containercheck`` command."""
    parser = argparse.ArgumentParser(prog="containercheck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="join matrix JSON files (e.g. one per cluster node) into one matrix")
    m.add_argument("files", nargs="+", metavar="MATRIX.json")
    m.add_argument("--json", metavar="PATH", help="write the merged matrix as JSON")
    m.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    show = sub.add_parser("show", help="print a matrix JSON file as the terminal table")
    show.add_argument("file", metavar="MATRIX.json")
    show.add_argument("-v", "--verbose", action="store_true", help="print every cell's detail")
    sub.add_parser("probes", help="list the built-in probes")
    args = parser.parse_args(argv)

    width = shutil.get_terminal_size((120, 24)).columns
    if args.command == "probes":
        for name in probing.available_probes():
            print(name)
        return 0
    if args.command == "show":
        matrix = _load(args.file)
        print("\n".join(render_terminal(matrix, width=width, verbosity=1 if args.verbose else 0)))
        return 1 if matrix.problems() else 0
    matrix = merge(_load(f) for f in args.files)
    if args.json:
        Path(args.json).write_text(render_json(matrix), encoding="utf-8")
    print("\n".join(render_terminal(matrix, width=width, verbosity=-1 if args.quiet else 0)))
    return 1 if matrix.problems() or matrix.conflicts else 0


if __name__ == "__main__":
    sys.exit(main())
