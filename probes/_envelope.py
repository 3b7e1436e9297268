# Container side: the harness every probe runs inside.
#
# The host sends one program on the interpreter's stdin: this file, then the probe's
# source, then a call `main(run, PARAMS, NONCE, TIMEOUT)` (preceded by `lower_priority(N)` for a
# probe that starts while a heavier one of the same image runs).  So this file and every probe
# must be stdlib-only at import time, run on Python 3.7+, and never use
# `from __future__` (it would not be the first statement of the combined program).
#
# Protocol (see pytest_containercheck/probing.py for the host side):
#   * first line on stderr:  "@@containercheck-pid <nonce> <pid>"  so the host can kill
#     the probe's process group inside the container after a timeout;
#   * last line on stdout:   "@@containercheck-result <nonce> <json envelope>".
# Anything else printed is evidence and is never parsed.  The nonce is random per call,
# so a library that prints a marker-looking line cannot forge a result.
import json
import os
import signal
import sys
import time
import traceback
import warnings

ENVELOPE_VERSION = 1
RESULT_MARKER = "@@containercheck-result"
PID_MARKER = "@@containercheck-pid"


class ProbeContext(object):
    """What a probe's `run(params, ctx)` gets besides its parameters."""

    def __init__(self, params):
        self.params = params
        self.timings = {}
        self.artifacts = {}
        self.warnings = []
        self._start = time.time()

    def timed(self, name):
        """Context manager: `with ctx.timed("import"): import torch` records seconds."""
        return _Timer(self, name)

    def artifact(self, name, data):
        """Attach bytes (e.g. a PNG) to the result; sent base64-encoded."""
        import base64

        self.artifacts[name] = base64.b64encode(data).decode("ascii")

    def capture_warnings(self):
        """Context manager recording every warning raised inside it as a fact."""
        return _WarningCapture(self)

    # Helpers shared by the probes.  Each probe travels alone (this file + one probe), so
    # what two probes need lives here, not copied into both.  Stdlib only, imported lazily.

    def scratch_file(self):
        """A file to capture output in: a temporary file, or one in memory (memfd) when the
        image has no writable temporary directory (--read-only): what a probe does needs no
        file, so a read-only /tmp must not turn it into an error."""
        import tempfile

        try:
            return tempfile.TemporaryFile()
        except (IOError, OSError):
            if not hasattr(os, "memfd_create"):  # Python < 3.8: nothing else to write to
                raise
        return os.fdopen(os.memfd_create("containercheck-capture"), "w+b")

    def exc_text(self, exc):
        """An exception as a fact: "TypeName: message", at most 2000 characters."""
        return ("%s: %s" % (type(exc).__name__, exc))[:2000]

    def module_found(self, module):
        """Whether *module* is installed (find_spec), without importing it; never raises.

        Installed but unimportable (a missing system library) is a defect, not an absence.
        """
        import importlib.util

        try:
            return importlib.util.find_spec(module) is not None
        except Exception:
            return False

    def writable(self, path):
        """Can files be created at directory *path*?  Never creates anything: when *path*
        does not exist yet, its nearest existing ancestor is tested (what makedirs would
        need).  {"path", "exists", "tested", "writable"[, "error"]}, or
        {"path", "writable": False, "error": "not set"} for an empty path."""
        import os
        import tempfile

        if not path:
            return {"path": path, "writable": False, "error": "not set"}
        tested = path
        # lexists: a dangling symlink or a file on the way is where makedirs would fail,
        # so it is tested (and fails), never walked past.
        while not os.path.lexists(tested):
            parent = os.path.dirname(tested)
            if parent == tested:
                break
            tested = parent
        out = {"path": path, "exists": os.path.isdir(path), "tested": tested}
        try:
            fd, name = tempfile.mkstemp(prefix=".containercheck-", dir=tested)
            os.close(fd)
            os.unlink(name)
            out["writable"] = True
        except Exception as exc:  # EROFS, EACCES, ENOTDIR: exactly what we want to report
            out["writable"] = False
            if tested != path and isinstance(exc, OSError) and exc.errno is not None:
                # *path* does not exist: name it (as makedirs would), not our file in an ancestor.
                out["error"] = "%s: [Errno %d] %s: %r" % (type(exc).__name__, exc.errno, exc.strerror, path)
            else:
                out["error"] = self.exc_text(exc)
        return out

    def load_library(self, name):
        """dlopen *name* with ctypes: (lib, facts).  facts is {"loaded": True, "path": the
        file it was mapped from, when /proc/self/maps says} or {"loaded": False, "error":
        the loader's message}; lib is None when it did not load.  A library that is there but
        does not load gets "resolution" too: what the loader resolves, from where, and which
        dependency breaks it (see explain_load)."""
        import ctypes

        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            info = {"loaded": False, "error": str(exc)[:500]}
            try:
                if _DpLoader().candidates(name, "", (), None) if "/" not in name else os.path.isfile(name):  # noqa: F821
                    info["resolution"] = self.explain_load(name, str(exc))
            except Exception as why:  # the analysis must never cost the fact itself
                info["resolution_error"] = self.exc_text(why)
            return None, info
        info = {"loaded": True}
        base = name.rsplit("/", 1)[-1].split(".so")[0] + ".so"
        try:
            with open("/proc/self/maps") as fh:
                for line in fh:
                    fields = line.split()
                    path = fields[-1] if len(fields) >= 6 else ""
                    if path.rsplit("/", 1)[-1].startswith(base):
                        info["path"] = path
                        break
        except (IOError, OSError):
            pass
        return lib, info

    def explain_load(self, target, error):
        """Why the shared library *target* (a path, or a name the loader searches) did not load
        with the loader's *error*: {"target", "target_path", "target_owners" (dpkg packages),
        "problems": [{"kind": "missing" | "version" | "symbol", "name", "needed_by", ... "taken":
        {"path", "via", "origin"}, "alternatives": [{"path", "via", "origin", "satisfies"}],
        "owners"}], "search": {"LD_LIBRARY_PATH", "ld_so_conf"}}.  Read from the files, as glibc's
        loader searches them (probes/_depth.py)."""
        return _dp_explain_load(target, error)  # noqa: F821 (probes/_depth.py, sent with this file)

    def import_library(self, *modules):
        """Import *modules* in order: (the first module or None, facts).  The standard facts of a
        library: {"installed": imported, "distribution": {"name", "version"}}; when an import
        raises, also "error", "error_type", "failed_module", "found" (installed in this Python),
        "missing_module" (what ModuleNotFoundError names), "raised_in" (the innermost module of
        the traceback outside the standard library, and its distribution), "import_chain",
        "requirements" (the Requires-Dist of the library's and that distribution's installed
        requirements, unmet ones listed), "dist_versions", and "native" (explain_load of the
        files a loader message names)."""
        import importlib

        first = None
        for module in modules:
            try:
                mod = importlib.import_module(module)
            except Exception as exc:
                return None, self.library_failure(module, exc)
            if first is None:
                first = mod
        facts = {"installed": True}
        owner = _dp_distribution_of(modules[0]) if modules else None  # noqa: F821
        if owner:
            facts["distribution"] = {"name": owner[0], "version": owner[1]}
        return first, facts

    def library_failure(self, module, exc):
        """The standard facts of *module* raising *exc* on import or first use (see import_library)."""
        facts = {"installed": False, "failed_module": module}
        facts.update(_dp_import_failure(self, module, exc))  # noqa: F821
        return facts

    def libcuda(self, init=True):
        """The driver's libcuda.so.1 as the probes see it: load_library's facts plus
        "driver_cuda_version" (cuDriverGetVersion, no context needed, as nvidia-smi reads it) and,
        with *init*, "cuInit" (its return code: the driver's own reason when CUDA cannot start) and
        "device_count".  Never raises: a broken stub without the symbols is an "error"."""
        import ctypes

        lib, out = self.load_library("libcuda.so.1")
        if lib is None:
            return out
        try:
            if init:
                out["cuInit"] = int(lib.cuInit(0))
            rc, version = self.cuda_driver_version(lib)
            if rc == 0:
                out["driver_cuda_version"] = version
            else:
                out["driver_version_rc"] = rc
            count = ctypes.c_int(0)
            if init and out["cuInit"] == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0:
                out["device_count"] = count.value
        except Exception as exc:
            out["error"] = self.exc_text(exc)
        return out

    def cuda_driver_version(self, lib):
        """cuDriverGetVersion() through a loaded libcuda (no cuInit needed, like
        nvidia-smi): (return code, "major.minor" or None).  Raises what ctypes raises
        when the symbol is missing (a broken stub library)."""
        import ctypes

        version = ctypes.c_int(0)
        rc = int(lib.cuDriverGetVersion(ctypes.byref(version)))
        if rc != 0:
            return rc, None
        return rc, "%d.%d" % (version.value // 1000, (version.value % 1000) // 10)

    def dist_versions(self, names):
        """{distribution: version} of the installed *names* (importlib.metadata, no import of
        the packages themselves); absent ones are left out.  {} on Python 3.7 (no metadata)."""
        try:
            from importlib import metadata
        except ImportError:
            return {}
        out = {}
        for name in names:
            try:
                out[name] = metadata.version(name)
            except Exception:
                continue
        return out

    def select_torch_device(self, torch):
        """Select a device the way current user code does, and say which API chose it.

        Returns (info, device): info is {"compiled_accelerator", "api", "selected"};
        device is a torch.device, or None for the CPU.
        """
        acc_mod = getattr(torch, "accelerator", None)
        info = {"compiled_accelerator": None}
        if acc_mod is not None and hasattr(acc_mod, "current_accelerator"):
            # torch >= 2.6.  current_accelerator() alone is the *compile-time* accelerator
            # (a CUDA build says "cuda" with no GPU at all), so ask for a runtime check as
            # the function's own docstring example does.
            compiled = acc_mod.current_accelerator()
            info["compiled_accelerator"] = str(compiled) if compiled is not None else None
            try:
                dev = acc_mod.current_accelerator(check_available=True)
                info["api"] = "torch.accelerator.current_accelerator(check_available=True)"
            except TypeError:  # 2.6/2.7: no check_available parameter
                dev = compiled if acc_mod.is_available() else None
                info["api"] = "torch.accelerator.current_accelerator() + is_available()"
            if dev is not None:
                index = acc_mod.current_device_index()
                dev = torch.device(dev.type, index)
        else:
            info["api"] = "torch.cuda.is_available()"
            dev = None
            if torch.cuda.is_available():
                dev = torch.device("cuda", torch.cuda.current_device())
            elif getattr(getattr(torch.backends, "mps", None), "is_available", lambda: False)():
                dev = torch.device("mps")
        info["selected"] = str(dev) if dev is not None else "cpu"
        return info, dev


class _Timer(object):
    def __init__(self, ctx, name):
        self.ctx = ctx
        self.name = name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.ctx.timings[self.name] = round(time.perf_counter() - self.t0, 6)
        return False


class _WarningCapture(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self._cm = warnings.catch_warnings(record=True)

    def __enter__(self):
        self.records = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        for w in self.records:
            self.ctx.warnings.append(
                {"category": w.category.__name__, "message": str(w.message)[:2000]}
            )
        self._cm.__exit__(*exc)
        return False


def _jsonable(value):
    """Make facts JSON-safe without ever failing the probe over a fact's type."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return dict((str(k), _jsonable(v)) for k, v in value.items())
        if isinstance(value, (list, tuple, set)):
            return [_jsonable(v) for v in value]
        return repr(value)


def lower_priority(increment):
    """Run at a lower CPU priority (niceness +increment): this probe started while a heavier
    one runs, and should take the CPU time that one leaves over, not share it evenly."""
    try:
        os.nice(increment)
    except (AttributeError, OSError):  # no nice(2) here: run at the normal priority
        pass


def main(run, params, nonce, timeout, bundled=False):
    """Run `run(params, ctx)`, then print the result envelope line.

    *bundled*: a child forked by `bundle`, which has already joined the bundle's process
    group and printed the pid line for it.
    """
    # Our own watchdog: SIGALRM's default action ends the process even while it is stuck
    # in C code holding the GIL, so a probe never outlives its timeout inside the image.
    if timeout and hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(timeout) + 1)
    if not bundled:
        try:
            os.setpgid(0, 0)  # children join our group, so the host can kill them all
        except OSError:
            pass
        sys.stderr.write("%s %s %d\n" % (PID_MARKER, nonce, os.getpid()))
        sys.stderr.flush()
    out = sys.stdout
    ctx = ProbeContext(params)
    envelope = {"v": ENVELOPE_VERSION, "status": "ok", "facts": {}, "error": None}
    try:
        facts = run(params, ctx)
        envelope["facts"] = _jsonable(facts if facts is not None else {})
    except BaseException as exc:  # a probe reports its own failure; it never crashes
        envelope["status"] = "error"
        envelope["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        envelope["traceback"] = traceback.format_exc()[-8000:]
    ctx.timings["total"] = round(time.time() - ctx._start, 6)
    envelope["timings"] = ctx.timings
    envelope["warnings"] = ctx.warnings
    envelope["artifacts"] = ctx.artifacts
    envelope["python"] = list(sys.version_info[:3])
    line = "\n%s %s %s\n" % (RESULT_MARKER, nonce, json.dumps(envelope, sort_keys=True))
    try:
        out.write(line)
        out.flush()
    except Exception:  # a library replaced or closed sys.stdout: use the real fd
        os.write(1, line.encode("utf-8"))
    # Leave at once: the result is out, and tearing down an interpreter that loaded torch,
    # transformers or VTK takes up to a second and a half per probe, for nothing.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)


# --------------------------------------------------------------------------- bundles
#
# Probes that import the same heavy modules (torch for torch_device and transformers_infer;
# pyvista/VTK for the render backends) can run as one bundle: one interpreter, the shared
# modules imported once, every probe in its own forked child, one after the other.
#
#   * The shared imports happen in a forked "zygote", and only count when they were silent:
#     no exception, no warning of any category, nothing written to stdout or stderr.  Then a
#     probe forked from the zygote sees exactly what it would have seen importing them
#     itself.  Otherwise the zygote is dropped and each probe is forked from the bundle's own
#     process, which has imported nothing, and imports for itself as if it ran alone.
#   * Nothing is initialised by the shared imports: CUDA and EGL displays are touched only by
#     the probes, in their children.
#   * Every child is in the bundle's process group (the pid line names it for each probe), so
#     the host's kill after a timeout ends the whole bundle; a child killed by its own
#     watchdog has what it left behind in the group killed before the next one starts.
#   * Around each child, on both streams: "@@containercheck-begin <nonce>"; after it, on
#     stderr: "@@containercheck-exit <nonce> <status> <seconds>" (status: exit code, or minus
#     the signal), so the host cuts one result per probe out of the shared output.

BEGIN_MARKER = "@@containercheck-begin"
EXIT_MARKER = "@@containercheck-exit"
SHARED_MARKER = "@@containercheck-shared"


def _bundle_silent_import(modules):
    """Import *modules*; True when that raised nothing, warned nothing and printed nothing."""
    import importlib
    import tempfile

    try:
        sink = tempfile.TemporaryFile()
    except Exception:  # no writable temporary directory: hold it in memory (memfd), else do not share
        try:
            sink = os.fdopen(os.memfd_create("containercheck-sink"), "w+b")
        except Exception:
            return False
    saved = [os.dup(1), os.dup(2)]
    clean = True
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for module in modules:
                    importlib.import_module(module)
            except BaseException:
                clean = False
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                clean = False
        if caught:
            clean = False
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    sink.seek(0, 2)
    if sink.tell():
        clean = False
    sink.close()
    return clean


def _bundle_kill_leftovers(keep):
    """SIGKILL every process of our process group but *keep* (a killed probe's children)."""
    group = os.getpgrp()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == group:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def _bundle_run_calls(calls, keep):
    for call in calls:
        nonce = call["nonce"]
        for stream in (sys.stdout, sys.stderr):
            stream.write("\n%s %s\n" % (BEGIN_MARKER, nonce))
            stream.flush()
        sys.stderr.write("%s %s %d\n" % (PID_MARKER, nonce, os.getpgrp()))
        sys.stderr.flush()
        t0 = time.time()
        pid = os.fork()
        if pid == 0:
            try:
                namespace = dict(_BUNDLE_GLOBALS)
                exec(compile(call["source"], "<probe %s>" % call["name"], "exec"), namespace)
                main(namespace["run"], call["params"], nonce, call["timeout"], bundled=True)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            os._exit(1)
        status = os.waitpid(pid, 0)[1]
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            _bundle_kill_leftovers(keep)
        sys.stderr.write("\n%s %s %d %.6f\n" % (EXIT_MARKER, nonce, code, time.time() - t0))
        sys.stderr.flush()


def bundle(calls, shared):
    """Run *calls* ({"name", "source", "params", "nonce", "timeout"}) one after the other,
    each in a child forked after the *shared* modules were imported once (when silently)."""
    global _BUNDLE_GLOBALS
    _BUNDLE_GLOBALS = dict(globals())
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    me = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    zygote = os.fork()
    if zygote == 0:
        os.close(ready_r)
        # An import that hangs (a stalled network file system) ends the zygote like a probe's
        # watchdog would; the probes then run without it, each under its own watchdog.
        limit = max([c["timeout"] or 0 for c in calls] or [0])
        if limit and hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(limit) + 1)
        clean = _bundle_silent_import(shared)
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
        os.write(ready_w, b"1" if clean else b"0")
        os.close(ready_w)
        if clean:
            _bundle_run_calls(calls, (me, os.getpid()))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    os.close(ready_w)
    answer = os.read(ready_r, 1)
    os.close(ready_r)
    # Said before any probe starts, so the host can tell every probe of the bundle.
    sys.stderr.write("%s %s %s\n" % (SHARED_MARKER, ",".join(shared), "yes" if answer == b"1" else "no"))
    sys.stderr.flush()
    os.waitpid(zygote, 0)
    if answer != b"1":  # the shared imports were not silent, or the zygote died importing them
        _bundle_run_calls(calls, (me,))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
