# Probe: does xgboost in the image train where it is asked to?
# Stdlib-only at import time, Python 3.7+; xgboost and numpy are imported inside run().
# Facts only; pytest_containercheck/engine/verdicts/ml.py judges them.
#
# xgboost with device="cuda" and no usable GPU does not raise: a CUDA build logs
# "No visible GPU is found, setting device to CPU." (src/context.cc, CUDAOrdinal) and a
# build without CUDA switches to the CPU without a word.  So the device that counts is
# the one the trained booster's own config records (learner.generic_param.device), and
# every message the library emits while training is kept: Python warnings (xgboost >= 2
# routes native WARNING lines through warnings.warn), print() output (xgboost's log
# callback prints other native messages), and anything written straight to fd 1/2.

# Creates a CUDA context: on a GPU in Exclusive_Process compute mode, one such probe at a time.
CUDA_CONTEXT = True
# The library this probe judges: whose absence skips its rows (the pythons probe looks for it).
LIBRARIES = ("xgboost",)

_XT_ROWS = 1200
_XT_FEATURES = 8
_XT_ROUNDS = 20


class _XtCapture(object):
    """Capture Python warnings, sys.stdout/sys.stderr and the fds 1 and 2."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        import io
        import os
        import sys
        import warnings

        self.warn_cm = warnings.catch_warnings(record=True)
        self.records = self.warn_cm.__enter__()
        warnings.simplefilter("always")
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved_streams = (sys.stdout, sys.stderr)
        self.py_out = io.StringIO()
        sys.stdout = sys.stderr = self.py_out
        self.fd_file = self.ctx.scratch_file()
        self.saved_fds = (os.dup(1), os.dup(2))
        os.dup2(self.fd_file.fileno(), 1)
        os.dup2(self.fd_file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import os
        import sys

        try:
            sys.stdout.flush()
        except Exception:
            pass
        os.dup2(self.saved_fds[0], 1)
        os.dup2(self.saved_fds[1], 2)
        for fd in self.saved_fds:
            os.close(fd)
        sys.stdout, sys.stderr = self.saved_streams
        self.fd_file.seek(0)
        native = self.fd_file.read().decode("utf-8", "replace")
        self.fd_file.close()
        self.warn_cm.__exit__(*exc)
        self.warnings = [
            {"category": w.category.__name__, "message": str(w.message)[:2000]} for w in self.records
        ]
        self.log = (self.py_out.getvalue() + native)[-8000:]
        return False


def _xt_data(np):
    # A fixed, learnable problem: the label is a noisy linear rule, so any working
    # trainer reaches a high held-out accuracy and a broken one cannot fake it.
    rng = np.random.RandomState(0)
    x = rng.standard_normal((_XT_ROWS, _XT_FEATURES)).astype(np.float32)
    w = rng.standard_normal(_XT_FEATURES)
    y = ((x @ w + 0.1 * rng.standard_normal(_XT_ROWS)) > 0).astype(np.float32)
    cut = int(_XT_ROWS * 0.75)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _xt_booster_device(booster):
    import json

    config = json.loads(booster.save_config())
    generic = config.get("learner", {}).get("generic_param", {})
    return generic, config.get("learner", {}).get("gradient_booster", {}).get("gbtree_train_param", {})


def _xt_train(ctx, xgb, np, data, device, legacy):
    import time

    x_train, y_train, x_test, y_test = data
    # One thread: the check is where the booster trained and what it computed, not speed.  The
    # suite runs other probes on every core meanwhile, and OpenMP threads that spin-wait for
    # each other (libgomp's default OMP_WAIT_POLICY spins before sleeping) turned a 0.04 s
    # training into 1.4 s on 2 busy CPUs (measured under Apptainer with "nthread": 2).
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "seed": 0,
              "nthread": 1, "tree_method": "hist"}
    if legacy:  # xgboost < 2.0 has no `device`; GPU training was tree_method=gpu_hist
        if device == "cuda":
            params.update(tree_method="gpu_hist", gpu_id=0)
    else:
        params["device"] = device
    out = {"requested": device, "params": dict(params), "ok": False}
    cap = _XtCapture(ctx)
    try:
        with cap:
            t0 = time.perf_counter()
            dtrain = xgb.DMatrix(x_train, label=y_train)
            dtest = xgb.DMatrix(x_test, label=y_test)
            booster = xgb.train(params, dtrain, num_boost_round=_XT_ROUNDS)
            t1 = time.perf_counter()
            pred = booster.predict(dtest)
            t2 = time.perf_counter()
            generic, tree_param = _xt_booster_device(booster)
        out.update(
            ok=True,
            train_seconds=round(t1 - t0, 6),
            predict_seconds=round(t2 - t1, 6),
            accuracy=round(float(((pred > 0.5) == (y_test > 0.5)).mean()), 6),
            booster_device=generic.get("device"),
            generic_param=generic,
            tree_method=tree_param.get("tree_method"),
        )
    except Exception as exc:  # e.g. "not compiled with CUDA": a fact, not a crash
        out["error"] = ctx.exc_text(exc)
    out["warnings"] = getattr(cap, "warnings", [])
    out["log"] = getattr(cap, "log", "")
    return out


def _xt_distribution():
    # Which wheel provides the module: `xgboost` (CUDA-enabled on Linux) or `xgboost-cpu`.
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        return None
    found = []
    for name in ("xgboost", "xgboost-cpu"):
        try:
            dist = metadata.distribution(name)
        except Exception:
            continue
        entry = {"name": name, "version": dist.version}
        try:
            # The wheel's platform tags (its WHEEL file: "Tag: py3-none-manylinux2014_x86_64"): since 2.1
            # xgboost's manylinux2014 wheel is CPU-only, its manylinux_2_28 one has CUDA.
            wheel = dist.read_text("WHEEL") or ""
            entry["wheel_tags"] = [line.split(":", 1)[1].strip() for line in wheel.splitlines()
                                   if line.startswith("Tag:")]
        except Exception:
            pass
        found.append(entry)
    return found


def run(params, ctx):
    import os
    import sys

    facts = {"installed": False}
    with ctx.capture_warnings():
        # xgboost first: its own import of numpy (or scipy) failing is xgboost's missing or broken
        # requirement, which the facts of import_library name; the probe's numpy comes after.
        with ctx.timed("import"):
            xgb, imported = ctx.import_library("xgboost", "numpy")
        facts.update(imported)
        if xgb is None:
            versions = ctx.dist_versions(("numpy", "scipy", "xgboost", "xgboost-cpu"))
            versions.update(facts.get("dist_versions") or {})
            facts["dist_versions"] = versions
            return facts
        import numpy as np
        with ctx.timed("work"):
            facts.update(installed=True, version=xgb.__version__, distributions=_xt_distribution(),
                         module_path=getattr(xgb, "__file__", None),
                         # A conda environment: its xgboost variant (CPU or CUDA) is conda's choice.
                         conda=os.path.isdir(os.path.join(sys.prefix, "conda-meta")),
                         # NVIDIA CUDA base images set these: the image is meant for GPUs.
                         image_env=dict((k, os.environ[k]) for k in ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA")
                                        if k in os.environ))
            try:
                facts["build_info"] = xgb.build_info()
            except Exception as exc:  # xgboost < 1.6 has no build_info()
                facts["build_info"] = None
                facts["build_info_error"] = ctx.exc_text(exc)
            legacy = int(xgb.__version__.split(".")[0]) < 2
            data = _xt_data(np)
            facts["train"] = {}
            for device in ("cpu", "cuda"):
                result = _xt_train(ctx, xgb, np, data, device, legacy)
                facts["train"][device] = result
                ctx.warnings.extend(result["warnings"])
                if result.get("train_seconds") is not None:
                    ctx.timings["train_" + device] = result["train_seconds"]
            cuda = facts["train"]["cuda"]
            if not str(cuda.get("booster_device") or "").startswith("cuda"):
                # xgboost reports any CUDA initialisation failure as "No visible GPU" (AllVisibleGPUs()
                # swallows cudaGetDeviceCount's error), so ask the driver itself why: cuInit's code names
                # the cause (802: Fabric Manager down, 100: no device for this process, 999 ...).
                facts["libcuda"] = ctx.libcuda()
    return facts
