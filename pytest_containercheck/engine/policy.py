"""What the checks judge by: the policy options (``container.options``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """Policy options the checks read (``container.options``)."""

    require_gpu: bool = False
    require_hw_render: bool = False
    probe_timeout: float = 300.0
    artifacts_dir: str = "containercheck-artifacts"
    baseline_dir: str | None = None
    update_baselines: str | None = None
    """``missing``, ``failed``, ``all`` or None."""
    hf_model: str | None = None
    container_python: tuple[str, ...] = ("python3", "python")
    required_rows: tuple[str, ...] = ()
    """Rows that must pass: ``--require`` for the run; in ``container.options``, this image's
    required rows from every source (:mod:`.expectations`)."""
    intent: str | None = None
    """``gpu`` or ``cpu`` when the image's expectations declare it (label or file), else None."""
    intent_source: str = ""
    """Which source declared :attr:`intent` (``image label``, ``pyproject.toml``)."""
    probe_jobs: int = 2
    """Probes run at once per image (``--probe-jobs``); 1 runs them one by one, on demand."""
    probe_dirs: tuple[str, ...] = ()
    probe_bundles: bool = True
    """Run planned probes that declare the same ``SHARED_IMPORTS`` as one bundle (``_envelope.bundle``)."""
    """``--probe-dir``: directories of users' own probes, searched before the built-in ones."""
    serial_gpu_probes: str = ""
    """Why probes that create a CUDA context (``CUDA_CONTEXT = True``) run one at a time, when they
    must: a GPU in an exclusive compute mode (:func:`~.scheduling.exclusive_gpus`); empty otherwise."""
    keep_render_images: bool = False
    """Save render results as artifacts also when they pass (``--matrix-html`` shows them)."""
