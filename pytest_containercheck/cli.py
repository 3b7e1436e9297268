"""``containercheck``: merge matrix files from several runs/hosts, render them, list probes."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import probing
from .matrix import Matrix, merge
from .report import render_html, render_json, render_markdown, render_terminal


def _load(path: str) -> Matrix:
    try:
        return Matrix.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise SystemExit(f"containercheck: {path}: no such file") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"containercheck: {path}: {exc}") from None


def _duplicates(matrices: Sequence[Matrix], files: Sequence[str]) -> list[dict[str, Any]]:
    """Cells present in several files: merge keeps one when they agree, so name them here."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for m, f in zip(matrices, files, strict=True):
        for key in m.cells:
            seen.setdefault(key, []).append(f)
    return [{"row": r, "column": c, "host": h, "files": fs} for (r, c, h), fs in seen.items() if len(fs) > 1]


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--html", metavar="PATH", help="write one self-contained HTML page (render images inline)")
    parser.add_argument("--md", metavar="PATH", help="write compact Markdown (e.g. for a CI job summary)")


def _write(path: str, content: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(content, encoding="utf-8")


def _write_reports(matrix: Matrix, args: argparse.Namespace, sources: Sequence[str]) -> None:
    if args.md:
        _write(args.md, render_markdown(matrix))
    if args.html:
        # Artifact paths are relative to where each pytest ran: usually the directory the
        # merge runs in (a shared job directory), else next to the result files.
        dirs = [Path.cwd(), *dict.fromkeys(Path(f).resolve().parent for f in sources)]
        _write(args.html, render_html(matrix, artifact_dirs=dirs))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``containercheck`` command."""
    parser = argparse.ArgumentParser(prog="containercheck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="join matrix JSON files (e.g. one per cluster node) into one matrix")
    m.add_argument("files", nargs="+", metavar="MATRIX.json")
    m.add_argument("--json", metavar="PATH", help="write the merged matrix as JSON")
    _add_report_options(m)
    m.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    show = sub.add_parser("show", help="print a matrix JSON file as the terminal table")
    show.add_argument("file", metavar="MATRIX.json")
    show.add_argument("-v", "--verbose", action="store_true", help="print every cell's detail")
    _add_report_options(show)
    sub.add_parser("probes", help="list the built-in probes")
    args = parser.parse_args(argv)

    width = shutil.get_terminal_size((120, 24)).columns
    if args.command == "probes":
        for name in probing.available_probes():
            print(name)
        return 0
    if args.command == "show":
        matrix = _load(args.file)
        _write_reports(matrix, args, [args.file])
        print("\n".join(render_terminal(matrix, width=width, verbosity=1 if args.verbose else 0)))
        return 1 if matrix.problems() else 0
    loaded = [_load(f) for f in args.files]
    matrix = merge(loaded)
    matrix.meta = {"merged_from": list(args.files), "runs": [x.meta for x in loaded],
                   "duplicates": _duplicates(loaded, args.files)}
    if args.json:
        _write(args.json, render_json(matrix))
    _write_reports(matrix, args, args.files)
    print("\n".join(render_terminal(matrix, width=width, verbosity=-1 if args.quiet else 0)))
    for d in matrix.meta["duplicates"]:
        print(f"DUPLICATE {d['row']} on {d['column']} @ {d['host']}: in {', '.join(d['files'])}")
    return 1 if matrix.problems() or matrix.conflicts else 0


if __name__ == "__main__":
    sys.exit(main())
