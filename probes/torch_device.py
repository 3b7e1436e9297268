# Probe: what torch in the image can really compute on, and where the work ran.
# Stdlib-only at import time, Python 3.7+; torch is imported inside run().
# Facts only; pytest_containercheck/engine/verdicts/ml.py judges them.
#
# A real matmul and a convolution run on the CPU and on every CUDA/HIP device torch
# sees; each device's result is compared with the CPU's, and the CPU's with a float64
# reference, so "it did not raise" is never mistaken for "it computed".

# May run in a bundle with the other probes declaring the same (see _envelope.bundle): torch
# is then imported once, silently, before this probe's process is forked.  Importing torch
# reads no variable this probe sets and initialises no device.
SHARED_IMPORTS = ("torch",)
# Creates a CUDA context: on a GPU in Exclusive_Process compute mode, one such probe at a time.
CUDA_CONTEXT = True
# The library this probe judges: whose absence skips its rows (the pythons probe looks for it).
LIBRARIES = ("torch",)


def _td_driver_cuda_version(ctx):
    # The CUDA version the *driver* supports, read the way nvidia-smi does (no cuInit,
    # no context): comparing it with torch.version.cuda explains "driver too old".
    cuda = ctx.libcuda(init=False)
    if not cuda.get("loaded"):
        return {"loaded": False, "error": cuda.get("error")}
    if cuda.get("driver_cuda_version"):
        return {"loaded": True, "version": cuda["driver_cuda_version"]}
    rc = cuda.get("driver_version_rc")
    return {"loaded": True, "error": cuda.get("error") or "cuDriverGetVersion returned %s" % rc}


def _td_inputs(torch):
    # Fixed seed, small shapes: enough arithmetic to expose a wrong kernel, cheap on 2 cores.
    gen = torch.Generator().manual_seed(1234)
    a = torch.randn(128, 96, generator=gen)
    b = torch.randn(96, 64, generator=gen)
    img = torch.randn(2, 3, 24, 24, generator=gen)
    weight = torch.randn(8, 3, 3, 3, generator=gen)
    return a, b, img, weight


def _td_compute(torch, device, inputs):
    a, b, img, weight = [t.to(device) for t in inputs]
    mm = a @ b
    conv = torch.nn.functional.conv2d(img, weight, padding=1)
    return mm, conv


def _td_sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _td_diff(torch, got, ref):
    got = got.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    finite = bool(torch.isfinite(got).all())
    return {
        "max_abs_diff": float((got - ref).abs().max()) if finite else None,
        "max_abs_ref": float(ref.abs().max()),
        "finite": finite,
    }


def _td_run_ops(ctx, torch, device, inputs, reference):
    """Run matmul + conv on *device*; compare with *reference* (mm, conv) tensors."""
    import time

    out = {"device": str(device), "ok": False}
    try:
        t0 = time.perf_counter()
        mm, conv = _td_compute(torch, device, inputs)
        _td_sync(torch, device)
        # Time a second pass too: the first includes lazy CUDA context and kernel loading.
        t1 = time.perf_counter()
        _td_compute(torch, device, inputs)
        _td_sync(torch, device)
        t2 = time.perf_counter()
        out.update(
            ok=True,
            first_seconds=round(t1 - t0, 6),
            seconds=round(t2 - t1, 6),
            result_device=str(mm.device),
            conv_result_device=str(conv.device),
            matmul=_td_diff(torch, mm, reference[0]),
            conv=_td_diff(torch, conv, reference[1]),
        )
    except Exception as exc:  # "no kernel image is available", OOM, ...: a fact
        out["error"] = ctx.exc_text(exc)
    return out


def _td_cuda_facts(ctx, torch, facts):
    cuda = {
        "compiled": bool(hasattr(torch._C, "_cuda_getDeviceCount")),
        "is_available": None,
        "device_count": None,
        "arch_list": [],
        "devices": [],
    }
    facts["cuda"] = cuda
    try:
        # is_available() never raises; a broken driver shows up as a warning instead
        # ("CUDA initialization: ..."), which capture_warnings records.
        cuda["is_available"] = bool(torch.cuda.is_available())
        cuda["device_count"] = int(torch.cuda.device_count())
        cuda["arch_list"] = list(torch.cuda.get_arch_list())
    except Exception as exc:
        cuda["error"] = ctx.exc_text(exc)
        return
    if not cuda["is_available"]:
        return
    try:
        torch.cuda.init()  # surfaces the real reason when lazy init fails
    except Exception as exc:
        cuda["init_error"] = ctx.exc_text(exc)
        return
    for i in range(cuda["device_count"]):
        dev = {"index": i}
        try:
            props = torch.cuda.get_device_properties(i)
            major, minor = torch.cuda.get_device_capability(i)
            dev.update(
                name=props.name,
                capability=[int(major), int(minor)],
                total_memory=int(props.total_memory),
                multi_processor_count=int(getattr(props, "multi_processor_count", 0)),
                gcn_arch_name=getattr(props, "gcnArchName", None),
            )
        except Exception as exc:
            dev["error"] = ctx.exc_text(exc)
        cuda["devices"].append(dev)


def _td_collect(ctx, torch, facts):
    import os
    import platform

    with ctx.timed("work"):
        facts.update(
            installed=True,
            version=torch.__version__,
            path=os.path.dirname(torch.__file__),
            cuda_build=getattr(torch.version, "cuda", None),
            hip_build=getattr(torch.version, "hip", None),
            machine=platform.machine(),
            driver=_td_driver_cuda_version(ctx),
            env=dict(
                (k, v) for k, v in os.environ.items()
                if k in ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA", "NVIDIA_VISIBLE_DEVICES",
                         "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
            ),
        )
        cudnn = {"available": None, "version": None}
        try:
            cudnn["available"] = bool(torch.backends.cudnn.is_available())
            cudnn["version"] = torch.backends.cudnn.version() if cudnn["available"] else None
        except Exception as exc:
            cudnn["error"] = ctx.exc_text(exc)
        facts["cudnn"] = cudnn
        facts["tf32"] = {
            "matmul": bool(getattr(torch.backends.cuda.matmul, "allow_tf32", False)),
            "cudnn": bool(getattr(torch.backends.cudnn, "allow_tf32", False)),
        }
        _td_cuda_facts(ctx, torch, facts)
        try:
            facts["selection"], selected = ctx.select_torch_device(torch)
        except Exception as exc:
            facts["selection"], selected = {"error": ctx.exc_text(exc), "selected": None}, None

        inputs = _td_inputs(torch)
        reference = _td_compute(torch, torch.device("cpu"), [t.double() for t in inputs])
        # the CPU is checked against float64; every device against the CPU (float32)
        ops = {"cpu": _td_run_ops(ctx, torch, torch.device("cpu"), inputs, reference)}
        cpu_out = _td_compute(torch, torch.device("cpu"), inputs)
        targets = []
        if facts["cuda"].get("is_available") and not facts["cuda"].get("init_error"):
            targets = [torch.device("cuda", i) for i in range(facts["cuda"]["device_count"])]
        if selected is not None and selected.type not in ("cpu", "cuda"):
            targets.append(selected)  # mps/xpu: still prove where the work ran
        for dev in targets:
            ops[str(dev)] = _td_run_ops(ctx, torch, dev, inputs, cpu_out)
        facts["ops"] = ops


def run(params, ctx):
    facts = {"installed": False}
    with ctx.capture_warnings():
        with ctx.timed("import"):
            torch, imported = ctx.import_library("torch")  # ImportError, or a broken wheel's OSError
        facts.update(imported)
        if torch is None:
            versions = ctx.dist_versions(("torch", "numpy"))
            versions.update(facts.get("dist_versions") or {})
            facts["dist_versions"] = versions
        else:
            _td_collect(ctx, torch, facts)
    facts["warnings"] = list(ctx.warnings)
    return facts
