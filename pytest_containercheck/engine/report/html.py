"""Matrix -> one self-contained HTML page.

The page needs no network to be viewed (cluster admins open it from a shared filesystem or
a CI artifact): CSS and a few lines of JS are inline, images are ``data:`` URIs, nothing is
fetched.  Every value from a run (details, evidence, image names, host facts) is escaped:
all markup goes through :func:`fmt`, which escapes its arguments unless they are already
:class:`Safe` — the autoescaping of a template engine, without a dependency.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..expectations import allowance, describe, gate_note, required_by, unused_tables
from ..matrix import Cell, Column, Matrix, image_identity, same_image
from ..textsafe import EVIDENCE_CAP, capped, capped_all, visible
from .markdown import cell_where, provenance, skip_notes
from .terminal import column_titles

#: Artifacts larger than this are linked by path instead of embedded (keeps the page openable).
MAX_EMBED_BYTES = 4_000_000

_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


class Safe(str):
    """A string that is already HTML: :func:`fmt` inserts it unescaped."""

    __slots__ = ()


def esc(value: object) -> Safe:
    """*value* as HTML text, at most :data:`~..textsafe.TEXT_CAP` characters of it (the JSON report
    has it whole); ``Safe`` values pass through unchanged."""
    return value if isinstance(value, Safe) else Safe(html.escape(capped(str(value)), quote=True))


def pre(value: Any) -> Safe:
    """*value* (evidence, host facts) as indented JSON for a ``<pre>``, each string in it at most
    :data:`~..textsafe.EVIDENCE_CAP` characters."""
    return Safe(html.escape(_json(capped_all(value, EVIDENCE_CAP)), quote=True))


def fmt(template: str, *args: object, **kwargs: object) -> Safe:
    """``template.format(...)`` with every argument escaped: *template* is the only raw HTML."""
    return Safe(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[object], sep: str = "") -> Safe:
    """Escape and concatenate *parts*."""
    return Safe(sep.join(esc(p) for p in parts))


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1d1d1f}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin-top:1.6em}
.banner{background:#b00020;color:#fff;padding:.6em 1em;border-radius:4px;font-weight:600;margin:.6em 0}
.summary span{display:inline-block;margin-right:1em}
table.matrix{border-collapse:collapse;margin-top:.8em}
.matrix th,.matrix td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left;max-width:26em}
.matrix thead th{background:#f4f4f6}.matrix thead tr.fact th,.matrix thead tr.fact td{font-size:.85em;
background:#fafafa;font-weight:normal}.matrix thead tr.fact th{color:#555}
.matrix tbody th{font-family:ui-monospace,monospace;font-weight:normal;white-space:nowrap}
td.pass{background:#e3f4e1}td.fail{background:#fbdcdc}td.error{background:#ffe7c2}td.skip{background:#efefef;color:#555}
td.interrupted{background:#e6e0f4}td.xfail{background:#fff3c4}
.req{font-size:.75em;font-weight:600;color:#7b2cbf;margin-left:.3em}
td.none{color:#aaa;text-align:center}td.conflict{outline:3px dashed #7b2cbf;outline-offset:-3px}
summary{cursor:pointer}details .ev{margin-top:.4em;font-size:.9em}
.fix{background:#fff8d6;border-left:3px solid #e0b000;padding:.2em .4em;margin:.3em 0}
pre{background:#f6f8fa;padding:.5em;overflow:auto;max-height:24em;font-size:.85em;white-space:pre-wrap;
word-break:break-word}
.thumbs{display:flex;gap:.3em;margin-top:.3em;flex-wrap:wrap}.thumbs figure{margin:0;font-size:.75em;color:#555}
img.art{width:96px;border:1px solid #bbb;cursor:zoom-in;display:block}
img.art.zoom{width:auto;max-width:none;cursor:zoom-out}
table.kv{border-collapse:collapse;font-size:.9em}.kv td,.kv th{border:1px solid #ddd;padding:.1em .4em}
.tag{display:inline-block;padding:0 .4em;border-radius:3px;background:#eee;font-size:.85em}
.muted{color:#777}
"""

# Click an image to see it at full size: the only script on the page, and it loads nothing.
_JS = ("document.addEventListener('click',function(e){var t=e.target;"
       "if(t.tagName==='IMG'&&t.classList.contains('art')){t.classList.toggle('zoom');}});")


def _render_html(matrix: Matrix, *, artifact_dirs: Sequence[str | Path] = (),
                 embed_roots: Sequence[str | Path] | None = None) -> str:
    """The matrix as one self-contained HTML page.

    Artifact files named in the cells (render result, baseline, diff) are read and embedded
    as ``data:`` URIs; relative paths are looked up in *artifact_dirs*, then the current
    directory.  A file that cannot be read is named, not embedded.
    """
    dirs = _Sources([Path(d) for d in artifact_dirs],
                    [Path(d) for d in (artifact_dirs if embed_roots is None else embed_roots)])
    keys = list(matrix.columns)
    counts = matrix.counts()
    parts: list[Safe] = [Safe("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"),
                         Safe('<meta name="viewport" content="width=device-width,initial-scale=1">'),
                         fmt("<title>containercheck matrix{}</title>",
                             "" if matrix.complete else " (incomplete)"),
                         fmt("<style>{}</style></head><body>", Safe(_CSS)),
                         Safe("<h1>containercheck matrix</h1>")]
    if not matrix.complete:
        parts.append(Safe('<div class="banner" id="incomplete">INCOMPLETE: the run was interrupted (Ctrl-C, '
                          "SIGTERM or a time limit); cells that did not run are missing, and the check that "
                          "was running is marked interrupted.</div>"))
    parts.append(fmt('<p class="summary">{}</p>', join(
        fmt("<span>{} {} {}</span>", SYMBOL[s], n, s) for s, n in counts.items())))
    parts.append(_meta(matrix))
    if not keys or not matrix.rows:
        parts.append(Safe("<p>No containercheck cells were recorded.</p>"))
    else:
        parts.append(_grid(matrix, keys, dirs))
        parts.append(Safe('<p class="muted">' + " · ".join(f"{sym} {st}" for st, sym in SYMBOL.items())
                          + " · dashed outline: conflicting results · click a cell for its evidence, "
                          "an image to enlarge it</p>"))
    parts.append(_expectations(matrix))
    parts.append(_failures(matrix))
    parts.append(_conflicts(matrix))
    parts.append(_duplicates(matrix))
    parts.append(_hosts(matrix))
    parts.append(fmt("<script>{}</script></body></html>\n", Safe(_JS)))
    return "".join(parts)


# -- page sections ----------------------------------------------------------------------------


def _meta(matrix: Matrix) -> Safe:
    meta = matrix.meta
    items: list[Safe] = [esc(line) for line in provenance(meta)]
    if meta.get("run_id"):
        items.append(fmt("run <code>{}</code>", meta["run_id"]))
    if meta.get("pytest_args"):
        items.append(fmt("<code>pytest {}</code>", " ".join(map(str, meta["pytest_args"]))))
    if meta.get("merged_from"):
        items.append(fmt("merged from {}", ", ".join(map(str, meta["merged_from"]))))
    return fmt('<p class="muted">{}</p>', join(items, " · ")) if items else Safe("")


def _grid(matrix: Matrix, keys: list[tuple[str, str]], dirs: _Sources) -> Safe:
    titles = column_titles(matrix)
    multi_host = len({h for _, h in keys}) > 1
    head = [fmt("<tr><th>check</th>{}</tr>", join(
        fmt('<th title="{}">{}</th>', t, key[0] if multi_host else t) for t, key in zip(titles, keys)))]
    facts = [_column_facts(matrix, matrix.columns[k]) for k in keys]
    present = {label for f in facts for label in f}
    for label in (label for label in _FACT_LABELS if label in present):
        values = [f.get(label, ("–", "")) for f in facts]
        head.append(fmt('<tr class="fact"><th>{}</th>{}</tr>', label,
                        join(fmt('<td title="{}">{}</td>', full, short) for short, full in values)))
    conflicted = {(c.row, c.column, c.host) for c in matrix.conflicts}
    notes = skip_notes(matrix)
    body = []
    for row in matrix.rows:
        cells = []
        for key in keys:
            cell = matrix.get(row, key)
            if cell is None:
                cells.append(Safe('<td class="none">–</td>'))
                continue
            cls = cell.status + (" conflict" if (row, *key) in conflicted else "")
            cells.append(fmt('<td class="{}" id="{}">{}</td>', cls, _anchor(cell),
                             _cell(cell, dirs, notes, required_by(matrix, cell), allowance(matrix, cell))))
        body.append(fmt("<tr><th>{}</th>{}</tr>", row, join(cells)))
    legend = join(fmt('<p class="muted">[{}] skipped: {}</p>', n, d) for d, n in notes.items())
    return fmt('<table class="matrix"><thead>{}</thead><tbody>{}</tbody></table>{}', join(head), join(body), legend)


def _cell(cell: Cell, dirs: _Sources, notes: Mapping[str, int], required: Sequence[str] = (),
          allowed: str | None = None) -> Safe:
    detail = cell.detail or cell.status
    if cell.status == "skip" and cell.detail in notes:
        detail = f"[{notes[cell.detail]}]"  # said once, under the table
    ev: list[Safe] = [fmt('<div><span class="tag">{}</span>{} · {} · <code>{}</code></div>',
                          cell.status, fmt(" <b>{} fault</b>", cell.fault) if cell.fault else "",
                          _seconds(cell.duration), cell.nodeid)]
    if cell.fix:
        ev.append(fmt('<div class="fix"><b>fix:</b> {}</div>', cell.fix))
    if required:
        ev.append(fmt("<div>required by {}</div>", ", ".join(required)))
    if allowed and cell.status == "xfail":
        ev.append(fmt('<div class="fix"><b>expected failure, allowed to fail by</b> {}</div>', allowed))
    if gate_note(cell):
        ev.append(fmt('<div class="fix"><b>gate:</b> {}</div>', gate_note(cell)))
    if cell.probes:
        ev.append(_probe_table(cell.probes))
    if cell.evidence:
        ev.append(fmt("<div>evidence</div><pre>{}</pre>", pre(cell.evidence)))
    for name, path in cell.artifacts.items():
        ev.append(fmt("<div>{}: <code>{}</code></div>", name, path))
    mark = fmt('<span class="req" title="required by {}">required</span>', ", ".join(required)) if required else ""
    summary = fmt('<summary><span class="sym">{}</span>{} {}</summary>', SYMBOL[cell.status], mark, detail)
    thumbs = [_figure(name, path, dirs) for name, path in cell.artifacts.items()]
    shown = [t for t in thumbs if t]
    strip = fmt('<div class="thumbs">{}</div>', join(shown)) if shown else Safe("")
    return fmt("<details>{}<div class=\"ev\">{}</div></details>{}", summary, join(ev), strip)


def _probe_table(probes: Mapping[str, Any]) -> Safe:
    rows = []
    for name, p in probes.items():
        info = p if isinstance(p, Mapping) else {}
        timings = info.get("timings") or {}
        t = ", ".join(f"{k} {v:.3f} s" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in timings.items())
        rows.append(fmt("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", name, info.get("status", ""),
                        _seconds(info.get("duration")), t))
    return fmt('<table class="kv"><tr><th>probe</th><th>status</th><th>wall</th><th>timings</th></tr>{}</table>',
               join(rows))


def _figure(name: str, path: str, dirs: _Sources) -> Safe:
    data = _read_artifact(path, dirs)
    if data is None:
        return Safe("")
    mime = next((m for magic, m in _IMAGE_MAGIC if data.startswith(magic)), None)
    if mime is None:  # only raster images are embedded: an SVG could carry script
        return Safe("")
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return fmt('<figure><img class="art" alt="{0}" title="{0} ({1})" src="{2}"><figcaption>{3}</figcaption></figure>',
               name, path, Safe(uri), name.rsplit("-", 1)[-1])  # base64: nothing to escape


@dataclasses.dataclass(frozen=True)
class _Sources:
    """Where artifact paths are looked up (*bases*), and the only trees files may come from (*roots*)."""

    bases: list[Path]
    roots: list[Path]


def _read_artifact(path: str, dirs: _Sources) -> bytes | None:
    """The file a cell names, only when it lies inside one of *dirs* (after resolving links and
    ``..``): a result file is someone else's, and ``/etc/shadow`` or ``../../.ssh/id_rsa`` named
    in it must not end up inside the page (an artifact is also embedded only when it is a
    raster image, see :func:`_artifact`)."""
    p = Path(path)
    roots = []
    for d in dirs.roots:
        try:
            roots.append(d.resolve())
        except OSError:
            continue
    for candidate in [p] if p.is_absolute() else [d / p for d in dirs.bases]:
        try:
            real = candidate.resolve()
            if not any(real == root or real.is_relative_to(root) for root in roots):
                continue
            if real.is_file() and real.stat().st_size <= MAX_EMBED_BYTES:
                return real.read_bytes()
        except OSError:
            continue
    return None


def _failures(matrix: Matrix) -> Safe:
    problems = matrix.problems()
    if not problems:
        return Safe("")
    items = []
    for c in problems:
        items.append(fmt('<li><a href="#{}">{} <b>{}</b> on {}</a>{}: {}{}</li>', _anchor(c), SYMBOL[c.status], c.row,
                         cell_where(matrix, c), fmt(" <i>[{} fault]</i>", c.fault) if c.fault else "",
                         c.detail or c.status, fmt('<div class="fix"><b>fix:</b> {}</div>', c.fix) if c.fix else ""))
    return fmt("<h2>Failures</h2><ul>{}</ul>", join(items))


def _expectations(matrix: Matrix) -> Safe:
    """What the gate asked of each image (or that it asked nothing), and every expected failure
    with why it is allowed."""
    keys = list(matrix.columns)
    said = [line for key, title in zip(keys, column_titles(matrix)) if (line := describe(matrix, key, title))]
    said += [f"not applied: {line}" for line in unused_tables(matrix)]
    items = [fmt("<li>{}</li>", line) for line in said]
    for c in (c for r in matrix.rows for key in keys if (c := matrix.get(r, key)) is not None and c.status == "xfail"):
        items.append(fmt('<li><a href="#{}">{} <b>{}</b> on {}</a>: expected failure: {}; allowed to fail by {}</li>',
                         _anchor(c), SYMBOL["xfail"], c.row, cell_where(matrix, c), c.detail or "failed",
                         allowance(matrix, c) or ""))
    return fmt("<h2>Expectations</h2><ul>{}</ul>", join(items)) if items else Safe("")


def _conflicts(matrix: Matrix) -> Safe:
    if not matrix.conflicts:
        return Safe("")
    items = []
    for other in matrix.conflicts:
        shown = matrix.get(other.row, (other.column, other.host))
        now = fmt("{} {}", SYMBOL[shown.status], shown.detail) if shown else Safe("–")
        items.append(fmt("<li><b>{}</b> on {} @ {}: shown {}; also {} {} <code>{}</code></li>", other.row,
                         other.column, other.host, now, SYMBOL[other.status], other.detail, other.nodeid))
    return fmt("<h2>Conflicting results</h2><p>The same check, image and host gave different results in the "
               "merged files; the grid shows the worse one.</p><ul>{}</ul>", join(items))


def _duplicates(matrix: Matrix) -> Safe:
    duplicates = matrix.meta.get("duplicates") or []
    if not duplicates:
        return Safe("")
    items = [fmt("<li><b>{}</b> on {} @ {}: {}</li>", d.get("row"), d.get("column"), d.get("host"),
                 ", ".join(map(str, d.get("files") or []))) for d in duplicates]
    return fmt("<h2>Duplicates</h2><p>Cells that several merged files reported (one is shown; where they "
               "disagree they are also listed above).</p><ul>{}</ul>", join(items))


def _hosts(matrix: Matrix) -> Safe:
    if not matrix.hosts:
        return Safe("")
    blocks = [fmt("<details><summary>{}</summary><pre>{}</pre></details>", name, pre(facts))
              for name, facts in matrix.hosts.items()]
    return fmt("<h2>Hosts</h2>{}", join(blocks))


# -- facts per column -------------------------------------------------------------------------


#: The head rows under each column, in this order (a row shows only where some column has it).
_FACT_LABELS = ("host", "runtime", "image id", "same image", "GPUs", "driver / CUDA", "GPU in image", "launch",
                "started in", "Slurm")


def _column_facts(matrix: Matrix, column: Column) -> dict[str, tuple[str, str]]:
    """Label -> (short text, full text for the tooltip) for the head of one column."""
    host = matrix.hosts.get(column.host) or {}
    facts = column.facts
    launch = _mapping(facts.get("launch"))
    out: dict[str, tuple[str, str]] = {"host": (column.host, str(host.get("os") or ""))}
    runtime = str(facts.get("runtime") or column.runtime or "")
    out["runtime"] = (f"{runtime} {facts.get('runtime_version') or ''}".strip() or "–", "")
    identity = image_identity(column)
    if identity:
        out["image id"] = (identity.removeprefix("sha256:")[:12], identity)
    elif facts.get("sif_id"):
        out["image id"] = (f"SIF {str(facts['sif_id'])[:8]}", f"SIF ID {facts['sif_id']} (no source image digest)")
    for n, group in enumerate(same_image(matrix)):
        if {"column": column.id, "host": column.host} in group["columns"]:
            others = [f"{c['column']} @ {c['host']}" for c in group["columns"]
                      if (c["column"], c["host"]) != column.key]
            out["same image"] = (f"group {chr(65 + n % 26)} (by {group['by']})", "; ".join(others))
    gpus = host.get("gpus") or []
    if gpus:
        names: dict[str, int] = {}
        for g in gpus:
            names[str(g.get("name"))] = names.get(str(g.get("name")), 0) + 1
        out["GPUs"] = (", ".join(f"{n}× {name}" for name, n in names.items()), str(host.get("gpu_summary") or ""))
    else:
        out["GPUs"] = ("none" if host else "–", str(host.get("gpu_summary") or ""))
    out["driver / CUDA"] = (f"{host.get('driver_version') or '–'} / {host.get('cuda_version') or '–'}", "")
    gpu = _mapping(launch.get("gpu"))
    if gpu:
        attached = "attached" if gpu.get("attached") else "not attached"
        out["GPU in image"] = (attached, str(gpu.get("error") or gpu.get("fix") or gpu.get("why") or ""))
    if launch.get("plain_launch"):
        diffs = [str(d) for d in launch.get("launch_differences") or []]
        out["launch"] = (f"{len(diffs)} difference(s)" if diffs else "as users run it",
                         "; ".join(diffs) or str(launch.get("plain_launch")))
    if launch.get("started_in_s") is not None:
        out["started in"] = (_seconds(launch.get("started_in_s")), str(launch.get("container") or ""))
    slurm = host.get("slurm") or {}
    if slurm.get("SLURM_JOB_ID"):
        job = str(slurm["SLURM_JOB_ID"])
        if slurm.get("SLURM_ARRAY_JOB_ID"):
            job += f" (array {slurm['SLURM_ARRAY_JOB_ID']}_{slurm.get('SLURM_ARRAY_TASK_ID', '')})"
        where = " ".join(str(slurm[k]) for k in ("SLURMD_NODENAME", "SLURM_JOB_PARTITION") if slurm.get(k))
        out["Slurm"] = (f"job {job}" + (f" on {where}" if where else ""),
                        ", ".join(f"{k}={v}" for k, v in slurm.items()))
    return out


# -- helpers ------------------------------------------------------------------------------------


#: Status symbols for the page.  Not Markdown's emoji: cluster and CI machines often have
#: no emoji font, and the page must read the same everywhere (these are in DejaVu Sans).
SYMBOL = {"pass": "\u2714", "fail": "\u2718", "error": "\u26a0", "skip": "\u2013", "interrupted": "\u25a0",
          "xfail": "\u2612"}


def _anchor(cell: Cell) -> str:
    # A digest, not a slug: row and image names differ in punctuation only ("a.b" vs "a-b").
    return "cell-" + hashlib.sha1(f"{cell.row}\0{cell.column}\0{cell.host}".encode()).hexdigest()[:12]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, (int, float)) else ""


def _json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str, ensure_ascii=False)


def render_html(matrix: Matrix, *, artifact_dirs: Sequence[str | Path] = (),
                embed_roots: Sequence[str | Path] | None = None) -> str:
    """The matrix as one self-contained HTML page (see :func:`_render_html`).

    Every control character from the image, an archive or a merged file is shown as an escape
    (:func:`~pytest_containercheck.engine.textsafe.visible`), never sent raw.
    """
    return visible(_render_html(matrix, artifact_dirs=artifact_dirs, embed_roots=embed_roots))
