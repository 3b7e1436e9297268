"""``containercheck``: the result files of pytest-containercheck runs, read without pytest.

``merge`` joins runs (hosts, nodes, partitions), ``show`` renders one, ``diff`` compares two
images, ``gate`` gives many runs one verdict, ``probes`` lists the built-in probes.  It uses the
engine alone (``tests/test_cli.py`` keeps it so); what users read is :data:`ABOUT` and each
command's :data:`COMMANDS` entry (``--help``, and the docs' page "The containercheck command",
written from them by ``docs/gen_reference.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from . import __version__
from .engine import gate
from .engine.diff import KINDS, diff_columns, failing
from .engine.diff import render_markdown as render_diff_markdown
from .engine.errors import Problem, UsageProblem
from .engine.expectations import Expectation, for_columns, of_column, read_file, split_rows, unknown_rows
from .engine.matrix import Column, Matrix, merge, same_image
from .engine.outputs import Output, check_named, check_outputs, is_step_summary, write_outputs
from .engine.report import fit, line_width, render_html, render_json, render_markdown, render_terminal
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
        _error(f"{message} (see {self.prog} --help)")
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
            for name, suffix in _SUFFIX.items() if (path := getattr(args, name, None)) is not None]


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


ABOUT = """Read the result files of pytest-containercheck runs (pytest --image IMAGE
--matrix-json FILE), without pytest: join the runs of several hosts, show one, compare an old
image with a new one, and give them the CI gate's verdict. Exit codes as pytest's: 0 passed, 1
a check failed (or got worse), 2 a run was interrupted, 4 bad input.

  pytest --image team/img:1.4 --matrix-json new.json
  containercheck diff old.json new.json

Each command's --help has an example; the docs' pages "The containercheck command" and
"The CI gate" say more."""


class Command(NamedTuple):
    """One subcommand as users read it: its line in the command list, what it does, an example."""

    summary: str
    about: str
    example: str


COMMANDS: dict[str, Command] = {
    "merge": Command(
        "join the result files of several runs into one matrix",
        "Join the result files of several runs (one per host, node or partition) into one matrix "
        "whose columns are image x host; print it, and write it as JSON, Markdown or HTML. Cells "
        "that disagree for the same image and host are conflicts; files that report the same "
        "cell are listed. Exit 1 when a cell failed or errored, or on a conflict.",
        "containercheck merge results/*.json --json all.json --html all.html"),
    "show": Command(
        "print a result file as the terminal matrix",
        "Print one result file as the terminal matrix (problems with their fixes under it), and "
        "write it as Markdown or HTML. Exit 1 when a cell failed or errored.",
        "containercheck show run.json -v --md summary.md"),
    "diff": Command(
        "what got worse from an old image to a new one",
        "Compare an old image's column with a new one's, row by row: a regression (it passed "
        "before, fails now) or a row that passed and is gone exits 1. Give two files of one "
        "column each, or one run's file with --old and --new (a column id, or the --image value "
        "the run was given).",
        "containercheck diff run.json --old team/img:1.3 --new team/img:1.4"),
    "gate": Command(
        "the CI gate's verdict on result files",
        "Judge result files (several are merged first) by the CI gate: by the expectations each "
        "run recorded, or by --expectations and --require. Exit codes as pytest's: 0 the gate "
        "passes, 1 a cell failed or errored, 2 a run was interrupted.",
        "containercheck gate results/*.json --expectations pyproject.toml"),
    "probes": Command(
        "list the built-in probes",
        "List the built-in probes: the programs a check runs inside an image (container.probe(NAME) "
        "in your own checks).",
        "containercheck probes"),
}


class _Help(argparse.HelpFormatter):
    """argparse's help, with paragraphs wrapped to the terminal and an example (a paragraph
    whose lines start with two spaces) kept as written, one command a line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            if para.startswith("  "):
                paragraphs.append("\n".join(indent + line for line in para.splitlines()))
            else:
                paragraphs.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                                subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(paragraphs)


def build_parser() -> argparse.ArgumentParser:
    """The ``containercheck`` command line (also read by ``docs/gen_reference.py``)."""
    parser = _Parser(prog="containercheck", description=ABOUT, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        c = COMMANDS[name]
        return sub.add_parser(name, help=c.summary, description=c.about, epilog=f"example:\n\n  {c.example}",
                              formatter_class=_Help)

    m = command("merge")
    m.add_argument("files", nargs="+", metavar="MATRIX.json", help="result files (pytest --matrix-json)")
    m.add_argument("--json", metavar="PATH", help="write the merged matrix as JSON")
    _add_report_options(m)
    m.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    show = command("show")
    show.add_argument("file", metavar="MATRIX.json", help="a result file (pytest --matrix-json)")
    show.add_argument("-v", "--verbose", action="store_true", help="print every cell's detail")
    _add_report_options(show)
    d = command("diff")
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
    g = command("gate")
    g.add_argument("files", nargs="+", metavar="MATRIX.json", help="result files (pytest --matrix-json)")
    _add_gate_options(g)
    g.add_argument("--json", metavar="PATH", help="write the judged matrix as JSON")
    _add_report_options(g)
    command("probes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``containercheck`` command."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except UsageProblem as exc:
        _error(str(exc))
        return EXIT_USAGE
    except NotWritten as exc:
        _error(str(exc))
        return EXIT_FAILED


def _say(text: str, indent: str = "    ") -> None:
    """Print one line of the command's own output: wrapped to the terminal when there is one
    (``COLUMNS`` or a tty), whole in a pipe or a CI log, where tools grep whole lines."""
    width = line_width()
    for part in fit(text, width, indent) if width else [visible(text, lines=False)]:
        print(part)


def _error(text: str) -> None:
    """Each line of *text* as ``containercheck: error: ...`` on stderr, wrapped as :func:`_say` does."""
    width = line_width()
    for line in text.splitlines():
        said = f"containercheck: error: {line}"
        for part in fit(said, width, "    ") if width else [visible(said, lines=False)]:
            print(part, file=sys.stderr)


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
    if args.expectations is not None:
        check_named("--expectations", args.expectations)
    if args.expectations or rows:
        file = args.expectations
        entries = read_file(file, file, pyproject=os.path.basename(file) == "pyproject.toml") if file else []
        found = for_columns(matrix, entries, rows)
        # A row name none of the results has (nor any expectation they recorded) is a typo, as in pytest.
        known = set(matrix.rows) | {r for c in matrix.columns.values() if (e := of_column(c)) is not None
                                    for r in [*e.required, *e.allowed]}
        wrong = unknown_rows(found.values(), known, hint="the results have no such row")
        if wrong:
            raise UsageProblem(wrong[0])
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
    _say(f"containercheck diff: {old.id} ({old.host}) -> {new.id} ({new.host})")
    for c in changes:
        if c.kind not in ("unchanged pass", "skipped on both"):
            _say(f"  {c.kind.upper():18} {c.row}: {c.old or '-'} -> {c.new or '-'}  {c.detail}".rstrip(), " " * 21)
    counts = {k: sum(c.kind == k for c in changes) for k in KINDS}
    _say("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
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
    _say(f"containercheck gate: {verdict[judged.exit_code]}")
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
        _say(f"DUPLICATE {d['row']} on {d['column']} @ {d['host']}: in {', '.join(d['files'])}")
    for group in matrix.meta["same_image"]:
        where = ", ".join(f"{c['column']} @ {c['host']}" for c in group["columns"])
        _say(f"SAME IMAGE {group['identity'][:19]} (by {group['by']}): {where}")
        for d in group["different_verdicts"]:
            verdicts = ", ".join(f"{status} on {col}" for col, status in d["verdicts"].items())
            _say(f"  same image, different verdict: {d['row']}: {verdicts}: the host, or the pair, not the image",
                 " " * 6)
    return 1 if matrix.problems() or matrix.conflicts else 0


if __name__ == "__main__":
    sys.exit(main())
