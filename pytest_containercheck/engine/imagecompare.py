"""Rendered images against baselines: renderer fingerprints, metrics, diff images, baselines.

A baseline is a PNG named ``<scene>.<backend>.<fingerprint>.png``.  The fingerprint says
which software stack drew it: normalised renderer, driver version, VTK major.minor and
anti-aliasing mode, e.g. ``llvmpipe_mesa-22.3.6_vtk9.7_aa-none``.

* Same fingerprint: the same code drew the same scene, so the pixels must be equal
  (:data:`EXACT_MAX_DIFFERING_PIXELS`).
* Another fingerprint (an NVIDIA GPU against the shipped llvmpipe baseline, a newer Mesa):
  rasterisation and shading legitimately differ a little, so the images are compared by
  structural similarity (scikit-image) with :data:`SSIM_THRESHOLD`, plus a cap on the share
  of strongly differing pixels (:data:`MAX_STRONG_DIFF_FRACTION`), because SSIM alone
  misses a recoloured or an added object.
* Different sizes never match.  RMS and the number of differing pixels are always recorded
  when the sizes agree.

Everything here is pure (bytes and paths in, values out);
:func:`pytest_containercheck.imagecompare.check_image` applies the baseline policy to a
``container`` test.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outputs import write_file
from .verdict import Verdict

SSIM_THRESHOLD = 0.95
"""Minimum SSIM (per RGB channel, 7x7 window, data range 255) against a baseline of another
fingerprint.  Measured on the built-in scene (llvmpipe, 400x300) against its no-AA baseline:
MSAA 0.990, FXAA 0.987, camera turned 1 degree 0.964, zoomed 2 % 0.923, lights off 0.940;
but a recoloured cube still scores 0.958 and an added small sphere 0.981 (SSIM is about
structure), hence the second rule, :data:`MAX_STRONG_DIFF_FRACTION`."""
STRONG_DIFF_LEVEL = 64
"""A pixel "differs strongly" when some channel differs by more than this (0..255)."""
MAX_STRONG_DIFF_FRACTION = 0.005
"""At most this share of pixels may differ strongly in a tolerant comparison.  Measured as
above: MSAA 0.20 %, FXAA 0.22 % (edge pixels only), camera turned 1 degree 0.88 %, added
sphere 1.6 %, recoloured cube 4.2 %.  So 0.5 % lets edge rasterisation differ between
renderers and still catches a changed picture."""
EXACT_MAX_DIFFERING_PIXELS = 0
"""Pixels allowed to differ from a baseline of the same fingerprint: none by default."""
DIFF_GAIN = 8
"""Amplification of per-pixel differences in :func:`diff_image` (1 grey level -> 8)."""
DIFF_FLOOR = 96
"""Brightness every differing pixel gets at least, so a 1-level difference is visible."""
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "baselines"  # data beside the engine, in the package
"""llvmpipe baselines of the built-in scene, shipped with the package."""
BUILTIN_SCENE = "builtin"
SOFTWARE_RENDERERS = frozenset({"llvmpipe", "softpipe", "swrast", "swr", "lavapipe", "virgl"})
"""Normalised renderers that run on the CPU (virgl: the host's renderer, seen through a VM)."""
UPDATE_MODES = ("missing", "failed", "all")

_SAFE = re.compile(r"[^a-z0-9.+-]+")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*$")

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Pixels = npt.NDArray[np.uint8]

# numpy and Pillow are imported where pixels are handled, not with the module: the render
# checks import it at collection, and a run without render rows never needs either.


# -- fingerprints --------------------------------------------------------------------------


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-.") or "unknown"


def normalize_renderer(gl_renderer: str | None) -> str:
    """``GL_RENDERER`` -> a short, filename-safe renderer name.

    ``llvmpipe (LLVM 15.0.6, 256 bits)`` -> ``llvmpipe``;
    ``NVIDIA A100-SXM4-80GB/PCIe/SSE2`` -> ``nvidia-a100-sxm4-80gb``;
    ``Tesla T4/PCIe/SSE2`` -> ``nvidia-tesla-t4``;
    ``Mesa Intel(R) UHD Graphics 630 (CFL GT2)`` -> ``intel-uhd-graphics-630``.
    The LLVM version and vector width are dropped on purpose: llvmpipe draws the same
    pixels at 128 and 256 bits (checked), and the Mesa version is in the driver part.
    """
    if not gl_renderer:
        return "unknown"
    r = gl_renderer.strip()
    # Older Mesa named gallium drivers "Gallium 0.4 on llvmpipe (LLVM 3.4, 256 bits)" (Mesa's
    # state tracker, st_cb_strings.c: "Gallium %s on %s" with ST_VERSION_STRING): the driver follows.
    r = re.sub(r"^Gallium\s+\S+\s+on\s+", "", r)
    # zink (GL on Vulkan) names the Vulkan device and driver: "zink Vulkan 1.3(llvmpipe (LLVM 15.0.7,
    # 256 bits) (MESA_LLVMPIPE))" (Mesa src/gallium/drivers/zink/zink_screen.c, zink_get_name): on
    # lavapipe, Mesa's Vulkan on the CPU, it renders in software.
    zink = re.match(r"zink Vulkan [\d.]+\((.*) \((\w+)\)\)$", r)
    if zink and (zink.group(2) == "MESA_LLVMPIPE" or zink.group(1).lower().startswith(("llvmpipe", "lavapipe"))):
        return "lavapipe"
    low = r.lower()
    for soft in ("llvmpipe", "softpipe", "lavapipe", "virgl"):
        if low.startswith(soft):
            return soft
    if low.startswith("swr") or "swrast" in low or low.startswith("mesa offscreen") \
            or low in ("software rasterizer", "mesa x11"):
        return "swrast"
    r = r.split("/")[0]  # NVIDIA appends /PCIe/SSE2
    r = re.sub(r"\s*\(.*?\)", "", r)  # (TM), (R), (navi21, LLVM ..., DRM ...)
    r = re.sub(r"^Mesa\s+", "", r)
    low = r.lower()
    if any(low.startswith(p) for p in ("tesla", "quadro", "geforce", "titan", "rtx", "a100", "h100", "l40")):
        r = "NVIDIA " + r
    return _slug(r)


def driver_version(gl_version: str | None) -> str:
    """``GL_VERSION`` -> the driver part: ``4.5 (Core Profile) Mesa 22.3.6`` -> ``mesa-22.3.6``,
    ``4.6.0 NVIDIA 550.54.15`` -> ``nvidia-550.54.15``; ``unknown`` otherwise."""
    if not gl_version:
        return "unknown"
    m = re.search(r"\bMesa\s+([0-9][0-9A-Za-z.+~-]*)", gl_version)
    if m:
        return "mesa-" + _slug(m.group(1))
    m = re.search(r"\bNVIDIA\s+([0-9][0-9.]*)", gl_version)
    if m:
        return "nvidia-" + m.group(1).strip(".")
    rest = re.sub(r"^\s*[0-9.]+\s*(\((Core|Compatibility) Profile\))?\s*", "", gl_version)
    return _slug(rest) if rest.strip() else "unknown"


def vtk_major_minor(vtk_version: str | None) -> str:
    """``9.7.2`` -> ``9.7``."""
    if not vtk_version:
        return "unknown"
    parts = re.findall(r"\d+", vtk_version)
    return ".".join(parts[:2]) if len(parts) >= 2 else _slug(vtk_version)


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Which stack drew an image; :attr:`key` names its baseline files."""

    renderer: str
    driver: str
    vtk: str
    aa: str

    @property
    def key(self) -> str:
        """Filename-safe key, e.g. ``llvmpipe_mesa-22.3.6_vtk9.7_aa-none``."""
        return f"{self.renderer}_{self.driver}_vtk{self.vtk}_aa-{self.aa}"

    @property
    def software(self) -> bool:
        """True for CPU renderers (llvmpipe, softpipe, swrast, ...)."""
        return self.renderer in SOFTWARE_RENDERERS

    @classmethod
    def parse(cls, key: str) -> Fingerprint | None:
        """The inverse of :attr:`key` (None for a name that is not a fingerprint)."""
        parts = key.split("_")
        if len(parts) != 4 or not parts[2].startswith("vtk") or not parts[3].startswith("aa-"):
            return None
        return cls(parts[0], parts[1], parts[2][3:], parts[3][3:])


def fingerprint(gl_renderer: str | None, gl_version: str | None, vtk_version: str | None,
                aa: str | None = "none") -> Fingerprint:
    """The fingerprint of a render from its GL strings, VTK version and anti-aliasing mode."""
    return Fingerprint(normalize_renderer(gl_renderer), driver_version(gl_version),
                       vtk_major_minor(vtk_version), _slug(aa or "none"))


def fingerprint_from_facts(facts: Mapping[str, Any]) -> Fingerprint:
    """The fingerprint of a ``render`` probe's facts."""
    return fingerprint(facts.get("gl_renderer"), facts.get("gl_version"), facts.get("vtk_version"),
                       facts.get("aa"))


def renderer_label(facts: Mapping[str, Any]) -> str:
    """How a cell names the renderer: ``llvmpipe (software)`` or the GPU's GL_RENDERER."""
    fp = normalize_renderer(facts.get("gl_renderer"))
    if fp in SOFTWARE_RENDERERS:
        return f"{fp} (software)"
    raw = str(facts.get("gl_renderer") or "unknown renderer")
    return raw.split("/")[0].strip()


# -- comparison ----------------------------------------------------------------------------


def load_rgb(png: bytes) -> Pixels:
    """Decode PNG bytes to an (h, w, 3) uint8 array (alpha dropped: renders are opaque)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def encode_png(pixels: Pixels) -> bytes:
    """Encode an (h, w, 3|4) uint8 array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a result image with a baseline."""

    identical: bool
    size_match: bool
    rms: float | None
    """Root mean square of the per-channel differences (0..255); None when sizes differ."""
    differing_pixels: int | None
    """Pixels where any channel differs at all; None when sizes differ."""
    ssim: float | None
    """Structural similarity (1.0 = identical); None when not computed."""
    strong_diff_fraction: float | None
    """Share of pixels differing by more than :data:`STRONG_DIFF_LEVEL`; None when sizes differ."""
    passed: bool
    reason: str
    mode: str
    """``exact`` (same fingerprint) or ``tolerant`` (SSIM threshold)."""
    result_size: tuple[int, int]
    """(width, height) of the result."""
    baseline_size: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        """Builtins only, for cell evidence and the matrix JSON."""
        d = dataclasses.asdict(self)
        d["result_size"] = list(self.result_size)
        d["baseline_size"] = list(self.baseline_size)
        return d

    def summary(self) -> str:
        """A few words for a cell: ``= baseline``, ``SSIM 0.9810, 0.12% px differ strongly``."""
        if not self.size_match:
            return "size mismatch"
        if self.identical:
            return "= baseline"
        if self.mode == "tolerant" and self.ssim is not None:
            return f"SSIM {self.ssim:.4f}, {self.strong_diff_fraction or 0:.2%} px differ strongly"
        return f"{self.differing_pixels} px differ"


def _size(a: Pixels) -> tuple[int, int]:
    return int(a.shape[1]), int(a.shape[0])


def compare_arrays(result: Pixels, baseline: Pixels, *, exact: bool,
                   ssim_threshold: float = SSIM_THRESHOLD,
                   max_strong_fraction: float = MAX_STRONG_DIFF_FRACTION,
                   max_differing_pixels: int = EXACT_MAX_DIFFERING_PIXELS) -> Comparison:
    """Compare two (h, w, 3) uint8 arrays; see :func:`compare` for the rules."""
    import numpy as np

    mode = "exact" if exact else "tolerant"
    rs, bs = _size(result), _size(baseline)
    if rs != bs:
        return Comparison(False, False, None, None, None, None, False,
                          f"size mismatch: result {rs[0]}x{rs[1]}, baseline {bs[0]}x{bs[1]}", mode, rs, bs)
    delta = result.astype(np.int16) - baseline.astype(np.int16)
    rms = float(np.sqrt(np.mean(delta.astype(np.float64) ** 2)))
    magnitude = np.abs(delta).max(axis=-1)
    differing = int(np.count_nonzero(magnitude))
    total = rs[0] * rs[1]
    strong = float(np.count_nonzero(magnitude > STRONG_DIFF_LEVEL)) / total
    identical = differing == 0
    ssim: float | None = 1.0 if identical else None
    # SSIM needs a 7x7 window; it says nothing useful about smaller images.
    if not identical and min(rs) >= 7:
        # scikit-image (and scipy.ndimage under it) costs ~0.3 s to import: only when needed.
        from skimage.metrics import structural_similarity

        # scikit-image ships py.typed but leaves this function unannotated.
        ssim = float(structural_similarity(result, baseline, channel_axis=-1,  # type: ignore[no-untyped-call]
                                           data_range=255))
    shown = "n/a" if ssim is None else f"{ssim:.4f}"
    metrics = f"{differing} of {total} pixels differ ({strong:.2%} strongly), RMS {rms:.2f}, SSIM {shown}"
    if exact:
        passed = differing <= max_differing_pixels
        reason = ("identical to the baseline" if identical else
                  f"{metrics}; a baseline of the same renderer fingerprint allows {max_differing_pixels}")
    elif ssim is None:
        passed = False
        reason = f"image too small for SSIM ({rs[0]}x{rs[1]}); {metrics}"
    else:
        passed = ssim >= ssim_threshold and strong <= max_strong_fraction
        reason = (f"{metrics}; against another renderer fingerprint the limits are SSIM >= {ssim_threshold} "
                  f"and <= {max_strong_fraction:.1%} strongly differing pixels")
    return Comparison(identical, True, round(rms, 4), differing, None if ssim is None else round(ssim, 6),
                      round(strong, 6), passed, reason, mode, rs, bs)


def compare(result_png: bytes, baseline_png: bytes, *, exact: bool,
            ssim_threshold: float = SSIM_THRESHOLD,
            max_strong_fraction: float = MAX_STRONG_DIFF_FRACTION,
            max_differing_pixels: int = EXACT_MAX_DIFFERING_PIXELS) -> Comparison:
    """Compare a result PNG with a baseline PNG.

    *exact* (same fingerprint): at most *max_differing_pixels* may differ.  Otherwise the
    images pass when their SSIM reaches *ssim_threshold* and at most *max_strong_fraction*
    of the pixels differ strongly.  A size mismatch always fails.
    """
    return compare_arrays(load_rgb(result_png), load_rgb(baseline_png), exact=exact,
                          ssim_threshold=ssim_threshold, max_strong_fraction=max_strong_fraction,
                          max_differing_pixels=max_differing_pixels)


def diff_image(a: bytes, b: bytes) -> bytes:
    """An amplified difference PNG of two images, for humans.

    The first image, dimmed to a quarter, is the background; every differing pixel is red,
    at least :data:`DIFF_FLOOR` bright and :data:`DIFF_GAIN` times its largest channel
    difference.  Images of different sizes are compared on the larger canvas: what only
    one of them covers counts as fully different.
    """
    import numpy as np

    x, y = load_rgb(a), load_rgb(b)
    h, w = max(x.shape[0], y.shape[0]), max(x.shape[1], y.shape[1])
    xa = np.zeros((h, w, 3), np.int16)
    ya = np.zeros((h, w, 3), np.int16)
    xa[:x.shape[0], :x.shape[1]] = x
    ya[:y.shape[0], :y.shape[1]] = y
    magnitude = np.abs(xa - ya).max(axis=-1)
    covered = np.zeros((h, w), bool)
    covered[:min(x.shape[0], y.shape[0]), :min(x.shape[1], y.shape[1])] = True
    magnitude[~covered] = 255
    out = (xa.mean(axis=-1, keepdims=True) / 4).repeat(3, axis=-1)
    changed = magnitude > 0
    red = np.clip(np.maximum(magnitude * DIFF_GAIN, DIFF_FLOOR), 0, 255)
    out[changed] = 0
    out[changed, 0] = red[changed]
    return encode_png(out.astype(np.uint8))


# -- baselines -----------------------------------------------------------------------------


def baseline_filename(name: str, backend: str, key: str) -> str:
    """``builtin.egl.llvmpipe_mesa-22.3.6_vtk9.7_aa-none.png``."""
    if not _NAME.match(name):
        raise ValueError(f"baseline name {name!r}: use letters, digits, '-', '_' or '+'")
    return f"{name}.{backend}.{key}.png"


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline file found for a render."""

    path: Path
    fingerprint: str
    source: str
    """``user`` (--baseline-dir) or ``shipped`` (inside the package)."""
    exact: bool
    """True when its fingerprint is the render's own: compared pixel for pixel."""


def _dirs(user_dir: str | os.PathLike[str] | None, shipped_dir: Path | None) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if user_dir is not None:
        out.append(("user", Path(user_dir)))
    if shipped_dir is not None and (user_dir is None or Path(user_dir).resolve() != shipped_dir.resolve()):
        out.append(("shipped", shipped_dir))
    return out


def find_baseline(name: str, backend: str, key: str, *, user_dir: str | os.PathLike[str] | None,
                  shipped_dir: Path | None = SHIPPED_DIR, fallback: bool = True) -> Baseline | None:
    """The baseline to compare a render with, or None.

    The render's own fingerprint first (the user's --baseline-dir, then the shipped dir):
    compared exactly.  Then, if *fallback*, a baseline of the same scene and backend from
    another fingerprint, for a tolerant comparison: the user's before the shipped ones,
    the same renderer before llvmpipe before anything else, newest VTK first.
    """
    dirs = _dirs(user_dir, shipped_dir)
    exact_name = baseline_filename(name, backend, key)
    for source, d in dirs:
        if (d / exact_name).is_file():
            return Baseline(d / exact_name, key, source, True)
    if not fallback:
        return None
    own = Fingerprint.parse(key)
    ranked: list[tuple[tuple[int, int, int, str], Baseline]] = []
    prefix = f"{name}.{backend}."
    for order, (source, d) in enumerate(dirs):
        if not d.is_dir():
            continue
        for p in d.glob(f"{prefix}*.png"):
            other_key = p.name[len(prefix):-len(".png")]
            other = Fingerprint.parse(other_key)
            if other is None:
                continue
            same_renderer = own is not None and other.renderer == own.renderer
            rank = (order, 0 if same_renderer else 1 if other.renderer == "llvmpipe" else 2,
                    -_version_rank(other.vtk), other_key)
            ranked.append((rank, Baseline(p, other_key, source, False)))
    return min(ranked, key=lambda t: t[0])[1] if ranked else None


def _version_rank(v: str) -> int:
    nums = [int(n) for n in re.findall(r"\d+", v)[:2]] + [0, 0]
    return nums[0] * 1000 + nums[1]


def is_ci(env: Mapping[str, str] | None = None) -> bool:
    """True when running under CI (``CI=true``, as GitHub/GitLab/most CI services set it)."""
    value = (os.environ if env is None else env).get("CI", "")
    return value.strip().lower() in ("true", "1", "yes")


@dataclasses.dataclass(frozen=True)
class ImageVerdict(Verdict):
    """What the baseline policy decided for one rendered image: a :class:`Verdict` (``detail``:
    one line, why it passed or failed) plus the comparison behind it."""

    fingerprint: str = ""
    fix: str | None = None
    comparison: Comparison | None = None
    baseline: Baseline | None = None
    written: Path | None = None
    """The baseline file written by --update-baselines, if any."""
    artifacts: dict[str, bytes] = dataclasses.field(default_factory=dict)
    """PNGs to save for humans: ``result``, ``baseline``, ``diff``."""

    @property
    def summary(self) -> str:
        """A few words for the cell note."""
        if self.written is not None:
            return f"baseline written ({self.written.name})"
        if self.comparison is not None:
            other = self.baseline.fingerprint if self.baseline else "?"
            what = "exact" if self.comparison.mode == "exact" else f"vs {other}"
            return f"{self.comparison.summary()} ({what})"
        return "no baseline"

    def evidence(self) -> dict[str, Any]:
        """Builtins only, for the cell."""
        return {
            "fingerprint": self.fingerprint,
            "baseline": str(self.baseline.path) if self.baseline else None,
            "baseline_source": self.baseline.source if self.baseline else None,
            "comparison": self.comparison.as_dict() if self.comparison else None,
            "written": str(self.written) if self.written else None,
        }


def _record_fix(name: str, backend: str) -> str:
    return (f"record this renderer's baseline: pytest --image ... --baseline-dir DIR --update-baselines=missing "
            f"(writes {name}.{backend}.<fingerprint>.png into DIR); review the image, then keep DIR with your tests")


def judge_image(png: bytes, *, name: str, backend: str, key: str, baseline_dir: str | os.PathLike[str] | None,
                update: str | None = None, ci: bool = False, shipped_dir: Path | None = SHIPPED_DIR) -> ImageVerdict:
    """Apply the baseline policy to one rendered image (file I/O only; no pytest).

    1. A baseline of the render's own fingerprint (--baseline-dir, then shipped): exact.
    2. None, and *update* is ``missing``/``failed``/``all``: write it into *baseline_dir*, pass.
    3. None under CI: fail (baselines must be recorded and reviewed, not guessed in CI).
    4. None outside CI: tolerant SSIM against another fingerprint's baseline of the same
       scene and backend (the shipped llvmpipe one for the built-in scene); none -> fail.
    ``failed`` also rewrites a baseline that did not match; ``all`` rewrites it always.
    Updates write only this fingerprint, and only into *baseline_dir* (never the package).
    """
    if update is not None and update not in UPDATE_MODES:
        raise ValueError(f"update must be one of {UPDATE_MODES} or None, not {update!r}")
    target_name = baseline_filename(name, backend, key)
    if update and baseline_dir is None:
        return ImageVerdict("fail", "--update-baselines needs --baseline-dir (baselines are never written "
                            "into the installed package)", fingerprint=key,
                            fix="add --baseline-dir DIR (e.g. tests/baselines)", artifacts={"result": png})

    def write(reason: str, comparison: Comparison | None = None, found: Baseline | None = None) -> ImageVerdict:
        assert baseline_dir is not None
        path = Path(baseline_dir) / target_name
        write_file(path, png)  # baselines get committed and shared: 0644 (directories 0755), whatever the umask
        return ImageVerdict("pass", f"{reason}; baseline written: {path}", fingerprint=key, comparison=comparison,
                            baseline=found, written=path)

    own = find_baseline(name, backend, key, user_dir=baseline_dir, shipped_dir=shipped_dir, fallback=False)
    if own is not None:
        comparison = compare(png, own.path.read_bytes(), exact=True)
        if update == "all" or (update == "failed" and not comparison.passed):
            return write(comparison.reason, comparison, own)
        return _verdict(png, own, comparison, key)
    if update is not None:
        return write(f"no baseline for {key}")
    if ci:
        return ImageVerdict("fail", f"no {name}/{backend} baseline for renderer fingerprint {key} (CI=true: "
                            "a missing baseline is not compared against another renderer's)", fingerprint=key,
                            fix=_record_fix(name, backend), artifacts={"result": png})
    other = find_baseline(name, backend, key, user_dir=baseline_dir, shipped_dir=shipped_dir, fallback=True)
    if other is None:
        return ImageVerdict("fail", f"no {name}/{backend} baseline at all (fingerprint {key})", fingerprint=key,
                            fix=_record_fix(name, backend), artifacts={"result": png})
    return _verdict(png, other, compare(png, other.path.read_bytes(), exact=False), key)


def _verdict(png: bytes, baseline: Baseline, comparison: Comparison, key: str) -> ImageVerdict:
    if comparison.passed:
        return ImageVerdict("pass", comparison.reason, fingerprint=key, comparison=comparison, baseline=baseline)
    base = baseline.path.read_bytes()
    where = f"{baseline.source} baseline {baseline.path.name}"
    fix = ("if the new image is right, rewrite the baseline with --update-baselines=failed --baseline-dir DIR; "
           "otherwise compare result/baseline/diff in the artifacts directory")
    return ImageVerdict("fail", f"render differs from the {where}: {comparison.reason}", fingerprint=key, fix=fix,
                        comparison=comparison, baseline=baseline,
                        artifacts={"result": png, "baseline": base, "diff": diff_image(png, base)})
