# Probe: which other Python interpreters does the image hold, and which libraries does each have?
# Stdlib only, Python 3.7+.  Many images activate their environment in an entrypoint script or
# a login shell (a venv in /opt/venv, conda's envs/), which a probe run with `python3 -` never
# sees: their libraries then look "not installed".  Facts only; the check names the
# interpreter to use (--container-python).
#
# Params:  modules   the modules to look for (importlib.util.find_spec, nothing is imported)
#          current   the interpreter the probes ran with (left out)
# Facts:   interpreters  [{"executable", "version", "modules": {name: bool}} | {"executable", "error"}]

# Where environments live in images (venv, virtualenv, conda, mamba, pyenv, uv, pixi conventions).
_PY_GLOBS = (
    "/opt/*/bin/python3", "/opt/*/envs/*/bin/python3", "/opt/*/*/bin/python3", "/venv/bin/python3",
    "/.venv/bin/python3", "/app/.venv/bin/python3", "/app/venv/bin/python3", "/workspace/.venv/bin/python3",
    "/root/.venv/bin/python3", "/root/*/envs/*/bin/python3", "/root/*/bin/python3",
    "/home/*/.venv/bin/python3", "/home/*/*/envs/*/bin/python3", "/home/*/*/bin/python3",
    "/usr/local/bin/python3", "/usr/local/bin/python3.*", "/usr/bin/python3.*", "/root/.pyenv/versions/*/bin/python3",
    "/opt/conda/bin/python3", "/opt/conda/envs/*/bin/python3", "/.pixi/envs/*/bin/python3",
)
_PY_CHECK = (
    "import importlib.util, json, sys\n"
    "mods = {}\n"
    "for m in sys.argv[1:]:\n"
    "    try:\n"
    "        mods[m] = importlib.util.find_spec(m) is not None\n"
    "    except Exception:\n"
    "        mods[m] = False\n"
    "print(json.dumps({'executable': sys.executable, 'version': '%d.%d.%d' % sys.version_info[:3],"
    " 'modules': mods}))\n"
)


def _py_candidates(current):
    import glob
    import os

    def identity(path):
        # A venv's python is a link to the base interpreter, with its own site-packages: the
        # same binary in another environment (pyvenv.cfg beside its bin/) is another candidate.
        env = os.path.dirname(os.path.dirname(path))
        venv = env if os.path.isfile(os.path.join(env, "pyvenv.cfg")) else ""
        return (os.path.realpath(path), venv)

    seen = set()
    if current:
        seen.add(identity(current))
    out = []
    for pattern in _PY_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if path.endswith(("-config", ".py")) or not os.access(path, os.X_OK) or os.path.isdir(path):
                continue
            key = identity(path)
            if key in seen:
                continue
            seen.add(key)
            out.append(path)
    return out[:40]


def run(params, ctx):
    import json
    import subprocess

    modules = [str(m) for m in params.get("modules") or []]
    found = []
    for path in _py_candidates(params.get("current")):
        try:
            proc = subprocess.run([path, "-I", "-c", _PY_CHECK] + modules, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=20)
            lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
            info = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        except Exception as exc:
            found.append({"executable": path, "error": ctx.exc_text(exc)})
            continue
        if info is None:
            found.append({"executable": path, "error": "exit %s" % proc.returncode})
        else:
            info["executable"] = path  # the path one would give --container-python, not its realpath
            found.append(info)
    return {"interpreters": found}
