#!/usr/bin/env bash
# GPU kit II: `apptainer exec --nv` on the lent GPU machine (Ubuntu 24.04, no container runtime,
# no registry), with a SIF built there from the machine's own Python (torch, transformers) plus the
# carried wheels.  From the repository root of a copy of the working tree:
#
#   bash tests/gpu/apptainer_run.sh          # writes $OUT/kit2.tgz, kit2.log, verdict.txt, env.json
#
# Carried (git-ignored, see tests/gpu/README.md, "Kit II"): build/gpu-kit2/*.deb from
# `python3 tests/gpu/apptainer_kit.py prepare build/gpu-kit2` (Debian's apptainer, squashfs-tools,
# squashfuse and their libraries: about 20 MB), and as before build/gpu-wheels/ and .gl/.
#
# Steps, each logged with its time in kit2.log:
#   1. env      what decides how Apptainer can run here (user namespaces, /dev/fuse, capabilities):
#               env.json, first and cheap;
#   2. install  the carried .debs, each library only where the machine lacks its soname;
#   3. driver   libcuda in the loader cache and nvidia-smi on PATH, as `--nv` finds them (the driver
#               mount /usr/local/nvidia is added when they are not: logged);
#   4. gpu?     no GPU: SKIPPED, packed, exit 0 (KIT_ASSUME_GPU=1 runs on, for testing the kit);
#   5. sif      the image: Apptainer's skeleton + the carried site (/kit-site on PYTHONPATH), then
#               usr, etc and the Python environment's directory of this machine, without the NVIDIA
#               driver's files (`--nv` must bring them): mksquashfs, `apptainer sif new/add`;
#   6. modes    `apptainer exec --nv` with what env.json allows, then the other ways
#               (--userns, --unsquash); every attempt's output is kept: if none runs, that is the
#               result (APPTAINER_BLOCKED), and the kit packs and exits 5;
#   7. pytest   `--image x.sif --require-gpu --require-hw-render` with --nv, and with --nvccli when
#               nvidia-container-cli is here; the matrix, JUnit, pytest.log;
#   8. record   each probe's raw envelope from inside the SIF (probes/*.json) and the host facts.
#
# Environment (for testing the kit on a CPU machine): KIT2_OUT (work dir), KIT2_DEBS (carried .debs),
# KIT2_ROOT (where usr/etc come from, default /), KIT_PYTHON (runs pytest; its environment goes into
# the image), KIT2_CONTAINER_PYTHON (the image's interpreter, default KIT_PYTHON's path),
# KIT2_PREFIX (that interpreter's environment directory, default its sys.prefix), KIT_ASSUME_GPU=1,
# KIT_PYTEST_TIMEOUT (default 420), KIT_WHEELS, KIT_GL.
#
# Exit status: 0 no GPU (skipped) or every required row passed; 1 a row did not pass; 4 no matrix;
# 5 Apptainer could not run here (APPTAINER_BLOCKED says why); 6 the SIF could not be built.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${OUT:?OUT must name the folder whose files come back}
K=${KIT2_OUT:-/tmp/containercheck-kit2}
DEBS=${KIT2_DEBS:-$ROOT/build/gpu-kit2}
SYSROOT=${KIT2_ROOT:-/}
PY=${KIT_PYTHON:-python3}
PYTEST_TIMEOUT=${KIT_PYTEST_TIMEOUT:-420}
WHEELS=${KIT_WHEELS:-$ROOT/build/gpu-wheels}
GL=${KIT_GL:-$ROOT/.gl}
KIT="$PY $ROOT/tests/gpu/apptainer_kit.py"
rm -rf "$K" && mkdir -p "$K" "$DEST"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
log() { echo "kit2: [$(( $(date +%s) - T0 ))s] $*" | tee -a "$K/kit2.log"; }
status=0
pack() {
    local rc=${1:-$status}
    tar czf "$DEST/kit2.tgz" -C "$K" --exclude=./skel --exclude=./sbox --exclude='*.sif' --exclude='*.sqfs' . \
        && echo "kit2: packed $K into $DEST/kit2.tgz ($(du -h "$DEST/kit2.tgz" | cut -f1))"
    for f in kit2.log verdict.txt env.json APPTAINER_BLOCKED SKIPPED; do
        [ -e "$K/$f" ] && cp "$K/$f" "$DEST/"
    done
    exit "$rc"
}

log "started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), uid $(id -u), python $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

# 1. env: the cheapest answer first.
$KIT env "$K/env.json" | tee -a "$K/kit2.log"
env_rc=${PIPESTATUS[0]}
mapfile -t RARGS < <("$PY" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["verdict"]["runtime_args"]))' "$K/env.json")

# 2. install the carried packages (an installed apptainer is kept).
unpack_missing() {  # .deb: unpack into / unless every shared library in it is already known to ldconfig
    local deb=$1 libs missing=0
    libs=$(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -E '\.so(\.[0-9]+)*$' | xargs -r -n1 basename)
    if [ -n "$libs" ]; then
        for l in $libs; do ldconfig -p | grep -q " $l " || missing=1; done
        [ "$missing" = 0 ] && { echo "kept the machine's own $(basename "$deb" .deb)"; return; }
    fi
    dpkg-deb -x "$deb" / && echo "unpacked $(basename "$deb")"
}
if ! command -v apptainer > /dev/null || [ "${KIT2_FORCE_INSTALL:-0}" = 1 ]; then
    if ! ls "$DEBS"/apptainer_*.deb > /dev/null 2>&1; then
        log "no apptainer here and none carried in $DEBS: run 'apptainer_kit.py prepare' and carry it"
        echo "apptainer is not installed and no apptainer .deb was carried ($DEBS)" > "$K/APPTAINER_BLOCKED"
        pack 5
    fi
    for deb in "$DEBS"/*.deb; do unpack_missing "$deb"; done >> "$K/install.log" 2>&1
    mkdir -p /var/lib/apptainer/mnt/session /var/lib/apptainer/mnt/source
    ldconfig
fi
for deb in "$GL"/*.deb "$GL"/x11/*.deb; do [ -e "$deb" ] && unpack_missing "$deb"; done >> "$K/install.log" 2>&1
ldconfig 2> /dev/null
log "apptainer $(apptainer version 2>&1 | tail -1); $(mksquashfs -version 2>&1 | head -1); squashfuse: $(command -v squashfuse_ll squashfuse | head -1)"
apptainer buildcfg > "$K/apptainer-buildcfg.txt" 2>&1

# 3. the driver as --nv finds it: libraries through ldconfig, binaries on PATH.
if ! ldconfig -p | grep -q 'libcuda\.so' && [ -d /usr/local/nvidia/lib64 ]; then
    echo /usr/local/nvidia/lib64 > /etc/ld.so.conf.d/000-kit2-nvidia.conf && ldconfig
    log "libcuda was not in the loader cache: added /usr/local/nvidia/lib64 (/etc/ld.so.conf.d/000-kit2-nvidia.conf)"
fi
[ -d /usr/local/nvidia/bin ] && export PATH="$PATH:/usr/local/nvidia/bin"
{
    ldconfig -p | grep -E 'libcuda|libEGL_nvidia|libnvidia-ml'
    ls -la /usr/share/glvnd/egl_vendor.d /etc/glvnd/egl_vendor.d 2>&1
    command -v nvidia-smi nvidia-container-cli
} > "$K/driver.txt" 2>&1

# 4. is there a GPU?
summary=$("$PY" "$ROOT/tests/gpu/kit.py" has-gpu 2>&1)
rc=$?
if [ "$rc" -eq 3 ] && [ "${KIT_ASSUME_GPU:-0}" != 1 ]; then
    log "no GPU: kit II skipped ($summary)"
    echo "$summary" > "$K/SKIPPED"
    pack 0
fi
log "GPU host: $summary"

# 5. the SIF, from this machine's own files.
CPY=${KIT2_CONTAINER_PYTHON:-$(command -v "$PY")}
PREFIX=${KIT2_PREFIX:-$("$PY" -c 'import sys; print(sys.prefix)')}
SITE=$K/skel/kit-site
mkdir -p "$K/skel/.singularity.d/env" "$SITE"
for first in "$WHEELS"/*.whl.part-aa; do
    [ -e "$first" ] && cat "${first%.part-aa}".part-* > "${first%.part-aa}"
done
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl > "$K/pip-wheels.log" 2>&1 \
        && log "carried wheels into the image's /kit-site: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')" \
        || log "carried wheels did not install (pip-wheels.log)"
fi
printf '#!/bin/sh\nexport PYTHONPATH=/kit-site${PYTHONPATH:+:$PYTHONPATH}\n' > "$K/skel/.singularity.d/env/90-environment.sh"
for d in proc sys dev tmp home root run mnt srv var/tmp; do mkdir -p "$K/skel/$d"; done
for l in bin lib lib64 sbin; do [ -e "$SYSROOT/$l" ] && ln -s "usr/$l" "$K/skel/$l"; done
SIF=$K/image.sif
{
    apptainer build --sandbox "$K/sbox" "$K/skel" && rm -rf "$K/sbox/etc" \
        && "$PY" "$ROOT/tests/gpu/apptainer_kit.py" squash-args "$SYSROOT" "$PREFIX" "$K/sbox" "$K/rootfs.sqfs" \
            > "$K/squash-args.json" \
        && "$PY" - "$K/squash-args.json" "$SYSROOT" <<'EOF'
import json, subprocess, sys
for argv in json.load(open(sys.argv[1])):
    print("+", " ".join(argv[:8]), "...", flush=True)
    subprocess.run(argv, cwd=sys.argv[2], check=True)
EOF
} > "$K/sif-build.log" 2>&1
if [ ! -s "$K/rootfs.sqfs" ] || ! { apptainer sif new "$SIF" && apptainer sif add --datatype 4 --partfs 1 \
        --parttype 2 --partarch 2 --groupid 1 "$SIF" "$K/rootfs.sqfs"; } >> "$K/sif-build.log" 2>&1; then
    log "the SIF could not be built (sif-build.log)"
    pack 6
fi
log "SIF built: $(du -h "$SIF" | cut -f1) from $SYSROOT (python $CPY, environment $PREFIX)"

# 6. which way does apptainer run here?  Every attempt is kept.
ARGS=()
found=0
for mode in "${RARGS[*]:-}" "--userns" "--userns --unsquash" "" "--unsquash"; do
    read -r -a try <<< "$mode"
    out=$(timeout 300 apptainer exec --nv "${try[@]}" "$SIF" "$CPY" -c 'import sys; print("python", sys.version.split()[0])' 2>&1)
    rc=$?
    printf '== apptainer exec --nv %s image.sif python: exit %s\n%s\n' "$mode" "$rc" "$out" >> "$K/apptainer-attempts.txt"
    if [ "$rc" -eq 0 ]; then ARGS=("${try[@]}"); found=1; break; fi
done
if [ "$found" = 0 ]; then
    {
        echo "apptainer could not run the SIF here; every way was tried (apptainer-attempts.txt)."
        echo "env.json verdict (exit $env_rc):"
        "$PY" -c 'import json,sys; v=json.load(open(sys.argv[1]))["verdict"]; print(json.dumps(v, indent=1))' "$K/env.json"
        grep -hE 'ERROR|FATAL' "$K/apptainer-attempts.txt" | sort | uniq -c
    } > "$K/APPTAINER_BLOCKED"
    log "BLOCKED: apptainer cannot run here (APPTAINER_BLOCKED)"
    pack 5
fi
log "apptainer runs the SIF with: --nv ${ARGS[*]:-}"

# 7. the built-in suite in the SIF.
run_pytest() {  # name, extra options...
    local name=$1 dir=$K/$1 W
    shift
    mkdir -p "$dir"
    W=$(mktemp -d)
    printf '[pytest]\n' > "$W/pytest.ini"
    ( cd "$W" && timeout "$PYTEST_TIMEOUT" "$PY" -m pytest -c "$W/pytest.ini" -p no:cacheprovider -p no:containercheck \
        -p pytest_containercheck.plugin --image "$SIF" --container-python "$CPY" "${ARGS[@]/#/--runtime-arg=}" \
        --require-gpu --require-hw-render -rA "$@" --matrix-json "$dir/matrix.json" --matrix-md "$dir/matrix.md" \
        --junitxml "$dir/junit.xml" ) > "$dir/pytest.log" 2>&1
    log "pytest ($name): exit $?"
    rm -rf "$W"
}
run_pytest nv
if command -v nvidia-container-cli > /dev/null; then
    run_pytest nvccli --apptainer-gpu nvccli
fi

# 8. the raw facts, from inside the SIF.
KIT2_CONTAINER_PYTHON=$CPY $KIT record "$SIF" "$K/probes" "${ARGS[@]}" > "$K/record.log" 2>&1
log "probes recorded: $(ls "$K/probes" 2>/dev/null | tr '\n' ' ')"

if [ ! -s "$K/nv/matrix.json" ]; then
    log "pytest wrote no matrix (nv/pytest.log)"
    pack 4
fi
"$PY" "$ROOT/tests/gpu/kit.py" judge "$K/nv/matrix.json" > "$K/verdict.txt" 2>&1
status=$?
tail -n +1 "$K/verdict.txt" | tee -a "$K/kit2.log" | tail -3
pack "$status"
