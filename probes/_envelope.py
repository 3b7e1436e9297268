# Container side: the harness every probe runs inside.
#
# The host sends one program on the interpreter's stdin: this file, then the probe's
# source, then a call `main(run, PARAMS, NONCE, TIMEOUT)`.  So this file and every probe
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


def main(run, params, nonce, timeout):
    """Run `run(params, ctx)`, then print the result envelope line."""
    # Our own watchdog: SIGALRM's default action ends the process even while it is stuck
    # in C code holding the GIL, so a probe never outlives its timeout inside the image.
    if timeout and hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(timeout) + 1)
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
