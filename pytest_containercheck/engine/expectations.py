"""What each image of a run is expected to do: the CI gate's rules, per image.

An image's :class:`Expectation` says which rows must pass (``required``), which may fail with
a reason (``allowed``: reported as expected failures, never hidden), and whether it is meant
for GPUs or CPUs (``intent``).  It comes from three places, combined by :func:`combine`:

* ``--require ROW`` (ini ``containercheck_require``): every image of the run;
* the repository: ``[[tool.containercheck.image]]`` tables in the rootdir's ``pyproject.toml``,
  or ``[[image]]`` tables in the TOML file named by ``--expectations`` (which replaces it); each
  table's ``match`` globs are matched against the ``--image`` value, the column id and the image
  reference (:func:`read_file`);
* the image itself: its labels ``org.containercheck.require``, ``org.containercheck.allow-fail``
  and ``org.containercheck.intent`` (:func:`from_labels`), read from the image's config wherever
  it is: ``docker/podman image inspect``, a SIF's labels (Apptainer keeps them through
  ``apptainer build``), the config inside a ``docker save`` or OCI archive.

Required rows and allowed failures are the union of every source that applies, each row
remembering its sources; a row both required and allowed to fail, or two different intents,
is a :class:`~.errors.UsageProblem` (one line), as is a malformed file or label.  The row
names themselves are checked against the known rows by :func:`unknown_rows`.

No pytest here: the plugin reads the sources, the matrix carries the result (``Column.expectations``)
and the renderers describe it (:func:`describe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageProblem
from .matrix import Cell, Column, Matrix, image_labels
from .names import matches
from .textsafe import capped
from .userfiles import MAX_EXPECTATIONS_BYTES, read_user_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.9/3.10: the same parser, as a package
    import tomli as tomllib

LABEL_PREFIX = "org.containercheck."
LABEL_REQUIRE = "org.containercheck.require"
LABEL_ALLOW_FAIL = "org.containercheck.allow-fail"
LABEL_INTENT = "org.containercheck.intent"
LABELS = (LABEL_REQUIRE, LABEL_ALLOW_FAIL, LABEL_INTENT)
INTENTS = ("gpu", "cpu")
TRUST_KEY = "trust-image-allowances"
KEYS = ("match", "require", "allow-fail", "intent", TRUST_KEY)
"""The keys of one ``[[image]]`` table."""
TABLE_NAME = "containercheck"
IGNORED = "ignored: the repository does not accept allowances from the image (trust-image-allowances)"

FROM_OPTION = "--require"
FROM_LABEL = "image label"
LIST_HINT = "pytest --containercheck-rows lists every row"


def closest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name *name* was most likely meant to be (``torch.cdua`` -> ``torch.cuda``), or None."""
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return found[0] if found else None


def split_rows(text: str) -> tuple[str, ...]:
    """Row names from a ``--require`` value or a label: separated by commas and/or white space."""
    return tuple(text.replace(",", " ").split())


@dataclasses.dataclass(frozen=True)
class Entry:
    """One source's expectations: an ``[[image]]`` table of a file, or an image's labels."""

    source: str
    """Shown in the reports: ``pyproject.toml``, the ``--expectations`` file as given, ``image label``."""
    where: str
    """Where it is written, for messages: ``pyproject.toml [[tool.containercheck.image]] #1``."""
    patterns: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    allow_fail: tuple[tuple[str, str], ...] = ()
    """(row, reason) pairs."""
    intent: str | None = None
    keys: tuple[str, str] = ("require", "allow-fail")
    """How the source names its required rows and allowed failures (the labels' own names)."""
    trust_allowances: bool = False
    """``trust-image-allowances = true``: the images this table matches may excuse their own rows
    (``org.containercheck.allow-fail``); off by default, so an image cannot turn its gate off."""

    def matches(self, names: Iterable[str]) -> bool:
        """Whether a ``match`` glob matches one of *names* (every name of the image:
        :func:`~.names.image_names`)."""
        names = list(names)
        return any(matches(p, names) for p in self.patterns)


# -- the repository's file ------------------------------------------------------------------------


def read_file(path: str, shown: str, *, pyproject: bool) -> list[Entry]:
    """The ``[[image]]`` entries of a TOML file: ``[tool.containercheck]`` of a ``pyproject.toml``
    (*pyproject*; none when it has no such table), else the file's top level (or its own
    ``[tool.containercheck]`` when it has one).  *shown* names the file in messages and reports.
    The file is read through the guarded reader (no FIFO, device or huge file); a ``[tool.*]``
    table whose name is close to ``containercheck`` is a usage error naming the right one: a typo
    there would otherwise drop every expectation in silence."""
    text = read_user_text(path, "the TOML file of the images' expectations", limit=MAX_EXPECTATIONS_BYTES,
                          shown=shown)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageProblem(f"{shown}: not valid TOML ({' '.join(str(exc).split())})") from None
    tool = data.get("tool")
    if isinstance(tool, dict):
        _check_table_name(tool, shown)
    nested = isinstance(tool, dict) and TABLE_NAME in tool
    table: Any = data
    prefix = ""
    if pyproject or nested:
        table = tool.get(TABLE_NAME) if isinstance(tool, dict) else None
        prefix = "tool.containercheck."
        if table is None:
            return []
    if not isinstance(table, dict):
        raise UsageProblem(f"{shown}: [{prefix.rstrip('.')}] is not a table")
    for key in table:
        if key != "image":
            raise UsageProblem(f"{shown}: unknown key {prefix}{key}{_did_you_mean(key, ['image'])}; "
                               f"expectations are [[{prefix}image]] tables")
    images = table.get("image", [])
    if not isinstance(images, list) or not all(isinstance(t, dict) for t in images):
        raise UsageProblem(f"{shown}: {prefix}image must be an array of tables: [[{prefix}image]]")
    return [_entry(t, shown, f"{shown} [[{prefix}image]] #{i}") for i, t in enumerate(images, 1)]


def find_pyproject(start: Path, config_file: Path | None = None) -> Path | None:
    """The repository's ``pyproject.toml`` for a run started in *start*: the nearest one from
    *start* upwards that has a ``[tool.containercheck]`` table (or one whose name is close to it,
    so that :func:`read_file` can name the typo), up to the repository's top (a directory with
    ``.git``); else *config_file*, pytest's own configuration file, when it is a ``pyproject.toml``.

    Not pytest's rootdir: pytest decides it before plugins load, so it takes the path given to one
    of their options (``--matrix-md "$GITHUB_STEP_SUMMARY"``: a file outside the checkout on
    GitHub's runners) for an argument and moves the rootdir up to a common ancestor, where the
    repository's ``pyproject.toml`` is missed -- and the gate would be silently off."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and _names_containercheck(candidate):
            return candidate
        if (directory / ".git").exists():
            break
    return config_file if config_file is not None and config_file.name == "pyproject.toml" else None


def _names_containercheck(path: Path) -> bool:
    """Whether *path* has a ``[tool.X]`` table with X ``containercheck`` or close to it; a file
    that cannot be read or parsed counts (reading it reports why)."""
    try:
        data = tomllib.loads(read_user_text(str(path), "a TOML file", limit=MAX_EXPECTATIONS_BYTES))
    except (UsageProblem, tomllib.TOMLDecodeError):
        return True
    tool = data.get("tool")
    return isinstance(tool, dict) and any(_close_to_table_name(str(key)) for key in tool)


def _close_to_table_name(key: str) -> bool:
    squashed = _squash(key)
    return squashed == TABLE_NAME or difflib.SequenceMatcher(None, squashed, TABLE_NAME).ratio() >= 0.85


def _squash(name: str) -> str:
    return re.sub(r"[-_. ]", "", name.lower())


def _check_table_name(tool: Mapping[str, Any], shown: str) -> None:
    """A ``[tool.X]`` table that was meant to be ``[tool.containercheck]`` (``containerchek``,
    ``container-check``, ``ContainerCheck``) is a usage error; other tools' tables are left alone."""
    if TABLE_NAME in tool:
        return
    for key in tool:
        if _close_to_table_name(str(key)):
            raise UsageProblem(f"{shown}: [tool.{key}] is not a table containercheck reads: did you mean "
                               f"[tool.{TABLE_NAME}] (expectations are [[tool.{TABLE_NAME}.image]] tables)?")


def _entry(table: Mapping[str, Any], source: str, where: str) -> Entry:
    for key in table:
        if key not in KEYS:
            raise UsageProblem(f"{where}: unknown key {key!r}{_did_you_mean(key, KEYS)}; "
                               f"the keys are {', '.join(KEYS)}")
    match = table.get("match")
    patterns = (match,) if isinstance(match, str) else tuple(match) if isinstance(match, list) else ()
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise UsageProblem(f"{where}: 'match' must be an image reference or glob, or a list of them "
                           "(e.g. match = \"team/render:*\")")
    require = table.get("require", [])
    if isinstance(require, str):
        require = list(split_rows(require))
    if not isinstance(require, list) or not all(isinstance(r, str) and r for r in require):
        raise UsageProblem(f"{where}: 'require' must be a list of row names (e.g. require = [\"torch.cuda\"])")
    allow = table.get("allow-fail", {})
    if not isinstance(allow, dict):
        raise UsageProblem(f"{where}: 'allow-fail' must be a table of row = \"reason\" "
                           "(e.g. allow-fail = {\"render.osmesa\" = \"EGL only\"})")
    for row, reason in allow.items():
        if not isinstance(reason, str) or not reason.strip():
            raise UsageProblem(f"{where}: allow-fail {row!r} needs a reason, a non-empty string: why it may fail")
    intent = table.get("intent")
    if intent is not None:
        intent = _intent(intent, f"{where}: intent")
    trust = table.get(TRUST_KEY, False)
    if not isinstance(trust, bool):
        raise UsageProblem(f"{where}: {TRUST_KEY!r} must be true or false (true: the images this table matches "
                           "may allow their own rows to fail with the org.containercheck.allow-fail label)")
    return Entry(source, where, patterns, tuple(require),
                 tuple((str(r), " ".join(str(why).split())) for r, why in allow.items()), intent,
                 trust_allowances=trust)


def _intent(value: Any, where: str) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text not in INTENTS:
        raise UsageProblem(f"{where} {value!r}{_did_you_mean(str(value).lower(), INTENTS)}; "
                           f"give one of {', '.join(INTENTS)}")
    return text


def _did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    near = closest(name, known, cutoff)
    return f": did you mean {near}?" if near else ""


# -- the image's labels ---------------------------------------------------------------------------


def from_labels(labels: Mapping[str, str], image: str) -> Entry | None:
    """The expectations an image carries in its labels (None when it carries none):

    * ``org.containercheck.require``: row names, separated by commas and/or spaces;
    * ``org.containercheck.allow-fail``: ``ROW: REASON`` entries separated by ``;`` (or new
      lines), e.g. ``render.osmesa: EGL-only image; xgboost.cuda: CPU build``;
    * ``org.containercheck.intent``: ``gpu`` or ``cpu``.

    A label that looks like one of these but is not (``org.containercheck.requires``) is a
    usage error, like a malformed value: a typo must not turn a gate off.
    """
    where = f"--image {image}: label"
    for key in labels:
        if key.startswith(LABEL_PREFIX) and key not in LABELS:
            near = closest(key[len(LABEL_PREFIX):], [k[len(LABEL_PREFIX):] for k in LABELS], 0.8)
            if near:
                raise UsageProblem(f"{where} {key} is not one containercheck reads: did you mean "
                                   f"{LABEL_PREFIX}{near}?")
    if not any(k in labels for k in LABELS):
        return None
    allow: list[tuple[str, str]] = []
    for part in str(labels.get(LABEL_ALLOW_FAIL, "")).replace("\n", ";").split(";"):
        if not part.strip():
            continue
        row, sep, reason = part.partition(":")
        if not sep or not row.strip() or not reason.strip() or len(row.split()) != 1:
            raise UsageProblem(f"{where} {LABEL_ALLOW_FAIL}: {part.strip()!r} is not 'ROW: REASON'; write "
                               "each row with why it may fail, separated by ';' (e.g. 'render.osmesa: EGL only')")
        allow.append((row.strip(), " ".join(reason.split())))
    intent = labels.get(LABEL_INTENT)
    return Entry(FROM_LABEL, where, (), split_rows(str(labels.get(LABEL_REQUIRE, ""))), tuple(allow),
                 _intent(intent, f"{where} {LABEL_INTENT}") if intent is not None else None,
                 (LABEL_REQUIRE, LABEL_ALLOW_FAIL))


# -- one image's expectations ---------------------------------------------------------------------


@dataclasses.dataclass
class Expectation:
    """What one image is expected to do, and which source said so."""

    required: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Row -> the sources that require it."""
    allowed: dict[str, list[dict[str, str]]] = dataclasses.field(default_factory=dict)
    """Row -> ``{"source": ..., "reason": ...}`` per source that allows it to fail."""
    intent: str | None = None
    intent_sources: list[str] = dataclasses.field(default_factory=list)
    ignored: dict[str, list[dict[str, str]]] = dataclasses.field(default_factory=dict)
    """Row -> the image's own allowances (``{"source", "reason"}``) that no table of the repository
    accepts (``trust-image-allowances``): shown, never applied."""
    refs: list[tuple[str, str]] = dataclasses.field(default_factory=list, compare=False)
    """(row, where it is named) for every row named: what :func:`unknown_rows` checks."""

    @property
    def empty(self) -> bool:
        """Nothing is expected of the image: the run checks it, but gates nothing."""
        return not (self.required or self.allowed or self.intent)

    def allowance(self, row: str) -> str | None:
        """Who allows *row* to fail and why (``image label: EGL only``, several joined by ``;``),
        or None when it may not fail."""
        found = self.allowed.get(row)  # a reason is an image's label: capped where it is shown (to_dict keeps it)
        return "; ".join(f"{a['source']}: {capped(a['reason'])}" for a in found) if found else None

    def to_dict(self) -> dict[str, Any]:
        """Builtins: the column's ``expectations`` in the matrix JSON, and what xdist workers get."""
        out: dict[str, Any] = {
            "required": {r: list(s) for r, s in self.required.items()},
            "allowed": {r: [dict(a) for a in a_list] for r, a_list in self.allowed.items()},
            "intent": {"value": self.intent, "sources": list(self.intent_sources)} if self.intent else None}
        if self.ignored:
            out["ignored"] = {r: [dict(a) for a in a_list] for r, a_list in self.ignored.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Expectation:
        """The inverse of :meth:`to_dict`; anything malformed reads as no expectation."""
        data = data if isinstance(data, Mapping) else {}

        def part(key: str) -> Mapping[str, Any]:
            found = data.get(key)
            return found if isinstance(found, Mapping) else {}

        def allowances(found: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
            return {str(r): [{"source": str(a.get("source", "")), "reason": str(a.get("reason", ""))}
                             for a in lst if isinstance(a, Mapping)]
                    for r, lst in found.items() if isinstance(lst, list)}

        intent, required = part("intent"), part("required")
        return cls({str(r): [str(s) for s in src] for r, src in required.items() if isinstance(src, list)},
                   allowances(part("allowed")), str(intent["value"]) if intent.get("value") else None,
                   [str(s) for s in intent.get("sources") or []], allowances(part("ignored")))


def _add(sources: list[str], source: str) -> None:
    if source not in sources:
        sources.append(source)


def combine(image: str, names: Sequence[str], option_rows: Sequence[str], entries: Sequence[Entry],
            labels: Entry | None) -> Expectation:
    """The expectations of one image: ``--require`` rows, every file entry that matches one of
    *names*, and the image's own labels; :class:`UsageProblem` on a conflict between them.

    The labels may add required rows and state an intent; their allowed failures apply only when
    a matching table trusts them (``trust-image-allowances = true``), and are kept as *ignored*
    otherwise: the repository decides what is excused, never the image under test."""
    exp = Expectation()
    for row in option_rows:
        _add(exp.required.setdefault(row, []), FROM_OPTION)
        exp.refs.append((row, FROM_OPTION))
    matching = [e for e in entries if e.matches(names)]
    trusted = any(e.trust_allowances for e in matching)
    for e in [*matching, *([labels] if labels else [])]:
        for row in e.require:
            _add(exp.required.setdefault(row, []), e.source)
            exp.refs.append((row, f"{e.where} {e.keys[0]}"))
        for row, reason in e.allow_fail:
            into = exp.ignored if e is labels and not trusted else exp.allowed
            if not any(a["source"] == e.source and a["reason"] == reason for a in into.get(row, [])):
                into.setdefault(row, []).append({"source": e.source, "reason": reason})
            exp.refs.append((row, f"{e.where} {e.keys[1]}"))
        if e.intent:
            if exp.intent and exp.intent != e.intent:
                raise UsageProblem(f"expectations for {image}: intent {exp.intent!r} ({', '.join(exp.intent_sources)}) "
                                   f"and {e.intent!r} ({e.source}) disagree; give the image one intent")
            exp.intent = e.intent
            _add(exp.intent_sources, e.source)
    for row, sources in exp.required.items():
        if row in exp.allowed:
            allowed_by = ", ".join(dict.fromkeys(a["source"] for a in exp.allowed[row]))
            raise UsageProblem(f"expectations for {image}: row {row!r} is required by {', '.join(sources)} and "
                               f"allowed to fail by {allowed_by}; keep one of them")
    return exp


def unknown_rows(expectations: Iterable[Expectation], known: Collection[str], hint: str = LIST_HINT) -> list[str]:
    """One line per row named in *expectations* that is not in *known*, naming the closest
    known row and *hint*, where the rows are listed (``--require: no such row 'torch.cdua'; did
    you mean torch.cuda? ...``)."""
    lines: list[str] = []
    for exp in expectations:
        for row, where in exp.refs:
            if row in known:
                continue
            near = closest(row, known)
            line = f"{where}: no such row {row!r}; " + (f"did you mean {near}? ({hint})" if near else hint)
            if line not in lines:
                lines.append(line)
    return lines


# -- every image covered, every table used ---------------------------------------------------------


def _closest_glob(names: Sequence[str], globs: Sequence[str]) -> str | None:
    best, score = None, 0.0
    for glob in globs:
        for name in names:
            ratio = difflib.SequenceMatcher(None, glob, name).ratio()
            if ratio > score:
                best, score = glob, ratio
    return best


def uncovered(images: Sequence[tuple[str, Sequence[str]]], entries: Sequence[Entry],
              option_rows: Sequence[str]) -> str | None:
    """The usage error for the first image of *images* (``(--image value, every name of it)``)
    that none of the repository's expectations covers, or None.

    The repository defines expectations with ``--require`` (which covers every image) or with
    ``[[image]]`` tables; once it has tables, an image that no ``match`` glob finds would be run
    ungated while the job looks gated (a typo in a glob, a name form the glob does not expect):
    that stops the run, naming the image, the globs and the closest one.  A table with only
    ``match`` covers an image without gating it: the explicit way to say so."""
    if option_rows or not entries:
        return None
    globs = list(dict.fromkeys(p for e in entries for p in e.patterns))
    header = entries[0].where.rsplit(" #", 1)[0]
    for spec, names in images:
        if any(e.matches(names) for e in entries):
            continue
        near = _closest_glob(names, globs)
        shown = ", ".join(list(names)[:4]) + (", ..." if len(names) > 4 else "")
        return (f"--image {spec}: no table of {header} matches it, so nothing would gate it (its names: {shown}; "
                f"the globs: {', '.join(globs)}" + (f"; closest: {near}" if near else "") + "); fix the glob, or add a "
                f"table for it (match = \"{spec}\"; one with only 'match' checks it without gating it)")
    return None


def unused(entries: Sequence[Entry], images: Sequence[Sequence[str]]) -> list[Entry]:
    """The tables that match no image of the run (*images*: every name of each image): named in
    the summary, since a job may gate only some of the repository's images."""
    return [e for e in entries if not any(e.matches(names) for names in images)]


def unused_line(entry: Entry) -> str:
    """``pyproject.toml [[tool.containercheck.image]] #2 (match team/train:*) matched no image of this run``."""
    return f"{entry.where} (match {', '.join(entry.patterns)}) matched no image of this run"


def for_columns(matrix: Matrix, entries: Sequence[Entry],
                option_rows: Sequence[str]) -> dict[tuple[str, str], Expectation]:
    """Each column's expectations under *entries* and *option_rows*, from what the matrix recorded
    of the image (its names and labels: :func:`~.names.image_names`, :func:`~.matrix.image_labels`),
    as a pytest run would have found them; :class:`UsageProblem` on an image no table covers, a
    conflict or a malformed label -- the same rules as the run's (``containercheck gate``)."""
    from .names import image_names
    from .runtimes import family_of, runtime_names

    def family(column: Column) -> str:
        return family_of(column.runtime) if column.runtime in runtime_names() else "oci"

    names = {key: image_names(c.spec or c.id, c.ref or c.id, family(c), c.facts, c.id)
             for key, c in matrix.columns.items()}
    problem = uncovered([(c.spec or c.id, names[k]) for k, c in matrix.columns.items()], entries, option_rows)
    if problem:
        raise UsageProblem(problem)
    out = {}
    for key, column in matrix.columns.items():
        labels = from_labels(image_labels(column), column.spec or column.id)
        out[key] = combine(column.id, names[key], option_rows, entries, labels)
    return out


# -- in the reports -------------------------------------------------------------------------------


def of_column(column: Column) -> Expectation | None:
    """The expectations recorded for *column*; None for a matrix written before they were."""
    return None if column.expectations is None else Expectation.from_dict(column.expectations)


def required_by(matrix: Matrix, cell: Cell) -> list[str]:
    """The sources that required *cell*'s row on its image (empty: not required)."""
    column = matrix.columns.get((cell.column, cell.host))
    exp = of_column(column) if column is not None else None
    return list(exp.required.get(cell.row, [])) if exp is not None else []


def allowance(matrix: Matrix, cell: Cell) -> str | None:
    """Why *cell*'s row may fail on its image (``pyproject.toml: EGL only``, several joined by
    ``;``), or None: from the gate's record of the cell, else the column's expectations; for an
    expected failure no expectation allows (a test's own ``xfail`` mark), what the mark said."""
    gate = cell.gate if isinstance(cell.gate, dict) else None
    allowed = gate.get("allowed_by") if gate is not None else None
    if isinstance(allowed, list) and allowed:
        return "; ".join(f"{a.get('source', '')}: {a.get('reason', '')}" for a in allowed if isinstance(a, dict))
    column = matrix.columns.get((cell.column, cell.host))
    exp = of_column(column) if column is not None else None
    found = exp.allowance(cell.row) if exp is not None and gate is None else None
    if found is None and cell.status == "xfail":
        said = str(cell.evidence.get("xfail") or "")
        return said.removeprefix("allowed to fail by ") if said.startswith("allowed to fail by ") \
            else f"an xfail mark ({said})" if said else "an xfail mark"
    return found


def gate_note(cell: Cell) -> str:
    """What the gate said of a cell whose status it left as the check observed it (an allowed row
    that errored; a failure the image's own, untrusted, allowance would have excused), else ''."""
    gate = cell.gate if isinstance(cell.gate, dict) else {}
    reason = gate.get("reason")
    if isinstance(reason, str) and reason and gate.get("status") == gate.get("observed") == cell.status:
        return reason
    return ""


GATE_PAGE = 'the docs\' page "The CI gate"'
"""Where a user reads about expectations: a page of the docs site, by its title (a pip user has
no ``docs/`` directory)."""

_NOT_PASSED = (("skip", "skipped"), ("error", "errored"), ("fail", "failed"), ("interrupted", "interrupted"),
               ("xfail", "failed as allowed"))
"""The statuses the one line on an image nothing was expected of counts, in this order."""

UNUSED_KEY = "unused_expectations"
"""The matrix ``meta`` key of the tables that matched no image of the run."""


def unused_tables(matrix: Matrix) -> list[str]:
    """The lines naming the repository's tables that matched no image of the run (:func:`unused_line`)."""
    found = matrix.meta.get(UNUSED_KEY)
    return [str(x) for x in found] if isinstance(found, list) else []


def describe(matrix: Matrix, key: tuple[str, str], title: str) -> str | None:
    """One line on what the gate asked of column *key* (shown as *title*), or None for a column
    without a record of it.  An image nothing was expected of says so, with how much skipped:
    ``no expectations for team/img:1.4: 13 of 17 rows skipped; see --require ...``; an error is
    counted as an error, never as a skip (``17 of 17 rows errored``).  It points where a pip user
    can follow: ``pytest --help`` and the docs site's page, never a path in the repository."""
    exp = of_column(matrix.columns[key])
    if exp is None:
        return None
    if exp.empty and not exp.ignored:
        cells = [c for c in matrix.cells.values() if (c.column, c.host) == key]
        counts = [(n, word) for status, word in _NOT_PASSED
                  if (n := sum(c.status == status for c in cells))]
        if counts:
            (n, word), rest = counts[0], counts[1:]
            counted = f"{n} of {len(cells)} rows {word}" + "".join(f", {m} {w}" for m, w in rest)
        else:
            counted = f"{len(cells)} of {len(cells)} rows passed"
        return f"no expectations for {title}: {counted}; see --require in pytest --help and {GATE_PAGE}"
    parts = []
    if exp.required:
        parts.append("requires " + ", ".join(f"{r} ({', '.join(s)})" for r, s in exp.required.items()))
    if exp.allowed:
        parts.append("may fail: " + ", ".join(f"{r} (by {exp.allowance(r)})" for r in exp.allowed))
    if exp.intent:
        parts.append(f"intent {exp.intent} ({', '.join(exp.intent_sources)})")
    if exp.ignored:
        said = ", ".join(f"{r} (by {'; '.join(a['source'] + ': ' + a['reason'] for a in lst)})"
                         for r, lst in exp.ignored.items())
        parts.append(f"may not fail: {said}: {IGNORED}")
    return f"expectations for {title}: " + "; ".join(parts)
