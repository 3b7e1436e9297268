"""``containercheck``: merge matrix files from several runs/hosts, render them, list probes.

It uses the engine alone: no pytest, no plugin module, no runtime (``probes`` imports the
probing module when it runs).  ``tests/test_cli.py`` keeps it so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .engine import gate
from .engine.diff import KINDS, diff_columns, failing
from .engine.diff import render_markdown as render_diff_markdown
from .engine.errors import Problem, UsageProblem
from .engine.expectations import Expectation, for_columns, of_column, read_file, split_rows, unknown_rows
from .engine.matrix import Column, Matrix, merge, same_image
from .engine.outputs import Output, check_outputs, is_step_summary, write_outputs
from .engine.report import render_html, render_json, render_markdown, render_terminal
from .engine.textsafe import visible
from .engine.userfiles import MAX_MATRIX_BYTES, read_user_file

#: Exit codes, the same as pytest's where they mean the same (docs/reference/exit-codes.md):
#: 1 a failure, conflict, regression or gone row, or an output not written at the end;
#: 2 (``gate``) a run in the matrix was interrupted; 4 a usage error (bad input, named in one
#: line, before anything is written).
EXIT_FAILED = 1
EXIT_USAGE = 4


class _Parser(argparse.ArgumentParser):
    """argparse, with its own errors (an unknown option, a missing file name) exiting as every
    other usage error does: one line, code 4 (argparse's own is 2, which is pytest's "interrupted")."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class NotWritten(Problem):
    """An output checked at the start could not be written at the end: one line per output."""


def _load(path: str) -> Matrix:
    raw = read_user_file(path, "a matrix JSON file", limit=MAX_MATRIX_BYTES)
    try:
        return Matrix.from_dict(json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise UsageProblem(f"{path}: not UTF-8 text, not a matrix JSON file") from None
    except RecursionError:
        raise UsageProblem(f"{path}: nested too deeply to be a matrix JSON file") from None
    except ValueError as exc:
        raise UsageProblem(f"{path}: {' '.join(str(exc).split())}") from None


_SUFFIX = {"json": ".json", "md": ".md", "html": ".html"}


def _outputs(args: argparse.Namespace) -> list[Output]:
    """The output files the command line names (``--json``, ``--md``, ``--html``)."""
    # Markdown for the job's summary file ($GITHUB_STEP_SUMMARY) is added to it, never replaces it;
    # so is Markdown for any file with --md-append (a CI recipe's report, written by several steps).
    def appends(name: str, path: str) -> bool:
        return name == "md" and (is_step_summary(path) or bool(getattr(args, "md_append", False)))

    return [Output(f"--{name}", path, suffix, append=appends(name, path))
            for name, suffix in _SUFFIX.items() if (path := getattr(args, name, None))]


def _check_outputs(args: argparse.Namespace, inputs: Sequence[str]) -> None:
    """Every output path can be written as a regular file, and overwrites no input or other output."""
    check_outputs(_outputs(args), inputs)


def _duplicates(matrices: Sequence[Matrix], files: Sequence[str]) -> list[dict[str, Any]]:
    """Cells present in several files: merge keeps one when they agree, so name them here."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for m, f in zip(matrices, files):
        for key in m.cells:
            seen.setdefault(key, []).append(f)
    return [{"row": r, "column": c, "host": h, "files": fs} for (r, c, h), fs in seen.items() if len(fs) > 1]


def _add_report_options(parser: argparse.ArgumentParser, *, html: bool = True) -> None:
    if html:
        parser.add_argument("--html", metavar="PATH", help="write one self-contained HTML page (render images inline)")
    parser.add_argument("--md", metavar="PATH", help="write compact Markdown (e.g. for a CI job summary; "
                        "$GITHUB_STEP_SUMMARY is appended to)")
    parser.add_argument("--md-append", action="store_true",
                        help="append the --md Markdown to the file instead of replacing it (as for "
                        "$GITHUB_STEP_SUMMARY)")


def _add_gate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--expectations", metavar="FILE",
                        help="judge with this TOML file's [[image]] tables (a pyproject.toml: its "
                        "[[tool.containercheck.image]] tables) instead of the expectations recorded in the matrix")
    parser.add_argument("--require", metavar="ROW", action="append", default=[],
                        help="a row that must pass on every image (repeatable), as pytest's --require")


def _write(args: argparse.Namespace, content: dict[str, str]) -> None:
    """Write each output named on the command line (*content* by flag); :class:`NotWritten`
    naming each that could not be written, and what was."""
    done = write_outputs([(out, content[out.flag]) for out in _outputs(args) if out.flag in content])
    if done.failed:
        raise NotWritten("\n".join(done.problems()))  # one line each


def _reports(matrix: Matrix, args: argparse.Namespace, sources: Sequence[str]) -> dict[str, str]:
    """The ``--md`` and ``--html`` renderings of *matrix* that the command line asks for."""
    out = {}
    if args.md:
        out["--md"] = render_markdown(matrix)
    if getattr(args, "html", None):
        # Artifact paths are relative to where each pytest ran: usually the directory the
        # merge runs in (a shared job directory), else next to the result files.
        dirs = [Path.cwd(), *dict.fromkeys(Path(f).resolve().parent for f in sources)]
        # Embedded are only images inside the result files' own directories: a result file is
        # someone else's, and may name any file of this host.
        out["--html"] = render_html(matrix, artifact_dirs=dirs,
                                    embed_roots=list(dict.fromkeys(Path(f).resolve().parent for f in sources)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``containercheck`` command."""
    parser = _Parser(prog="containercheck", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    d = sub.add_parser("diff", help="what got worse from an old image to a new one; exit 1 on regressions and on "
                       "rows that passed before and are gone")
    d.add_argument("files", nargs="+", metavar="MATRIX.json",
                   help="OLD.json NEW.json (one column each), or one run's JSON with --old and --new")
    d.add_argument("--old", metavar="IMAGE",
                   help="the old image: its column id (docker://team/img:1.3) or --image value")
    d.add_argument("--new", metavar="IMAGE",
                   help="the new image: its column id (docker://team/img:1.4) or --image value")
    _add_report_options(d, html=False)
    d.add_argument("--accept-gone", action="store_true",
                   help="rows that passed before and are missing now do not fail the diff (they are still listed)")
    _add_gate_options(d)
    g = sub.add_parser("gate", help="apply the CI gate to matrix files (several are merged: one per node or "
                       "partition), with pytest's exit codes")
    g.add_argument("files", nargs="+", metavar="MATRIX.json")
    _add_gate_options(g)
    g.add_argument("--json", metavar="PATH", help="write the judged matrix as JSON")
    _add_report_options(g)
    sub.add_parser("probes", help="list the built-in probes")
    args = parser.parse_args(argv)

    try:
        return _main(args)
    except UsageProblem as exc:
        for line in str(exc).splitlines():
            print(f"containercheck: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except NotWritten as exc:
        for line in str(exc).splitlines():
            print(f"containercheck: error: {line}", file=sys.stderr)
        return EXIT_FAILED


def _column(matrix: Matrix, wanted: str | None, source: str, flag: str) -> Column:
    if wanted is None:
        if len(matrix.columns) != 1:
            ids = ", ".join(sorted({c.id for c in matrix.columns.values()}))
            raise UsageProblem(f"{source} has {len(matrix.columns)} columns ({ids}); name one with {flag}")
        return next(iter(matrix.columns.values()))
    # The column id, else the --image value the run was given (docker://team/img:1.4 or team/img:1.4).
    found = [c for c in matrix.columns.values() if c.id == wanted] or \
        [c for c in matrix.columns.values() if c.spec == wanted]
    if len(found) != 1:
        ids = ", ".join(sorted({c.id for c in matrix.columns.values()}))
        raise UsageProblem(f"{flag} {wanted}: {source} has {'several' if found else 'no'} such column (it has: {ids})")
    return found[0]


def _judged(matrix: Matrix, args: argparse.Namespace) -> gate.Judgement:
    """*matrix* judged by the gate: under ``--expectations``/``--require`` when given (each column's
    names and labels from its recorded facts, every column covered as in a pytest run), else under
    the expectations the run recorded for each column."""
    rows = tuple(r for v in args.require for r in split_rows(v))
    if args.expectations or rows:
        file = args.expectations
        entries = read_file(file, file, pyproject=os.path.basename(file) == "pyproject.toml") if file else []
        found = for_columns(matrix, entries, rows)
        # A row name none of the results has (nor any expectation they recorded) is a typo, as in pytest.
        known = set(matrix.rows) | {r for c in matrix.columns.values() if (e := of_column(c)) is not None
                                    for r in [*e.required, *e.allowed]}
        wrong = unknown_rows(found.values(), known)
        if wrong:
            raise UsageProblem(wrong[0].replace("pytest --containercheck-rows lists every row",
                                                "the results have no such row"))
        return gate.judge(matrix, found.get)
    recorded: dict[tuple[str, str], Expectation | None] = {k: of_column(c) for k, c in matrix.columns.items()}
    return gate.judge(matrix, recorded.get)


def _diff(args: argparse.Namespace) -> int:
    if len(args.files) > 2:
        raise UsageProblem("diff takes OLD.json NEW.json, or one JSON with --old and --new")
    _check_outputs(args, args.files)
    old_m = _load(args.files[0])
    new_m = _load(args.files[-1])
    if len(args.files) == 1 and not (args.old and args.new):
        raise UsageProblem("one matrix file: name both columns with --old IMAGE --new IMAGE")
    old = _column(old_m, args.old, args.files[0], "--old")
    new = _column(new_m, args.new, args.files[-1], "--new")
    if args.expectations or args.require:  # both sides under the same rules: the repository's now
        old_m, new_m = _judged(old_m, args).matrix, _judged(new_m, args).matrix
    changes = diff_columns(old_m, old, new_m, new)
    print(f"containercheck diff: {old.id} ({old.host}) -> {new.id} ({new.host})")
    for c in changes:
        if c.kind not in ("unchanged pass", "skipped on both"):
            print(visible(f"  {c.kind.upper():18} {c.row}: {c.old or '-'} -> {c.new or '-'}  {c.detail}", lines=False))
    counts = {k: sum(c.kind == k for c in changes) for k in KINDS}
    print("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    if args.md:
        _write(args, {"--md": render_diff_markdown(changes, old, new, args.accept_gone)})
    return EXIT_FAILED if failing(changes, accept_gone=args.accept_gone) else 0


def _gate(args: argparse.Namespace, width: int) -> int:
    _check_outputs(args, args.files)
    loaded = [_load(f) for f in args.files]
    matrix = loaded[0] if len(loaded) == 1 else merge(loaded)
    if len(loaded) > 1:
        matrix.meta = {"version": __version__, "merged_from": list(args.files), "runs": [x.meta for x in loaded]}
    judged = _judged(matrix, args)
    _write(args, {**({"--json": render_json(judged.matrix)} if args.json else {}),
                  **_reports(judged.matrix, args, args.files)})
    print("\n".join(render_terminal(judged.matrix, width=width, verbosity=-1)))
    failing = len(judged.matrix.problems())
    conflicts = f", {len(judged.matrix.conflicts)} conflict(s)" if judged.matrix.conflicts else ""
    verdict = {gate.EXIT_OK: "the gate passes",
               gate.EXIT_FAILED: f"the gate fails: {failing} cell(s) failed or errored{conflicts}",
               gate.EXIT_INTERRUPTED: "the gate cannot pass: a run in the matrix was interrupted (incomplete)"}
    print(f"containercheck gate: {verdict[judged.exit_code]}")
    return judged.exit_code


def _main(args: argparse.Namespace) -> int:
    width = shutil.get_terminal_size((120, 24)).columns
    if args.command == "diff":
        return _diff(args)
    if args.command == "gate":
        return _gate(args, width)
    if args.command == "probes":
        from .engine import probing  # here: only this command needs it (and, through it, the runtimes)

        for name in probing.available_probes():
            print(name)
        return 0
    if args.command == "show":
        _check_outputs(args, [args.file])
        matrix = _load(args.file)
        _write(args, _reports(matrix, args, [args.file]))
        print("\n".join(render_terminal(matrix, width=width, verbosity=1 if args.verbose else 0)))
        return 1 if matrix.problems() else 0
    _check_outputs(args, args.files)
    loaded = [_load(f) for f in args.files]
    matrix = merge(loaded)
    matrix.meta = {"version": __version__, "merged_from": list(args.files), "runs": [x.meta for x in loaded],
                   "duplicates": _duplicates(loaded, args.files), "same_image": same_image(matrix)}
    _write(args, {**({"--json": render_json(matrix)} if args.json else {}), **_reports(matrix, args, args.files)})
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
