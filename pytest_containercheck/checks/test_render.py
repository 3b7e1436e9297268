"""Built-in rows about headless rendering: ``render.osmesa`` and ``render.egl``.

The verdict on the probe's facts is :func:`~pytest_containercheck.engine.verdicts.render.render_verdict`
(tested on recorded facts); the image is compared with its baseline by
:func:`~pytest_containercheck.imagecompare.check_image`.  The test functions only apply them.
"""

from __future__ import annotations

import pytest

from pytest_containercheck import Container
from pytest_containercheck.engine.verdicts.render import egl_device_used, render_verdict
from pytest_containercheck.imagecompare import check_image

# The image first, then rendering, then ML.
pytestmark = pytest.mark.containercheck_order(20)


def _render_row(container: Container, backend: str) -> None:
    res = container.probe("render", backend=backend)
    if not res.ok:
        container.facts("render", backend=backend)  # makes the cell an error, with evidence
    facts = res.facts
    container.evidence("render", {k: facts.get(k) for k in (
        "window_class", "requested_window_class", "gl_vendor", "gl_renderer", "gl_version", "egl_vendor",
        "egl_version", "egl_device_count", "vtk_version", "pyvista_version", "image_shape", "frames_identical",
        "render_exit", "render_stage", "vtk_messages")} | {"egl_device_used": egl_device_used(facts)})
    container.evidence("timings", {**res.timings, "probe_wall": round(res.duration, 3)})
    container.evidence("libraries", {k: v.get("path") if v.get("loaded") else f"missing: {v.get('error')}"
                                     for k, v in (facts.get("libraries") or {}).items()})
    container.evidence("egl_vendor_files", facts.get("egl_vendor_files"))
    launch = container.session_facts
    verdict = render_verdict(facts, backend, require_hw_render=container.options.require_hw_render,
                             require_gpu=container.options.require_gpu,
                             host_has_gpu=bool(container.host.get("has_gpu")), runtime=container.target.runtime,
                             timings=res.timings, runtime_version=launch.get("runtime_version"),
                             gpu_vendor=container.host.get("gpu_vendor"), gpu=launch.get("gpu"),
                             emulated=launch.get("container_env_names") or (), intent=container.options.intent)
    container.apply(verdict)
    image = check_image(container, res)
    container.note(f"{verdict.note}; {image.summary}")


@pytest.mark.containercheck_row("render.osmesa")
@pytest.mark.containercheck_probe("render", params={"backend": "osmesa"}, weight=3)
def test_render_osmesa(container: Container) -> None:
    """VTK renders the built-in scene offscreen through OSMesa and matches its baseline."""
    _render_row(container, "osmesa")


@pytest.mark.containercheck_row("render.egl")
@pytest.mark.containercheck_probe("render", params={"backend": "egl"}, weight=3)
def test_render_egl(container: Container) -> None:
    """VTK renders the built-in scene through EGL (GPU or Mesa) and matches its baseline."""
    _render_row(container, "egl")
