#!/usr/bin/env bash
# GPU acceptance kit: one command on a bare GPU machine, from the repository root of a copy of
# the working tree.  Nothing is installed: the plugin is loaded from the tree (PYTHONPATH + -p).
#
#   bash tests/gpu/run_kit.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else ./gpu-kit-out
#
# Environment: KIT_PYTHON (the interpreter under test, default python3), KIT_PYTEST_TIMEOUT
# (seconds for the pytest run, default 300), KIT_PROBE_TIMEOUT (per probe, default 150),
# KIT_WHEELS (carried wheels, or their split parts *.whl.part-*; default build/gpu-wheels,
# ignored by git so parts survive between commands on a warm machine), KIT_ASSUME_GPU=1 (runs
# the GPU path on a CPU machine, for testing the kit: it must fail there), KIT_PACK=FILE.tgz (at
# exit, pack the whole output directory into FILE.tgz and copy kit.log and verdict.txt beside it:
# the device tool brings back at most 8 files, and the kit writes about 20).
# Exit status: 0 when there is no GPU ("no GPU: kit skipped") or every row that must pass
# passed; 1 when a row did not pass; 4 when pytest wrote no matrix.  See tests/gpu/README.md.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-${OUT:-$ROOT/gpu-kit-out}}
PY=${KIT_PYTHON:-python3}
PYTEST_TIMEOUT=${KIT_PYTEST_TIMEOUT:-300}
PROBE_TIMEOUT=${KIT_PROBE_TIMEOUT:-150}
WHEELS=${KIT_WHEELS:-$ROOT/build/gpu-wheels}
mkdir -p "$OUT"
pack() {
    local rc=$?
    if [ -n "${KIT_PACK:-}" ]; then
        mkdir -p "$(dirname "$KIT_PACK")"
        tar czf "$KIT_PACK" -C "$OUT" . && echo "kit: packed $OUT into $KIT_PACK"
        for f in kit.log verdict.txt SKIPPED; do
            [ -e "$OUT/$f" ] && cp "$OUT/$f" "$(dirname "$KIT_PACK")/"
        done
    fi
    exit "$rc"
}
trap pack EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "kit: $*" | tee -a "$OUT/kit.log"; }

log "started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), python $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

# 1. Is there a GPU?  The plugin's own host facts decide (nvidia-smi, /dev/nvidia*, ROCm).
summary=$("$PY" "$ROOT/tests/gpu/kit.py" has-gpu 2>&1)
rc=$?
if [ "${KIT_ASSUME_GPU:-0}" = 1 ] && [ "$rc" -eq 3 ]; then
    # Only for testing the kit itself on a CPU machine: run the GPU path, which must then fail.
    log "KIT_ASSUME_GPU=1: running the GPU path although: $summary"
    rc=0
fi
if [ "$rc" -eq 3 ]; then
    log "no GPU: kit skipped ($summary)"
    echo "$summary" > "$OUT/SKIPPED"
    exit 0
elif [ "$rc" -ne 0 ]; then
    log "could not read the host facts (exit $rc): $summary"
    exit 4
fi
log "GPU host: $summary"

# 2. The driver's own view, whatever the plugin makes of it.
nvidia-smi -q > "$OUT/nvidia-smi-q.txt" 2>&1 || log "nvidia-smi -q failed (see nvidia-smi-q.txt)"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,uuid --format=csv > "$OUT/nvidia-smi-query.csv" 2>&1

# 3. Optional: wheels carried in (VTK ~140 MB, xgboost ~130 MB: over one command's 64 MiB, so
#    split them and carry the parts in consecutive commands; see tests/gpu/README.md).
if [ -d "$WHEELS" ]; then
    for first in "$WHEELS"/*.whl.part-aa; do
        [ -e "$first" ] || continue
        whl=${first%.part-aa}
        cat "$whl".part-* > "$whl" && log "reassembled $(basename "$whl") ($(du -h "$whl" | cut -f1))"
    done
    if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        SITE=${KIT_SITE:-/tmp/containercheck-kit-site}
        "$PY" -m pip install --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl > "$OUT/pip-wheels.log" 2>&1 \
            && log "installed carried wheels into $SITE: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')" \
            || log "carried wheels did not install (see pip-wheels.log); their rows will skip"
        export PYTHONPATH="$PYTHONPATH:$SITE"
    fi
fi

# 4. The matrix: the built-in suite only, run from an empty directory so the project's own
#    tests and ini are not collected.  -p loads the plugin from the tree; -p no:containercheck
#    keeps an installed copy (entry point) from registering twice.
WORK=$(mktemp -d)
printf '[pytest]\n' > "$WORK/pytest.ini"
( cd "$WORK" && timeout "$PYTEST_TIMEOUT" "$PY" -m pytest -c "$WORK/pytest.ini" -p no:cacheprovider \
    -p no:containercheck -p pytest_containercheck.plugin \
    --image host --host-python "$(command -v "$PY")" --require-gpu --require-hw-render \
    --probe-timeout "$PROBE_TIMEOUT" -v -rA \
    --matrix-json "$OUT/matrix.json" --matrix-html "$OUT/matrix.html" --matrix-md "$OUT/matrix.md" \
    --junitxml "$OUT/junit.xml" --artifacts-dir "$OUT/artifacts" ) > "$OUT/pytest.log" 2>&1
pytest_rc=$?
rm -rf "$WORK"
log "pytest exited $pytest_rc"

# 5. The raw facts of every probe, for tests/data (after the matrix: the verdict comes first).
"$PY" "$ROOT/tests/gpu/kit.py" record "$OUT/probes" "$PROBE_TIMEOUT" >> "$OUT/kit.log" 2>&1 \
    || log "recording the raw probe facts failed (see kit.log)"

# 6. The kit's verdict.
if [ ! -s "$OUT/matrix.json" ]; then
    log "FAIL: pytest wrote no matrix (exit $pytest_rc; see pytest.log)"
    tail -n 40 "$OUT/pytest.log"
    exit 4
fi
"$PY" "$ROOT/tests/gpu/kit.py" judge "$OUT/matrix.json" | tee "$OUT/verdict.txt"
verdict=${PIPESTATUS[0]}
log "done $(date -u +%Y-%m-%dT%H:%M:%SZ): verdict exit $verdict"
exit "$verdict"
