"""The scheduler's GPUs, mapped (issue 29, item 2): Slurm's numbers -> the UUIDs or render nodes the
runtime is given, on nodes where the minor numbers and NVML's order differ, with MIG and with AMD.

No GPU node was available: every node below is **constructed**, in the formats of the sources cited
in ``pytest_containercheck/engine/gpumap.py`` (nvidia-smi's CSV query and ``-L`` listing, the
driver's ``/proc/driver/nvidia/gpus/*/information`` from open-gpu-kernel-modules ``nv-procfs.c``, the
KFD topology's ``drm_render_minor``) and of Slurm's own numbering (``gres_common.c``; commit
0ebfd37834 for 21.08).  Each case that the old rule got wrong says what it did: it passed Slurm's
numbers to ``--gpus device=`` / ``ROCR_VISIBLE_DEVICES`` as they were.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import gpumap, hostinfo
from pytest_containercheck.engine.runtimes import LaunchOptions
from pytest_containercheck.engine.runtimes.oci import OCIRuntime
from pytest_containercheck.options import gpus_for_host

UUID = ["GPU-0a3b9e1c-1111-2222-3333-444455556666", "GPU-1b4c0f2d-1111-2222-3333-444455556666",
        "GPU-2c5d1a3e-1111-2222-3333-444455556666", "GPU-3d6e2b4f-1111-2222-3333-444455556666"]
#: A 4-GPU node whose driver numbered its device files out of PCI order (constructed): NVML index
#: (PCI bus order) 0..3 are /dev/nvidia2, /dev/nvidia3, /dev/nvidia0, /dev/nvidia1.
SMI_QUERY = (f"0, 2, {UUID[0]}, 00000000:18:00.0\n"
             f"1, 3, {UUID[1]}, 00000000:3B:00.0\n"
             f"2, 0, {UUID[2]}, 00000000:86:00.0\n"
             f"3, 1, {UUID[3]}, 00000000:AF:00.0\n")
NODE = {"gpus": [dataclasses.asdict(g) for g in gpumap.parse_smi_gpus(SMI_QUERY)]}


def test_nvidia_smi_query_and_listing_are_read() -> None:
    gpus = gpumap.parse_smi_gpus(SMI_QUERY + "[N/A], [N/A], [N/A], [N/A]\n")
    assert [(g.index, g.minor, g.uuid) for g in gpus] == [(0, 2, UUID[0]), (1, 3, UUID[1]), (2, 0, UUID[2]),
                                                         (3, 1, UUID[3])]
    # nvidia-smi -L, with one GPU in MIG mode (the listing's shape from NVIDIA's MIG user guide).
    listing = (f"GPU 0: NVIDIA A100-SXM4-40GB (UUID: {UUID[0]})\n"
               "  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)\n"
               "  MIG 3g.20gb     Device  1: (UUID: MIG-0d2b5c8b-5f8e-5b5b-8b8b-2d9e4e0f1a2b)\n"
               f"GPU 1: NVIDIA A100-SXM4-40GB (UUID: {UUID[1]})\n")
    assert gpumap.parse_smi_list(listing) == {
        UUID[0]: ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", "MIG-0d2b5c8b-5f8e-5b5b-8b8b-2d9e4e0f1a2b"), UUID[1]: ()}


def _information(uuid: str, bus: str, minor: int) -> str:
    # kernel-open/nvidia/nv-procfs.c nv_procfs_read_gpu_info: its lines, tab-separated as printed.
    return (f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 0\nGPU UUID: \t {uuid}\nVideo BIOS: \t 96.00.99.00.01\n"
            f"Bus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t {bus}\n"
            f"Device Minor: \t {minor}\nGPU Excluded:\t No\n")


def test_proc_information_orders_by_bus_like_nvml(tmp_path: Path) -> None:
    files = {f"/proc/driver/nvidia/gpus/{bus}/information": _information(uuid, bus, minor)
             for uuid, bus, minor in [(UUID[2], "0000:86:00.0", 0), (UUID[0], "0000:18:00.0", 2)]}
    gpus = gpumap.parse_proc_information(files)
    assert [(g.index, g.minor, g.uuid) for g in gpus] == [(0, 2, UUID[0]), (1, 0, UUID[2])]
    # hostinfo reads them from the driver's directory when nvidia-smi does not answer.
    for path, text in files.items():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True)
        (tmp_path / path.lstrip("/")).write_text(text)
    facts = hostinfo.job_gpu_facts("nvidia", root=str(tmp_path))
    assert [(g["index"], g["minor"], g["uuid"]) for g in facts["gpus"]] == [(0, 2, UUID[0]), (1, 0, UUID[2])]


def test_slurm_version_and_autodetect_are_read() -> None:
    assert gpumap.parse_slurm_version("slurm 20.11.9\n") == (20, 11)
    assert gpumap.parse_slurm_version("slurm-wlm 22.05.8\n") == (22, 5)
    conf = "AutoDetect=off\nNodeName=gpu[01-04] AutoDetect=nvml\nName=gpu File=/dev/nvidia[0-3]\n"
    assert gpumap.parse_autodetect(conf, "gpu03") == "nvml"
    assert gpumap.parse_autodetect(conf, "login") == "off"
    assert gpumap.parse_autodetect("# AutoDetect=nvml\nName=gpu File=/dev/nvidia0\n", "gpu01") is None


def _map(ids: str, **facts: Any) -> gpumap.JobGPUs:
    return gpumap.map_job_gpus(ids, "SLURM_JOB_GPUS", {**NODE, **facts})


def test_minor_numbers_before_slurm_21_08() -> None:
    """Slurm 20.11 wrote /dev/nvidia0's 0: the GPU with minor 0 is NVML's index 2.  The old rule passed
    ``--gpus device=0``, NVML's index 0: another job's GPU."""
    got = _map("0", slurm_version=[20, 11])
    assert got.devices == (UUID[2],) and "by device minor" in got.how
    assert OCIRuntime("docker").requested_gpus(_auto(got)) == f"device={UUID[2]}" != "device=0"


def test_gres_index_with_autodetect_from_slurm_21_08() -> None:
    got = _map("0", slurm_version=[23, 2], autodetect="nvml")
    assert got.devices == (UUID[0],) and "AutoDetect=nvml" in got.how


def test_numbers_that_cannot_be_read_for_sure_test_no_gpu() -> None:
    """Unknown release, or 21.08+ without AutoDetect (the gres.conf File= order): both readings are named,
    and no GPU is requested at all rather than maybe another job's."""
    for facts in ({}, {"slurm_version": [23, 2]}, {"slurm_version": [23, 2], "autodetect": "off"}):
        got = _map("0", **facts)
        assert got.devices == () and "cannot be matched to this node's GPUs for sure" in got.problem
        assert f"as minor numbers {UUID[2]}" in got.problem and f"as NVML indexes {UUID[0]}" in got.problem
        assert OCIRuntime("docker").requested_gpus(_auto(got)) == "none"


def test_the_jobs_device_cgroup_decides() -> None:
    """ConstrainDevices=yes: the job may open /dev/nvidia3 only, whatever the numbering says."""
    got = _map("1", accessible_minors=[3])
    assert got.devices == (UUID[1],) and "/dev/nvidia3 only" in got.how
    assert "read as NVML indexes" in got.how  # 1 is NVML index 1, which is /dev/nvidia3


def test_orders_that_agree_and_whole_node_jobs_need_no_guess() -> None:
    agree = {"gpus": [{"index": i, "minor": i, "uuid": UUID[i], "bus": "", "mig": []} for i in range(4)]}
    assert gpumap.map_job_gpus("1,3", "SLURM_STEP_GPUS", agree).devices == (UUID[1], UUID[3])
    assert set(_map("0,1,2,3").devices) == set(UUID)


def test_uuids_slurm_wrote_are_passed_as_they_are() -> None:
    """gres.conf Flags=env_uuid (Slurm 26.05): CUDA_VISIBLE_DEVICES holds the UUIDs; and ids that are
    UUIDs already.  Nothing reads either as numbers."""
    got = _map("2", cuda_visible_devices=UUID[3])
    assert got.devices == (UUID[3],) and "Slurm set CUDA_VISIBLE_DEVICES to their UUIDs" in got.how
    assert gpumap.map_job_gpus(f"{UUID[1]},{UUID[2]}", "SLURM_JOB_GPUS", {}).devices == (UUID[1], UUID[2])
    assert "neither GPU numbers nor UUIDs" in gpumap.map_job_gpus("0,x", "SLURM_JOB_GPUS", NODE).problem


MIG = ["MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", "MIG-0d2b5c8b-5f8e-5b5b-8b8b-2d9e4e0f1a2b"]
MIG_NODE = {"gpus": [{"index": 0, "minor": 0, "uuid": UUID[0], "bus": "", "mig": MIG},
                     {"index": 1, "minor": 1, "uuid": UUID[1], "bus": "", "mig": []}]}


def test_mig_devices_go_by_their_mig_uuids() -> None:
    """Slurm numbers MIG devices in its own list and always writes their UUIDs to CUDA_VISIBLE_DEVICES
    (gres_common.c: "MIG devices always use UUID").  The old rule passed ``device=1``: the whole GPU 1."""
    got = gpumap.map_job_gpus("1", "SLURM_JOB_GPUS", {**MIG_NODE, "cuda_visible_devices": MIG[1]})
    assert got.devices == (MIG[1],)
    lost = gpumap.map_job_gpus("1", "SLURM_JOB_GPUS", {**MIG_NODE, "cuda_visible_devices": "0"})
    assert lost.devices == () and "MIG mode" in lost.problem and MIG[0] in lost.problem


#: An AMD node (constructed): KFD nodes 1..3 are GPUs whose render nodes are 128, 130, 129.
AMD = {"amd_gpus": [{"node": 1, "render_minor": 128}, {"node": 2, "render_minor": 130},
                    {"node": 3, "render_minor": 129}]}


def test_amd_render_minors_become_the_jobs_render_nodes() -> None:
    """Slurm before 21.08 wrote renderD129's 129.  The old rule set ROCR_VISIBLE_DEVICES=129 (no such
    ROCm device); now the container gets /dev/dri/renderD129 (ROCm device 2 of the node) and /dev/kfd."""
    got = gpumap.map_job_gpus("129", "SLURM_JOB_GPUS", AMD, "amd")
    assert got.devices == ("/dev/dri/renderD129",) and "renderD129 = ROCm device 2" in got.how
    options = _auto(got, vendor="amd")
    rt = OCIRuntime("docker")
    assert rt.gpu_flags_for(options) == ["--device", "/dev/kfd", "--device", "/dev/dri/renderD129"]
    assert "ROCR_VISIBLE_DEVICES" not in rt.container_env(options, rt.requested_gpus(options))
    assert "no GPU of this node has render minor 131" in gpumap.map_job_gpus("131", "X", AMD, "amd").problem
    # A gres index (21.08+): only the device cgroup, or the whole node, tells which.
    assert gpumap.map_job_gpus("1", "X", AMD, "amd").problem
    assert gpumap.map_job_gpus("1", "X", {**AMD, "accessible_render": [130]}, "amd").devices == ("/dev/dri/renderD130",)
    assert len(gpumap.map_job_gpus("0,1,2", "X", AMD, "amd").devices) == 3


def test_kfd_topology_is_read_for_render_minors(tmp_path: Path) -> None:
    for node, props in {0: "cpu_cores_count 16\nsimd_count 0\n", 1: "simd_count 256\ndrm_render_minor 128\n",
                        2: "simd_count 256\ndrm_render_minor 129\n"}.items():
        d = tmp_path / "sys/class/kfd/kfd/topology/nodes" / str(node)
        d.mkdir(parents=True)
        (d / "properties").write_text(props)
    facts = hostinfo.job_gpu_facts("amd", root=str(tmp_path))
    assert facts["amd_gpus"] == [{"node": 1, "render_minor": 128}, {"node": 2, "render_minor": 129}]


def _auto(got: gpumap.JobGPUs, vendor: str = "nvidia") -> LaunchOptions:
    return LaunchOptions(run_id="r", gpus_auto=True, gpu_vendor=vendor, job_gpus="x", job_gpus_from="SLURM_JOB_GPUS",
                         job_devices=got.devices, job_gpus_how=got.how, job_gpus_problem=got.problem)


def test_options_map_the_jobs_gpus_from_the_host_facts() -> None:
    host = {"has_gpu": True, "gpu_vendor": "nvidia", "slurm": {"SLURM_JOB_GPUS": "0"},
            "job_gpus": {**NODE, "slurm_version": [20, 11]}}
    launch = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(launch, host)
    assert (launch.job_devices, launch.job_gpus_problem) == ((UUID[2],), "")
    assert OCIRuntime("podman").gpu_flags_for(launch) == ["--device", f"nvidia.com/gpu={UUID[2]}"]


def test_open_devices_show_the_cgroup_only_when_it_restricts(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"nvidia{i}") for i in range(2)]
    for p in paths:
        Path(p).write_text("")
    assert hostinfo._openable(paths) is None  # all open: no cgroup to learn from
    if os.geteuid() != 0:  # root opens a 000 file anyway; a device cgroup refuses root too (not testable here)
        os.chmod(paths[1], 0)
        assert hostinfo._openable(paths) == [paths[0]]


@pytest.mark.docker
def test_an_unmappable_job_gpu_runs_no_gpu_and_says_why(pytester: pytest.Pytester, base_image: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """For real in Docker: a Slurm job's GPU this node's facts cannot name (the stand-in nvidia-smi answers
    no index/minor/UUID query, and there is no /proc/driver/nvidia here) is not guessed: the container
    starts with no GPU flag at all, and the GPU rows fail with the reason and the fix."""
    from helpers import ONLY_SYSTEM, standin_nvidia_smi

    standin_nvidia_smi(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_GPUS", "1")
    pytester.runpytest_subprocess("--image", base_image, *ONLY_SYSTEM, "--matrix-json", "m.json")
    data = json.loads((pytester.path / "m.json").read_text())
    launch = data["columns"][0]["facts"]["launch"]
    assert not any("--gpus" in a or "nvidia.com/gpu" in a for a in launch["run_command"]), launch["run_command"]
    assert launch["gpu"]["attached"] is False and launch["gpu"]["requested"] == "none"
    cells = {c["row"]: c for c in data["cells"]}
    assert cells["system.python"]["status"] == "pass"
    gpu_cell = cells["system.gpu_devices"]
    assert (gpu_cell["status"], gpu_cell["fault"]) == ("fail", "host")
    assert "the Slurm job's GPUs cannot be named for docker, so no GPU was passed in" in gpu_cell["detail"]
    assert "SLURM_JOB_GPUS=1" in gpu_cell["detail"] and "Flags=env_uuid" in gpu_cell["fix"]
    assert launch["launch_differences"][0].startswith("no GPU requested: the Slurm job's GPUs (SLURM_JOB_GPUS=1)")


def test_uuids_in_slurms_variables_are_never_read_as_numbers() -> None:
    """gres.conf Flags=env_uuid (Slurm 26.05, CHANGELOG "Add option to use UUID strings with
    CUDA_VISIBLE_DEVICES"; MIG always): UUIDs where numbers were.  The old rule read SLURM_*_GPUS only when
    every part was a number: a UUID made it ignore the job's selection and ask Docker for every GPU."""
    from pytest_containercheck.engine.runtimes.apptainer import ApptainerRuntime
    from pytest_containercheck.options import slurm_gpus

    slurm = {"SLURM_JOB_GPUS": f"{UUID[1]},{UUID[3]}", "CUDA_VISIBLE_DEVICES": f"{UUID[1]},{UUID[3]}"}
    assert slurm_gpus(slurm) == ("SLURM_JOB_GPUS", f"{UUID[1]},{UUID[3]}")
    launch = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(launch, {"has_gpu": True, "gpu_vendor": "nvidia", "slurm": slurm, "job_gpus": NODE})
    assert OCIRuntime("docker").requested_gpus(launch) == f"device={UUID[1]},{UUID[3]}"
    # Apptainer runs inside the job: its CUDA_VISIBLE_DEVICES goes in as it is, UUIDs and all.
    env = ApptainerRuntime("apptainer").launch_env(launch,
                                                   host_env={"CUDA_VISIBLE_DEVICES": slurm["CUDA_VISIBLE_DEVICES"]})
    assert env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == f"{UUID[1]},{UUID[3]}"
