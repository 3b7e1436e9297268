#!/usr/bin/env bash
# GPU kit II/III: `apptainer exec --nv` on the lent GPU machine (Ubuntu 24.04, no container runtime,
# no registry), built so that it cannot waste the machine (tests/gpu/README.md, "Kit III"):
#
#   bash tests/gpu/apptainer_run.sh preflight   # call 1: can Apptainer start here, and why not? (< 30 s)
#   bash tests/gpu/apptainer_run.sh             # the main call: SIF, the suite with --nv, the raw facts
#
# Stages, in order; each one's files reach $OUT as soon as it ends (so a call killed at its limit,
# even by SIGKILL, still brings back every finished stage), and kit.log there grows line by line:
#
#   env      what decides how Apptainer can run (user namespaces, AppArmor, /proc, /dev/fuse, loop
#            devices, capabilities)                                 -> $OUT/preflight.json
#   install  the carried .debs unpacked into / (each library only where the machine lacks its soname)
#   smoke    a tiny SIF built here (mksquashfs + apptainer sif: the tools the main call needs), run
#            with every way that may work: the first that runs is the mode; none: BLOCKED, stop
#                                                                   -> $OUT/preflight.tgz
#   [preflight stops here: exit 0 when Apptainer runs, 5 when it cannot]
#   driver   libcuda in the loader cache, nvidia-smi on PATH, as --nv finds them
#   gpu      no GPU: SKIPPED (KIT_ASSUME_GPU=1 runs on, for testing the kit)
#   sif      the image from this machine's own usr, etc and Python environment, without the
#            driver's files (--nv must bring them)                  -> $OUT/sif.tgz
#   nv       the built-in suite in the SIF with --nv                -> $OUT/nv.tgz
#   nvccli   the same with --apptainer-gpu nvccli, where nvidia-container-cli exists -> $OUT/nvccli.tgz
#   record   each probe's raw envelope from inside the SIF          -> $OUT/probes.tgz
#   verdict  kit.py judge on the nv matrix                          -> $OUT/verdict.txt
#
# At most 8 files come back from $OUT (the device tool's limit): kit.log, preflight.json,
# preflight.tgz, sif.tgz, nv.tgz, nvccli.tgz, probes.tgz, verdict.txt.
#
# A deadline (KIT_DEADLINE seconds from the start, default 540: give the call timeout_s=600) bounds
# every stage (each runs under `timeout` with what is left, less KIT_RESERVE seconds for packing);
# a stage that has no time left is not started.  A TERM/INT/HUP (the call's own limit) is trapped:
# kit.log and verdict.txt say which stage it stopped.
#
# Environment (for testing the kit on a CPU machine): KIT2_OUT (work dir), KIT2_DEBS (carried .debs),
# KIT2_ROOT (where usr/etc come from, default /), KIT_PYTHON (runs pytest; its environment goes into
# the image), KIT2_CONTAINER_PYTHON (the image's interpreter, default KIT_PYTHON's path),
# KIT2_PREFIX (that interpreter's environment directory, default its sys.prefix), KIT_ASSUME_GPU=1,
# KIT_PYTEST_TIMEOUT (default 300), KIT_WHEELS, KIT_GL, KIT_DEADLINE, KIT_RESERVE (default 15),
# KIT_STALL=<stage> (tests only: that stage waits for $KIT2_OUT/.go-<stage> before it starts).
#
# Exit status: 0 no GPU (skipped), every required row passed, or (preflight) Apptainer runs; 1 a row
# did not pass; 4 no matrix; 5 Apptainer cannot run here (verdict.txt says why); 6 the SIF could not
# be built; 7 the deadline stopped a stage; 143 a signal stopped the kit.
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${OUT:?OUT must name the folder whose files come back}
K=${KIT2_OUT:-/tmp/containercheck-kit2}
DEBS=${KIT2_DEBS:-$ROOT/build/gpu-kit2}
SYSROOT=${KIT2_ROOT:-/}
PY=${KIT_PYTHON:-python3}
PYTEST_TIMEOUT=${KIT_PYTEST_TIMEOUT:-300}
WHEELS=${KIT_WHEELS:-$ROOT/build/gpu-wheels}
GL=${KIT_GL:-$ROOT/.gl}
DEADLINE=${KIT_DEADLINE:-540}
RESERVE=${KIT_RESERVE:-15}
KIT="$PY $ROOT/tests/gpu/apptainer_kit.py"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

log() {  # every line reaches $OUT at once: a call killed by SIGKILL still brings the log back
    local line="kit: [$(( $(date +%s) - T0 ))s] $*"
    echo "$line"
    echo "$line" >> "$K/kit.log"
    cp "$K/kit.log" "$DEST/kit.log" 2> /dev/null
}

publish() {  # name file...: the finished stage's files, into $OUT/name.tgz (missing files skipped)
    local name=$1 have=() f
    shift
    for f in "$@"; do [ -e "$K/$f" ] && have+=("$f"); done
    [ "${#have[@]}" -gt 0 ] && tar czf "$DEST/$name.tgz" -C "$K" "${have[@]}" 2> /dev/null
}

stall() {  # tests only: wait for the go file of this stage (an event), within the stage's own timeout,
           # and no longer than the kit itself lives (a SIGKILLed kit leaves no stage behind waiting)
    if [ "${KIT_STALL:-}" = "$1" ]; then
        echo "stalled at $1, waiting for $K/.go-$1"
        while [ ! -e "$K/.go-$1" ] && kill -0 "${KIT_MAIN_PID:?}" 2> /dev/null; do sleep 0.2; done
    fi
}

# -- the stages (each runs as `apptainer_run.sh stage NAME` under `timeout`) -------------------------

stage_env() {
    stall env
    $KIT env "$K/env.json"
    local rc=$?
    cp "$K/env.json" "$DEST/preflight.json"
    return "$rc"
}

unpack_missing() {  # .deb: unpack into / unless every shared library in it is already known to ldconfig
    local deb=$1 libs missing=0
    libs=$(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -E '\.so(\.[0-9]+)*$' | xargs -r -n1 basename)
    if [ -n "$libs" ]; then
        for l in $libs; do ldconfig -p | grep -q " $l " || missing=1; done
        [ "$missing" = 0 ] && { echo "kept the machine's own $(basename "$deb" .deb)"; return; }
    fi
    # Not 'dpkg-deb -x': its tar replaces a symlink to a directory by a directory, and a merged-/usr
    # system (Ubuntu 24.04, Debian 12+: /bin, /lib -> usr/...) then loses its /lib: every program
    # linked through /lib/<triplet> stops starting (seen in a fresh Debian 13 root: "gzip: Cannot exec").
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C / --keep-directory-symlink --no-same-owner \
        && echo "unpacked $(basename "$deb")"
}

stage_install() {
    stall install
    if ! command -v apptainer > /dev/null || [ "${KIT2_FORCE_INSTALL:-0}" = 1 ]; then
        if ! ls "$DEBS"/apptainer_*.deb > /dev/null 2>&1; then
            echo "apptainer is not installed and no apptainer .deb was carried ($DEBS): run 'apptainer_kit.py prepare' and carry it" | tee "$K/BLOCKED"
            return 5
        fi
        for deb in "$DEBS"/*.deb; do unpack_missing "$deb"; done
        mkdir -p /var/lib/apptainer/mnt/session /var/lib/apptainer/mnt/source
        ldconfig
    fi
    for deb in "$GL"/*.deb "$GL"/x11/*.deb; do [ -e "$deb" ] && unpack_missing "$deb"; done
    ldconfig 2> /dev/null
    apptainer buildcfg > "$K/apptainer-buildcfg.txt" 2>&1
    echo "apptainer $(apptainer version 2>&1 | tail -1); $(mksquashfs -version 2>&1 | head -1); squashfuse: $(command -v squashfuse_ll squashfuse | head -1)"
    local starter
    starter=$(sed -n 's/^LIBEXECDIR=//p' "$K/apptainer-buildcfg.txt")/apptainer/bin/starter-suid
    [ -u "$starter" ] && echo "setuid starter: $starter" || echo "no setuid starter ($starter): user namespaces or root with every capability"
}

stage_smoke() {  # the cheapest real answer: apptainer itself, on a SIF of a few kilobytes
    stall smoke
    local tiny=$K/tiny mode out rc
    rm -rf "$tiny" && mkdir -p "$tiny/root"
    for d in proc sys dev tmp home root etc usr var/tmp; do mkdir -p "$tiny/root/$d"; done
    for l in bin lib lib64 sbin; do ln -s "usr/$l" "$tiny/root/$l"; done
    mksquashfs "$tiny/root" "$tiny/root.sqfs" -noappend -all-root -no-recovery -quiet > "$K/smoke.txt" 2>&1 \
        && apptainer sif new "$tiny/tiny.sif" >> "$K/smoke.txt" 2>&1 \
        && apptainer sif add --datatype 4 --partfs 1 --parttype 2 --partarch "$($KIT sif-arch)" --groupid 1 \
            "$tiny/tiny.sif" "$tiny/root.sqfs" >> "$K/smoke.txt" 2>&1 \
        || { echo "the tiny SIF could not be built (smoke.txt): mksquashfs or apptainer sif failed" | tee "$K/BLOCKED"; return 6; }
    mapfile -t RARGS < <("$PY" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["verdict"]["runtime_args"]))' "$K/env.json")
    for mode in "${RARGS[*]:-}" "" "--userns" "--userns --unsquash" "--unsquash"; do
        read -r -a try <<< "$mode"
        out=$(timeout 20 apptainer exec "${try[@]}" --bind /usr "$tiny/tiny.sif" /usr/bin/true 2>&1)
        rc=$?
        printf '== apptainer exec %s tiny.sif /usr/bin/true: exit %s\n%s\n' "$mode" "$rc" "$out" >> "$K/smoke.txt"
        if [ "$rc" -eq 0 ]; then
            echo "$mode" > "$K/mode.txt"
            echo "apptainer runs here with: ${mode:-(no extra flags)}"
            return 0
        fi
    done
    {
        echo "apptainer cannot start here: every way was tried (smoke.txt)."
        "$PY" -c 'import json,sys; v=json.load(open(sys.argv[1]))["verdict"]; print("\n".join(v["blockers"]) or "the environment allowed it; see apptainer'"'"'s own errors:")' "$K/env.json"
        sed 's/\x1b\[[0-9;]*m//g' "$K/smoke.txt" | grep -hE 'ERROR|FATAL' | sort | uniq -c
    } | tee "$K/BLOCKED"
    return 5
}

stage_driver() {
    stall driver
    if ! ldconfig -p | grep -q 'libcuda\.so' && [ -d /usr/local/nvidia/lib64 ]; then
        echo /usr/local/nvidia/lib64 > /etc/ld.so.conf.d/000-kit2-nvidia.conf && ldconfig
        echo "libcuda was not in the loader cache: added /usr/local/nvidia/lib64 (/etc/ld.so.conf.d/000-kit2-nvidia.conf)"
    fi
    {
        ldconfig -p | grep -E 'libcuda|libEGL_nvidia|libnvidia-ml'
        ls -la /usr/share/glvnd/egl_vendor.d /etc/glvnd/egl_vendor.d 2>&1
        command -v nvidia-smi nvidia-container-cli
    } > "$K/driver.txt" 2>&1
    "$PY" "$ROOT/tests/gpu/kit.py" has-gpu
}

stage_sif() {
    stall sif
    local CPY PREFIX SITE SIF=$K/image.sif
    CPY=${KIT2_CONTAINER_PYTHON:-$(command -v "$PY")}
    PREFIX=${KIT2_PREFIX:-$("$PY" -c 'import sys; print(sys.prefix)')}
    SITE=$K/skel/kit-site
    mkdir -p "$K/skel/.singularity.d/env" "$SITE"
    for first in "$WHEELS"/*.whl.part-aa; do
        [ -e "$first" ] && cat "${first%.part-aa}".part-* > "${first%.part-aa}"
    done
    if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        "$PY" -m pip install --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl > "$K/pip-wheels.log" 2>&1 \
            && echo "carried wheels into the image's /kit-site: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')" \
            || echo "carried wheels did not install (pip-wheels.log)"
    fi
    printf '#!/bin/sh\nexport PYTHONPATH=/kit-site${PYTHONPATH:+:$PYTHONPATH}\n' > "$K/skel/.singularity.d/env/90-environment.sh"
    for d in proc sys dev tmp home root run mnt srv var/tmp; do mkdir -p "$K/skel/$d"; done
    for l in bin lib lib64 sbin; do [ -e "$SYSROOT/$l" ] && ln -s "usr/$l" "$K/skel/$l"; done
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
            --parttype 2 --partarch "$($KIT sif-arch)" --groupid 1 "$SIF" "$K/rootfs.sqfs"; } >> "$K/sif-build.log" 2>&1; then
        echo "the SIF could not be built (sif-build.log)"
        return 6
    fi
    echo "$CPY" > "$K/python.txt"
    echo "SIF built: $(du -h "$SIF" | cut -f1) from $SYSROOT (python $CPY, environment $PREFIX)"
    local mode out rc
    read -r -a try < "$K/mode.txt"
    out=$(timeout 120 apptainer exec --nv "${try[@]}" "$SIF" "$CPY" -c 'import sys; print("python", sys.version.split()[0])' 2>&1)
    rc=$?
    printf '== apptainer exec --nv %s image.sif python: exit %s\n%s\n' "${try[*]}" "$rc" "$out" > "$K/apptainer-attempts.txt"
    [ "$rc" -eq 0 ] || { echo "the SIF does not run with the smoke test's mode (apptainer-attempts.txt)"; return 5; }
}

run_pytest() {  # name, extra options...
    local name=$1 dir=$K/$1 W CPY ARGS
    shift
    mkdir -p "$dir"
    W=$(mktemp -d)
    CPY=$(cat "$K/python.txt")
    read -r -a ARGS < "$K/mode.txt"
    printf '[pytest]\n' > "$W/pytest.ini"
    ( cd "$W" && timeout "$PYTEST_TIMEOUT" "$PY" -m pytest -c "$W/pytest.ini" -p no:cacheprovider -p no:containercheck \
        -p pytest_containercheck.plugin --image "$K/image.sif" --container-python "$CPY" "${ARGS[@]/#/--runtime-arg=}" \
        --require-gpu --require-hw-render -rA "$@" --matrix-json "$dir/matrix.json" --matrix-md "$dir/matrix.md" \
        --junitxml "$dir/junit.xml" ) > "$dir/pytest.log" 2>&1
    local rc=$?
    rm -rf "$W"
    echo "pytest ($name): exit $rc"
    [ -s "$dir/matrix.json" ]
}

stage_nv() { stall nv; run_pytest nv; }
stage_nvccli() { stall nvccli; run_pytest nvccli --apptainer-gpu nvccli; }

stage_record() {
    stall record
    local ARGS
    read -r -a ARGS < "$K/mode.txt"
    KIT2_CONTAINER_PYTHON=$(cat "$K/python.txt") $KIT record "$K/image.sif" "$K/probes" "${ARGS[@]}"
}

if [ "${1:-}" = stage ]; then  # one stage, under the caller's `timeout`
    T0=${KIT_T0:?}
    "stage_$2"
    exit $?
fi

# -- the driver: stages in order, each bounded by the deadline, each published as it ends ----------

MODE=${1:-all}
T0=$(date +%s)
export KIT_T0=$T0 KIT_MAIN_PID=$$
rm -rf "$K" && mkdir -p "$K" "$DEST"
CURRENT=""

STAGE_PID=""
finish() {  # verdict.txt, kit.log: always, whatever ended the run
    local rc=$1 why=$2
    [ -n "$STAGE_PID" ] && kill -TERM "$STAGE_PID" 2> /dev/null  # the stage's timeout passes it on
    [ -n "$why" ] && { echo "$why" >> "$K/verdict.txt"; log "$why"; }
    [ -e "$K/verdict.txt" ] && cp "$K/verdict.txt" "$DEST/verdict.txt"
    cp "$K/kit.log" "$DEST/kit.log" 2> /dev/null
    exit "$rc"
}
trap 'finish 143 "INCOMPLETE: stopped by a signal during stage ${CURRENT:-none} after $(( $(date +%s) - T0 )) s"' TERM INT HUP

run_stage() {  # name: runs it with what is left of the deadline; its output goes to <name>.log
    local name=$1 left rc
    left=$(( DEADLINE - RESERVE - ($(date +%s) - T0) ))
    if [ "$left" -le 0 ]; then
        finish 7 "INCOMPLETE: the deadline (${DEADLINE} s) left no time for stage $name"
    fi
    CURRENT=$name
    log "stage $name: started (at most ${left} s)"
    timeout --kill-after=5 "$left" bash "$SELF" stage "$name" > "$K/$name.log" 2>&1 &
    STAGE_PID=$!
    wait "$STAGE_PID"
    rc=$?
    STAGE_PID=""
    CURRENT=""
    tail -n 3 "$K/$name.log" | sed 's/^/    /' | while IFS= read -r line; do log "$line"; done
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        publish "$name-partial" "$name.log"
        finish 7 "INCOMPLETE: the deadline (${DEADLINE} s) stopped stage $name"
    fi
    log "stage $name: exit $rc"
    return "$rc"
}

log "started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), uid $(id -u), mode $MODE, deadline ${DEADLINE} s, python $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

run_stage env
run_stage install
rc=$?
if [ "$rc" -ne 0 ]; then
    publish preflight env.json install.log BLOCKED
    cp "$K/BLOCKED" "$K/verdict.txt" 2> /dev/null
    finish 5 "BLOCKED: apptainer could not be installed (install.log)"
fi
run_stage smoke
rc=$?
publish preflight env.json install.log smoke.log smoke.txt apptainer-buildcfg.txt BLOCKED mode.txt
if [ "$rc" -ne 0 ]; then
    cp "$K/BLOCKED" "$K/verdict.txt" 2> /dev/null
    finish "$rc" "BLOCKED: apptainer cannot start here (verdict.txt says why)"
fi
if [ "$MODE" = preflight ]; then
    echo "APPTAINER RUNS HERE with: $(cat "$K/mode.txt")" > "$K/verdict.txt"
    finish 0 "preflight done: apptainer runs here (mode: $(cat "$K/mode.txt"))"
fi

run_stage driver
if [ $? -eq 3 ] && [ "${KIT_ASSUME_GPU:-0}" != 1 ]; then
    echo "SKIPPED: no GPU here ($(tail -n 1 "$K/driver.log"))" > "$K/verdict.txt"
    finish 0 "no GPU: kit skipped"
fi
run_stage sif
rc=$?
publish sif sif.log sif-build.log squash-args.json driver.txt driver.log apptainer-attempts.txt pip-wheels.log
[ "$rc" -eq 0 ] || finish "$rc" "the SIF could not be built or run (sif.tgz)"
run_stage nv
publish nv nv.log nv
if command -v nvidia-container-cli > /dev/null; then
    run_stage nvccli
    publish nvccli nvccli.log nvccli
fi
run_stage record
publish probes record.log probes
[ -s "$K/nv/matrix.json" ] || finish 4 "pytest wrote no matrix (nv.tgz: nv/pytest.log)"
"$PY" "$ROOT/tests/gpu/kit.py" judge "$K/nv/matrix.json" > "$K/verdict.txt" 2>&1
status=$?
tail -n 3 "$K/verdict.txt" | while IFS= read -r line; do log "$line"; done
finish "$status" ""
