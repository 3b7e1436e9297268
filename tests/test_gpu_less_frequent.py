"""The less frequent GPU cases of issue 29 (item 4) that have no module of their own: render causes on
AMD hosts, and Apptainer sites whose ``apptainer.conf`` says ``use nvidia-container-cli = yes``.

(The others: xgboost's manylinux2014 wheel and torch per architecture in ``test_verdicts_ml.py``, 802
without NVSwitch in ``test_verdicts_gpu_setups.py``, the aarch64 host in ``test_platforms.py``, UUIDs in
Slurm's variables and nvccli's requirement errors in ``test_gpumap.py`` and ``test_gpu_runtimes.py``.)

Facts: the render facts are the **recorded** CPU render of the full test image
(``tests/data/render/full-egl.json``, Mesa llvmpipe) with the fields an AMD host would change edited
(**constructed**: no AMD GPU has been seen by this project); each test says which.  The Mesa texts are
Mesa's own (``src/loader/loader.c``); the AMD device setup is AMD's ("Running ROCm Docker containers":
``--device /dev/kfd --device /dev/dri``, ``--group-add video``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.runtimes import LaunchOptions
from pytest_containercheck.engine.runtimes import apptainer as app
from pytest_containercheck.engine.verdicts_render import egl_software_cause, render_verdict

DATA = Path(__file__).resolve().parent / "data" / "render"
AMD_HOST = {"has_gpu": True, "gpu_vendor": "amd"}


def _render(**edits: Any) -> dict[str, Any]:
    facts: dict[str, Any] = copy.deepcopy(json.loads((DATA / "full-egl.json").read_text())["facts"])
    facts.update(edits)
    return facts


ON_AMD = {"dev_dri": ["/dev/dri/card0", "/dev/dri/renderD128"], "dri_access": {"/dev/dri/renderD128": True},
          "mesa_dri_drivers": ["kms_swrast", "radeonsi", "swrast"], "dev_nvidia": []}


@pytest.mark.parametrize(("edits", "fault", "reason", "fix"), [
    ({**ON_AMD, "dev_dri": ["/dev/dri/card0"], "dri_access": {}}, "host", "no DRI render node",
     "--device /dev/dri"),
    ({**ON_AMD, "dri_access": {"/dev/dri/renderD128": False}}, "pair",
     "/dev/dri/renderD128 cannot be opened read-write", "--group-add"),
    ({**ON_AMD, "env": {"LIBGL_ALWAYS_SOFTWARE": "1"}}, "image", "LIBGL_ALWAYS_SOFTWARE=1 makes Mesa render on the CPU",
     "unset LIBGL_ALWAYS_SOFTWARE"),
    ({**ON_AMD, "render_output_tail": "MESA-LOADER: failed to open radeonsi: /usr/lib/x86_64-linux-gnu/dri/"
      "radeonsi_dri.so: cannot open shared object file: No such file or directory (search paths "
      "/usr/lib/x86_64-linux-gnu/dri, suffix _dri)\n"}, "image", "Mesa could not load its radeonsi driver",
     "libgl1-mesa-dri"),
    ({**ON_AMD, "mesa_dri_drivers": ["kms_swrast", "swrast"]}, "image", "has no driver for AMD GPUs",
     "libgl1-mesa-dri"),
    ({**ON_AMD, "egl_devices": {"devices": [{"index": 0, "vendor": "Mesa Project", "version": "1.5"},
                                            {"index": 1, "drm_device_file": "/dev/dri/renderD128", "version": "1.5",
                                             "vendor": "Mesa Project"}]}},
     "pair", "EGL device 1 (/dev/dri/renderD128) initialises", "VTK_DEFAULT_EGL_DEVICE_INDEX=1"),
])
def test_amd_render_causes_are_mesas_never_nvidias(edits: dict[str, Any], fault: str, reason: str, fix: str) -> None:
    """The old rule, without a vendor branch, answered every one of these with "no /dev/nvidia* inside the
    container" and "--gpus all with the NVIDIA Container Toolkit"."""
    facts = _render(**edits)
    got_reason, got_fix, got_fault = egl_software_cause(facts, "docker", gpu_vendor="amd")
    assert (got_fault, reason in got_reason, fix in got_fix) == (fault, True, True), (got_reason, got_fix)
    assert "NVIDIA" not in got_reason + got_fix and "nvidia" not in got_reason + got_fix
    old_reason, old_fix, _ = egl_software_cause(facts, "docker")  # without the vendor: NVIDIA's causes
    assert "nvidia" in (old_reason + old_fix).lower()
    v = render_verdict(facts, "egl", require_hw_render=True, host_has_gpu=True, runtime="docker", gpu_vendor="amd",
                       gpu={"attached": True})
    assert (v.status, v.fault) == ("fail", fault) and "nvidia" not in (v.fix or "").lower()


def test_apptainer_on_amd_without_render_node_names_contain() -> None:
    _reason, fix, fault = egl_software_cause(_render(**{**ON_AMD, "dev_dri": []}), "apptainer", gpu_vendor="amd")
    assert fault == "host" and "--contain" in fix and "--rocm" in fix


def test_the_render_probe_records_render_node_access_and_mesas_drivers_for_real() -> None:
    from pytest_containercheck.engine.dev import try_probe

    res = try_probe("render", backend="egl", quiet=True)
    assert res.ok, res.summary()
    assert isinstance(res.facts["dri_access"], dict) and isinstance(res.facts["mesa_dri_drivers"], list)
    if os.path.isdir("/usr/lib/x86_64-linux-gnu/dri"):  # Debian's Mesa, as provisioned here
        assert "swrast" in res.facts["mesa_dri_drivers"]


# -- apptainer.conf: use nvidia-container-cli = yes ---------------------------------------------------


def _site(tmp_path: Path, use: str) -> str:
    conf = tmp_path / "apptainer.conf"
    conf.write_text("# a site's apptainer.conf (pkg/util/apptainerconf directive names)\nallow setuid = yes\n"
                    f"use nvidia-container-cli = {use}\nalways use nv = no\n")
    return f"APPTAINER_CONF_FILE={conf}\nLIBEXECDIR=/usr/libexec\n"


def test_the_sites_nvccli_switch_is_read_from_buildcfg_and_the_config(tmp_path: Path) -> None:
    path, on = app.nvccli_configured(_site(tmp_path, "yes"))
    assert on and path == str(tmp_path / "apptainer.conf")
    assert app.nvccli_configured(_site(tmp_path, "no"))[1] is False
    assert app.nvccli_configured("LIBEXECDIR=/usr/libexec\n")[1] is False


def test_plain_nv_on_an_nvccli_site_is_judged_as_nvidia_container_cli(tmp_path: Path) -> None:
    """Plain --nv goes through nvidia-container-cli there (apptainer launcher_linux.go SetGPUConfig), which
    reads apptainer's own environment's capabilities (default compute,utility) and never nvliblist.conf.
    The old rule judged it as --nv's own binding: its fix named nvliblist.conf, which nvccli does not read."""
    rt = app.ApptainerRuntime("apptainer")
    rt.conf_file, rt.nvccli_configured = app.nvccli_configured(_site(tmp_path, "yes"))
    env = rt.launch_env(LaunchOptions(run_id="r", gpus="device=1"), host_env={})
    assert env["NVIDIA_VISIBLE_DEVICES"] == "1" and "NVIDIA_DRIVER_CAPABILITIES" not in env
    gpu = {"requested": "nv", "attached": True, "nvccli": True, "nvccli_capabilities": ""}
    facts = _render(dev_nvidia=["/dev/nvidia0", "/dev/nvidiactl"], apptainer_libs=[])
    v = render_verdict(facts, "egl", host_has_gpu=True, runtime="apptainer", gpu_vendor="nvidia", gpu=gpu)
    assert (v.status, v.fault) == ("fail", "host") and "nvliblist.conf" not in (v.fix or "")
    assert "export NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics" in (v.fix or "")
    # 'graphics' given, and still no NVIDIA EGL: the host's driver, never nvliblist.conf.
    with_graphics = {**gpu, "nvccli_capabilities": "compute,utility,graphics"}
    reason, fix, fault = egl_software_cause(facts, "apptainer", gpu=with_graphics)
    assert fault == "host" and "nvidia-container-cli set up the GPU" in reason and "nvliblist.conf" not in fix
    _old, old_fix, _fault = egl_software_cause(facts, "apptainer")  # judged as --nv's own binding
    assert "nvliblist.conf" in old_fix


def test_this_machines_apptainer_config_is_read_for_real() -> None:
    """The provisioned Apptainer's own buildcfg and apptainer.conf (Debian's: 'use nvidia-container-cli = no')."""
    try:
        out = subprocess.run(["apptainer", "buildcfg"], capture_output=True, text=True, timeout=60).stdout
    except FileNotFoundError:
        from helpers import missing

        missing("Apptainer", "apptainer is not installed (run: python3 tests/images/provision.py)")
    path, on = app.nvccli_configured(out)
    assert path.endswith("apptainer.conf") and os.path.isfile(path)
    assert on is (app.read_conf(path).get("use nvidia-container-cli") == "yes")
