"""``containercheck``: merge matrix files from several runs/hosts, render them, list probes."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine import probing
from .engine.diff import KINDS, REGRESSION, diff_columns
from .engine.diff import render_markdown as render_diff_markdown
from .engine.matrix import Column, Matrix, merge, same_image
from .engine.report import render_html, render_json, render_markdown, render_terminal

#: Largest matrix file read (a merge of many nodes is a few MiB; anything bigger is not ours).
MAX_INPUT_BYTES = 256 * 2**20


class _Refused(Exception):
    """Bad input or output for ``containercheck``: one line, exit status 2 (as argparse's)."""


def _load(path: str) -> Matrix:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Refused(f"{path}: no such file") from None
    except OSError as exc:
        raise _Refused(f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(f"{path}: {_kind(st.st_mode)}, not a matrix JSON file")
    if st.st_size > MAX_INPUT_BYTES:
        raise _Refused(f"{path}: {st.st_size} bytes, more than a matrix file can be ({MAX_INPUT_BYTES})")
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the stat cannot block the open.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise _Refused(f"{path}: not a regular file, not a matrix JSON file")
            raw = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return Matrix.from_dict(json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise _Refused(f"{path}: not UTF-8 text, not a matrix JSON file") from None
    except RecursionError:
        raise _Refused(f"{path}: nested too deeply to be a matrix JSON file") from None
    except ValueError as exc:
        raise _Refused(f"{path}: {' '.join(str(exc).split())}") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _check_outputs(args: argparse.Namespace, inputs: Sequence[str]) -> None:
    """Every output path can be written as a regular file, and overwrites no input or other output."""
    seen = {os.path.realpath(f): f"input {f}" for f in inputs}
    for flag in ("json", "md", "html"):
        path = getattr(args, flag, None)
        if not path:
            continue
        full = os.path.realpath(path)
        if full in seen:
            raise _Refused(f"--{flag} {path}: the same file as {seen[full]}; give each output its own path")
        seen[full] = f"--{flag}"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            parent = os.path.dirname(os.path.abspath(path))
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                raise _Refused(f"--{flag} {path}: {parent} is a file, not a directory") from None
            continue
        except OSError as exc:
            raise _Refused(f"--{flag} {path}: cannot be used ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"--{flag} {path}: {_kind(st.st_mode)}; give the path of a file to write")


def _duplicates(matrices: Sequence[Matrix], files: Sequence[str]) -> list[dict[str, Any]]:
    """Cells present in several files: merge keeps one when they agree, so name them here."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for m, f in zip(matrices, files):
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
    d = sub.add_parser("diff", help="what got worse from an old image to a new one; exit 1 on regressions only")
    d.add_argument("files", nargs="+", metavar="MATRIX.json",
                   help="OLD.json NEW.json (one column each), or one run's JSON with --old and --new")
    d.add_argument("--old", metavar="COLUMN", help="the old image's column id (e.g. docker://team/img:1.3)")
    d.add_argument("--new", metavar="COLUMN", help="the new image's column id (e.g. docker://team/img:1.4)")
    d.add_argument("--md", metavar="PATH", help="write the changes as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    sub.add_parser("probes", help="list the built-in probes")
    args = parser.parse_args(argv)

    try:
        return _main(args)
    except _Refused as exc:
        print(f"containercheck: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output that could not be written after all
        print(f"containercheck: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _column(matrix: Matrix, wanted: str | None, source: str, flag: str) -> Column:
    if wanted is None:
        if len(matrix.columns) != 1:
            ids = ", ".join(sorted({c.id for c in matrix.columns.values()}))
            raise _Refused(f"{source} has {len(matrix.columns)} columns ({ids}); name one with {flag}")
        return next(iter(matrix.columns.values()))
    found = [c for c in matrix.columns.values() if c.id == wanted]
    if len(found) != 1:
        ids = ", ".join(sorted({c.id for c in matrix.columns.values()}))
        raise _Refused(f"{flag} {wanted}: {source} has {'several' if found else 'no'} such column (it has: {ids})")
    return found[0]


def _diff(args: argparse.Namespace) -> int:
    if len(args.files) > 2:
        raise _Refused("diff takes OLD.json NEW.json, or one JSON with --old and --new")
    _check_outputs(args, args.files)
    old_m = _load(args.files[0])
    new_m = _load(args.files[-1])
    if len(args.files) == 1 and not (args.old and args.new):
        raise _Refused("one matrix file: name both columns with --old COLUMN --new COLUMN")
    old = _column(old_m, args.old, args.files[0], "--old")
    new = _column(new_m, args.new, args.files[-1], "--new")
    changes = diff_columns(old_m, old, new_m, new)
    print(f"containercheck diff: {old.id} ({old.host}) -> {new.id} ({new.host})")
    for c in changes:
        if c.kind not in ("unchanged pass", "skipped on both"):
            print(f"  {c.kind.upper():18} {c.row}: {c.old or '-'} -> {c.new or '-'}  {c.detail}")
    counts = {k: sum(c.kind == k for c in changes) for k in KINDS}
    print("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    if args.md:
        _write(args.md, render_diff_markdown(changes, old, new))
    return 1 if counts[REGRESSION] else 0


def _main(args: argparse.Namespace) -> int:
    width = shutil.get_terminal_size((120, 24)).columns
    if args.command == "diff":
        return _diff(args)
    if args.command == "probes":
        for name in probing.available_probes():
            print(name)
        return 0
    if args.command == "show":
        _check_outputs(args, [args.file])
        matrix = _load(args.file)
        _write_reports(matrix, args, [args.file])
        print("\n".join(render_terminal(matrix, width=width, verbosity=1 if args.verbose else 0)))
        return 1 if matrix.problems() else 0
    _check_outputs(args, args.files)
    loaded = [_load(f) for f in args.files]
    matrix = merge(loaded)
    matrix.meta = {"merged_from": list(args.files), "runs": [x.meta for x in loaded],
                   "duplicates": _duplicates(loaded, args.files), "same_image": same_image(matrix)}
    if args.json:
        _write(args.json, render_json(matrix))
    _write_reports(matrix, args, args.files)
    print("\n".join(render_terminal(matrix, width=width, verbosity=-1 if args.quiet else 0)))
    for d in matrix.meta["duplicates"]:
        print(f"DUPLICATE {d['row']} on {d['column']} @ {d['host']}: in {', '.join(d['files'])}")
    for group in matrix.meta["same_image"]:
        where = ", ".join(f"{c['column']} @ {c['host']}" for c in group["columns"])
        print(f"SAME IMAGE {group['identity'][:19]} (by {group['by']}): {where}")
        for d in group["different_verdicts"]:
            verdicts = ", ".join(f"{status} on {col}" for col, status in d["verdicts"].items())
            print(f"  same image, different verdict: {d['row']}: {verdicts}: the host, or the pair, not the image")
    return 1 if matrix.problems() or matrix.conflicts else 0


if __name__ == "__main__":
    sys.exit(main())
