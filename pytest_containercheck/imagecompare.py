"""Rendered images in a ``container`` test: the baseline policy applied to a render probe's PNG.

The comparison itself is the engine's (:mod:`.engine.imagecompare`, pure); this module makes it
a cell: evidence, artifacts, and a failure with its fix.  Users' own render checks import
:func:`check_image` and :func:`renderer_label` from here (see docs/render.md).
"""

from __future__ import annotations

from .container import Container
from .engine.imagecompare import (
    BUILTIN_SCENE,
    ImageVerdict,
    fingerprint_from_facts,
    is_ci,
    judge_image,
    renderer_label,
)
from .engine.probing import ProbeResult

__all__ = ["check_image", "renderer_label"]


def check_image(container: Container, result: ProbeResult, *, name: str = BUILTIN_SCENE) -> ImageVerdict:
    """Judge the PNG of a ``render`` probe against its baselines, inside a container test.

    Uses ``--baseline-dir`` / ``--update-baselines`` / ``--artifacts-dir`` from
    ``container.options`` and ``CI``; records the comparison as cell evidence; on failure
    saves result, baseline and an amplified diff as artifacts and fails the test.  Returns
    the verdict when it passed (``verdict.summary`` is meant for the cell note).
    """
    if not result.ok:
        container.error(result.summary(), evidence=result.traceback or result.stderr[-3000:])
    facts = result.facts
    backend = str(facts.get("backend") or "egl")
    if facts.get("scene_error"):
        container.evidence("scene_traceback", facts.get("scene_traceback"))
        container.fail(f"the scene script raised {facts['scene_error']}", fix="fix the scene script")
    if "png" not in result.artifacts_b64:
        said = "; ".join((facts.get("vtk_messages") or [])[:2])
        container.fail(f"the render probe returned no image ({facts.get('render_exit')} during "
                       f"{facts.get('render_stage')}{'; VTK: ' + said if said else ''})",
                       fix="run the built-in render.osmesa/render.egl rows on this image: they name what is missing")
    if facts.get("frames_identical") is False:
        # A baseline recorded from a nondeterministic render would fail at random later.
        container.fail("nondeterministic render: two renders of the same scene differ",
                       fix="make the scene deterministic (no random data without a fixed seed, no time-dependent "
                           "content); with aa='none' Mesa's llvmpipe is deterministic")
    png = result.artifact("png")
    key = fingerprint_from_facts(facts).key
    options = container.options
    verdict = judge_image(png, name=name, backend=backend, key=key, baseline_dir=options.baseline_dir,
                          update=options.update_baselines, ci=is_ci())
    container.evidence("image", verdict.evidence())
    for label, data in verdict.artifacts.items():
        container.artifact(f"{name}-{label}", data, ".png")
    if verdict.passed and not verdict.artifacts and options.keep_render_images:
        # Only for --matrix-html, which shows what every image rendered; otherwise a pass writes nothing.
        container.artifact(f"{name}-result", png, ".png")
    if not verdict.passed:
        same = verdict.comparison is not None and verdict.comparison.mode == "exact"
        # Same fingerprint = same renderer, driver and VTK: only the image's content can differ.
        container.fail(verdict.detail, fix=verdict.fix, fault="image" if same else None)
    return verdict
