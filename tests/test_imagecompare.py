"""imagecompare: metrics, diff images, fingerprints and the baseline policy, on real renders.

The images are real llvmpipe renders of the built-in scene: the shipped baseline and the
variants recorded in tests/data/render (see its README.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_containercheck.engine import imagecompare as ic

DATA = Path(__file__).resolve().parent / "data" / "render"
KEY = "llvmpipe_mesa-22.3.6_vtk9.7_aa-none"
BASELINE = ic.SHIPPED_DIR / f"builtin.egl.{KEY}.png"
OTHER_KEY = "nvidia-a100-sxm4-80gb_nvidia-550.54.15_vtk9.7_aa-none"


def _png(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _pixels() -> np.ndarray:
    return ic.load_rgb(BASELINE.read_bytes())


def test_shipped_baselines_exist_for_both_backends() -> None:
    for backend in ("osmesa", "egl"):
        path = ic.SHIPPED_DIR / f"builtin.{backend}.{KEY}.png"
        assert ic.load_rgb(path.read_bytes()).shape == (300, 400, 3)


def test_identical_images() -> None:
    c = ic.compare(BASELINE.read_bytes(), BASELINE.read_bytes(), exact=True)
    assert (c.passed, c.identical, c.size_match, c.rms, c.differing_pixels, c.ssim) == (True, True, True, 0.0, 0, 1.0)
    assert c.summary() == "= baseline"


def test_one_pixel_fails_an_exact_comparison_but_not_a_tolerant_one() -> None:
    px = _pixels().copy()
    px[150, 200] = [255, 255, 0]
    changed = ic.encode_png(px)
    exact = ic.compare(changed, BASELINE.read_bytes(), exact=True)
    assert not exact.passed and exact.differing_pixels == 1 and exact.mode == "exact"
    assert exact.rms is not None and exact.rms > 0
    assert "1 of 120000 pixels differ" in exact.reason
    tolerant = ic.compare(changed, BASELINE.read_bytes(), exact=False)
    assert tolerant.passed and tolerant.ssim is not None and tolerant.ssim > 0.999


def test_antialiasing_passes_tolerantly() -> None:
    # What another renderer looks like: edges differ, the picture does not.
    c = ic.compare(_png("variant-msaa.png"), BASELINE.read_bytes(), exact=False)
    assert c.passed, c.reason
    assert c.ssim is not None and 0.95 < c.ssim < 1.0
    assert c.differing_pixels and c.differing_pixels > 1000
    assert not ic.compare(_png("variant-msaa.png"), BASELINE.read_bytes(), exact=True).passed


@pytest.mark.parametrize("variant", ["variant-cube-colour.png", "variant-extra-sphere.png"])
def test_a_changed_picture_fails_tolerantly_although_ssim_is_high(variant: str) -> None:
    c = ic.compare(_png(variant), BASELINE.read_bytes(), exact=False)
    assert not c.passed
    # SSIM alone would have let these through: the strong-difference rule catches them.
    assert c.ssim is not None and c.ssim >= ic.SSIM_THRESHOLD
    assert c.strong_diff_fraction is not None and c.strong_diff_fraction > ic.MAX_STRONG_DIFF_FRACTION


def test_low_ssim_fails() -> None:
    px = _pixels()
    shifted = np.roll(px, 12, axis=1)
    c = ic.compare(ic.encode_png(shifted), BASELINE.read_bytes(), exact=False)
    assert not c.passed and c.ssim is not None and c.ssim < ic.SSIM_THRESHOLD


def test_size_mismatch_fails_both_ways() -> None:
    small = ic.encode_png(_pixels()[:290, :390].copy())
    for exact in (True, False):
        c = ic.compare(small, BASELINE.read_bytes(), exact=exact)
        assert (c.passed, c.size_match, c.rms, c.differing_pixels) == (False, False, None, None)
        assert c.reason == "size mismatch: result 390x290, baseline 400x300"
        assert (c.result_size, c.baseline_size) == ((390, 290), (400, 300))
    assert ic.compare(small, BASELINE.read_bytes(), exact=True).as_dict()["result_size"] == [390, 290]


def test_alpha_is_ignored() -> None:
    rgba = np.dstack([_pixels(), np.full((300, 400), 255, np.uint8)])
    assert ic.compare(ic.encode_png(rgba), BASELINE.read_bytes(), exact=True).identical


def test_diff_image_marks_differences_in_red() -> None:
    px = _pixels().copy()
    px[10, 20] = px[10, 20] ^ 1  # a 1-level change must still be visible
    diff = Image.open(io.BytesIO(ic.diff_image(ic.encode_png(px), BASELINE.read_bytes())))
    arr = np.asarray(diff.convert("RGB"))
    assert arr.shape == (300, 400, 3)
    assert arr[10, 20, 0] >= ic.DIFF_FLOOR and arr[10, 20, 1] == 0
    unchanged = arr[100, 100]
    assert unchanged[0] == unchanged[1] == unchanged[2]  # dimmed grey background


def test_diff_image_of_different_sizes_marks_the_uncovered_part() -> None:
    small = ic.encode_png(_pixels()[:200, :300].copy())
    arr = np.asarray(Image.open(io.BytesIO(ic.diff_image(small, BASELINE.read_bytes()))).convert("RGB"))
    assert arr.shape == (300, 400, 3)
    assert tuple(arr[250, 350]) == (255, 0, 0)
    assert arr[50, 50, 0] == arr[50, 50, 1]  # covered and equal


@pytest.mark.parametrize(("renderer", "expected"), [
    ("llvmpipe (LLVM 15.0.6, 256 bits)", "llvmpipe"),
    ("llvmpipe (LLVM 17.0.6, 128 bits)", "llvmpipe"),
    ("softpipe", "softpipe"),
    ("Mesa OffScreen", "swrast"),
    ("NVIDIA A100-SXM4-80GB/PCIe/SSE2", "nvidia-a100-sxm4-80gb"),
    ("Tesla T4/PCIe/SSE2", "nvidia-tesla-t4"),
    ("NVIDIA GeForce RTX 3090/PCIe/SSE2", "nvidia-geforce-rtx-3090"),
    ("Quadro RTX 6000/PCIe/SSE2", "nvidia-quadro-rtx-6000"),
    ("Mesa Intel(R) UHD Graphics 630 (CFL GT2)", "intel-uhd-graphics-630"),
    ("AMD Radeon RX 6800 (navi21, LLVM 15.0.6, DRM 3.49, 6.1.0-18-amd64)", "amd-radeon-rx-6800"),
    (None, "unknown"),
])
def test_normalize_renderer(renderer: str | None, expected: str) -> None:
    assert ic.normalize_renderer(renderer) == expected


@pytest.mark.parametrize(("gl_renderer", "name"), [
    ("llvmpipe (LLVM 15.0.6, 256 bits)", "llvmpipe"),
    ("softpipe", "softpipe"),  # GALLIUM_DRIVER=softpipe
    ("Mesa OffScreen", "swrast"),  # classic OSMesa
    ("Software Rasterizer", "swrast"),
    ("SWR (LLVM 11.0.1, 256 bits)", "swrast"),  # OpenSWR
    ("lavapipe (LLVM 15.0.6, 256 bits)", "lavapipe"),
    ("virgl (NVIDIA GeForce RTX 3090/PCIe/SSE2)", "virgl"),  # a VM's view of its host's renderer
    # Older Mesa's state tracker: "Gallium %s on %s" (st_cb_strings.c, ST_VERSION_STRING "0.4").
    ("Gallium 0.4 on llvmpipe (LLVM 3.4, 256 bits)", "llvmpipe"),
    ("Gallium 0.4 on softpipe", "softpipe"),
    # zink on lavapipe: zink_screen.c's "zink Vulkan %d.%d(%s (%s))" with lavapipe's device name and
    # vk_DriverId_to_str(VK_DRIVER_ID_MESA_LLVMPIPE) less "VK_DRIVER_ID_".
    ("zink Vulkan 1.3(llvmpipe (LLVM 15.0.7, 256 bits) (MESA_LLVMPIPE))", "lavapipe"),
])
def test_every_cpu_renderer_is_software_not_only_llvmpipe(gl_renderer: str, name: str) -> None:
    """Each renders on the CPU: its fingerprint is software and the cell says so."""
    assert ic.normalize_renderer(gl_renderer) == name
    assert ic.fingerprint(gl_renderer, "4.5 (Core Profile) Mesa 22.3.6", "9.3.0").software
    assert ic.renderer_label({"gl_renderer": gl_renderer}) == f"{name} (software)"
    assert not ic.fingerprint("NVIDIA H200/PCIe/SSE2", "4.6.0 NVIDIA 580.159.04", "9.5.2").software
    # zink on a GPU's Vulkan driver is hardware.
    assert not ic.fingerprint("zink Vulkan 1.3(NVIDIA H200 (NVIDIA_PROPRIETARY))", "4.6 (Core Profile) Mesa 24.0.5",
                              "9.5.2").software


@pytest.mark.parametrize(("version", "expected"), [
    ("4.5 (Core Profile) Mesa 22.3.6", "mesa-22.3.6"),
    ("4.6 (Compatibility Profile) Mesa 24.0.9-0ubuntu0.1", "mesa-24.0.9-0ubuntu0.1"),
    ("3.3 (Core Profile) Mesa 23.1.0-devel (git-1a2b3c)", "mesa-23.1.0-devel"),
    ("4.6.0 NVIDIA 550.54.15", "nvidia-550.54.15"),
    ("", "unknown"),
    (None, "unknown"),
])
def test_driver_version(version: str | None, expected: str) -> None:
    assert ic.driver_version(version) == expected


def test_fingerprint_from_real_facts_and_back() -> None:
    import json

    facts = json.loads((DATA / "full-egl.json").read_text())["facts"]
    fp = ic.fingerprint_from_facts(facts)
    assert fp.key == KEY and fp.software
    assert ic.Fingerprint.parse(fp.key) == fp
    assert ic.Fingerprint.parse("not-a-fingerprint") is None
    assert ic.fingerprint("Tesla T4/PCIe/SSE2", "4.6.0 NVIDIA 535.1", "9.4.0", "fxaa").key == \
        "nvidia-tesla-t4_nvidia-535.1_vtk9.4_aa-fxaa"
    assert not ic.Fingerprint.parse(OTHER_KEY).software  # type: ignore[union-attr]
    assert ic.renderer_label(facts) == "llvmpipe (software)"
    assert ic.renderer_label({"gl_renderer": "NVIDIA A100-SXM4-80GB/PCIe/SSE2"}) == "NVIDIA A100-SXM4-80GB"


def test_baseline_names_are_checked() -> None:
    assert ic.baseline_filename("my-scene", "egl", KEY) == f"my-scene.egl.{KEY}.png"
    with pytest.raises(ValueError, match="baseline name"):
        ic.baseline_filename("../etc", "egl", KEY)


def test_find_baseline_prefers_own_fingerprint_then_user_then_llvmpipe(tmp_path: Path) -> None:
    own = ic.find_baseline("builtin", "egl", KEY, user_dir=None)
    assert own is not None and own.exact and own.source == "shipped"
    (tmp_path / f"builtin.egl.{KEY}.png").write_bytes(BASELINE.read_bytes())
    user = ic.find_baseline("builtin", "egl", KEY, user_dir=tmp_path)
    assert user is not None and user.source == "user" and user.exact
    # A GPU fingerprint without a baseline of its own falls back to llvmpipe, tolerantly.
    other = ic.find_baseline("builtin", "egl", OTHER_KEY, user_dir=tmp_path / "empty")
    assert other is not None and not other.exact and other.fingerprint == KEY and other.source == "shipped"
    assert ic.find_baseline("builtin", "egl", OTHER_KEY, user_dir=None, fallback=False) is None
    # The same renderer beats llvmpipe; the user's dir beats the shipped one.
    same_gpu = "nvidia-a100-sxm4-80gb_nvidia-535.1_vtk9.6_aa-none"
    (tmp_path / f"builtin.egl.{same_gpu}.png").write_bytes(BASELINE.read_bytes())
    pick = ic.find_baseline("builtin", "egl", OTHER_KEY, user_dir=tmp_path)
    assert pick is not None and pick.fingerprint == same_gpu
    assert ic.find_baseline("nothing", "egl", KEY, user_dir=tmp_path) is None


def test_judge_exact_pass_against_shipped() -> None:
    v = ic.judge_image(BASELINE.read_bytes(), name="builtin", backend="egl", key=KEY, baseline_dir=None)
    assert v.passed and v.comparison is not None and v.comparison.mode == "exact" and not v.artifacts
    assert v.summary == "= baseline (exact)"
    assert v.evidence()["baseline_source"] == "shipped"


def test_judge_exact_failure_carries_result_baseline_and_diff() -> None:
    v = ic.judge_image(_png("variant-extra-sphere.png"), name="builtin", backend="egl", key=KEY, baseline_dir=None)
    assert not v.passed
    assert set(v.artifacts) == {"result", "baseline", "diff"}
    assert v.detail.startswith(f"render differs from the shipped baseline builtin.egl.{KEY}.png:")
    assert v.fix is not None and "--update-baselines=failed" in v.fix


def test_judge_other_fingerprint_outside_ci_is_tolerant(tmp_path: Path) -> None:
    ok = ic.judge_image(_png("variant-msaa.png"), name="builtin", backend="egl", key=OTHER_KEY,
                        baseline_dir=tmp_path, ci=False)
    assert ok.passed and ok.comparison is not None and ok.comparison.mode == "tolerant"
    assert ok.baseline is not None and ok.baseline.fingerprint == KEY
    assert ok.summary.endswith(f"(vs {KEY})")
    bad = ic.judge_image(_png("variant-cube-colour.png"), name="builtin", backend="egl", key=OTHER_KEY,
                         baseline_dir=tmp_path, ci=False)
    assert not bad.passed and "diff" in bad.artifacts


def test_judge_missing_baseline_under_ci_fails_with_the_result(tmp_path: Path) -> None:
    v = ic.judge_image(_png("variant-msaa.png"), name="builtin", backend="egl", key=OTHER_KEY,
                       baseline_dir=tmp_path, ci=True)
    assert not v.passed and set(v.artifacts) == {"result"}
    assert f"no builtin/egl baseline for renderer fingerprint {OTHER_KEY} (CI=true" in v.detail
    assert v.fix is not None and "--update-baselines=missing" in v.fix
    # A user scene without any baseline fails outside CI too.
    none = ic.judge_image(BASELINE.read_bytes(), name="mine", backend="egl", key=KEY, baseline_dir=tmp_path)
    assert not none.passed and none.detail.startswith("no mine/egl baseline at all")


def test_update_missing_failed_all_round_trip(tmp_path: Path) -> None:
    png = _png("variant-msaa.png")
    target = tmp_path / f"mine.osmesa.{KEY}.png"
    v = ic.judge_image(png, name="mine", backend="osmesa", key=KEY, baseline_dir=tmp_path, update="missing", ci=True)
    assert v.passed and v.written == target and target.read_bytes() == png
    # Now it exists: "missing" compares (exactly) instead of writing.
    changed = _png("variant-cube-colour.png")
    v = ic.judge_image(changed, name="mine", backend="osmesa", key=KEY, baseline_dir=tmp_path, update="missing")
    assert not v.passed and v.written is None and target.read_bytes() == png
    v = ic.judge_image(changed, name="mine", backend="osmesa", key=KEY, baseline_dir=tmp_path, update="failed")
    assert v.passed and v.written == target and target.read_bytes() == changed
    v = ic.judge_image(changed, name="mine", backend="osmesa", key=KEY, baseline_dir=tmp_path)
    assert v.passed and v.comparison is not None and v.comparison.identical
    v = ic.judge_image(png, name="mine", backend="osmesa", key=KEY, baseline_dir=tmp_path, update="all")
    assert v.passed and target.read_bytes() == png
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # only this fingerprint


def test_update_never_writes_into_the_package() -> None:
    before = sorted(p.name for p in ic.SHIPPED_DIR.iterdir())
    v = ic.judge_image(_png("variant-msaa.png"), name="builtin", backend="egl", key=KEY, baseline_dir=None,
                       update="all")
    assert not v.passed and "--update-baselines needs --baseline-dir" in v.detail
    assert sorted(p.name for p in ic.SHIPPED_DIR.iterdir()) == before
    with pytest.raises(ValueError, match="update must be one of"):
        ic.judge_image(b"", name="builtin", backend="egl", key=KEY, baseline_dir=None, update="sometimes")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("True", True), ("1", True), ("", False),
                                                 ("false", False), (None, False)])
def test_is_ci(value: str | None, expected: bool) -> None:
    assert ic.is_ci({} if value is None else {"CI": value}) is expected
