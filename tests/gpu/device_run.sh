#!/usr/bin/env bash
# The kit as it was run on this workplace's lent GPU machine (nvidia-h200, a bare CUDA image:
# python3 with torch and transformers, no VTK, no xgboost, no glvnd EGL loader, no registry), from
# the repository root, with the carried files described in tests/gpu/README.md:
#
#   .gl/*.deb       glvnd's libEGL.so.1 & co. (Debian packages), unpacked into / as the device
#                   tool's README says (the NVIDIA EGL vendor library comes from the driver mount)
#   .gl/x11/*.deb   libX11/libXrender and their dependencies, which VTK 9.5 wheels link against;
#                   unpacked aside into /tmp/x11 and put on LD_LIBRARY_PATH (not into /)
#   build/gpu-wheels/  the wheels (split parts of VTK's), see run_kit.sh
#
#   bash tests/gpu/device_run.sh          # writes $OUT/kit.tgz, $OUT/kit.log, $OUT/verdict.txt
#
# KIT_OUT (the kit's own output folder, default /tmp/containercheck-kit) and KIT_GL (the carried
# packages, default .gl) are for testing this script on a machine without a GPU.
#
# Exit status: run_kit.sh's.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${OUT:?OUT must name the folder whose files come back}
K=${KIT_OUT:-/tmp/containercheck-kit}
GL=${KIT_GL:-$ROOT/.gl}
rm -rf "$K" && mkdir -p "$K"
for f in "$GL"/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
if ls "$GL"/x11/*.deb > /dev/null 2>&1; then
    mkdir -p /tmp/x11
    for f in "$GL"/x11/*.deb; do dpkg -x "$f" /tmp/x11; done
    export LD_LIBRARY_PATH=/tmp/x11/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
ldconfig
{
    ls -la /usr/share/glvnd/egl_vendor.d /etc/glvnd/egl_vendor.d /usr/local/nvidia/share/glvnd/egl_vendor.d
    cat /usr/local/nvidia/share/glvnd/egl_vendor.d/*.json
    ldconfig -p | grep -E 'EGL|libGL|OSMesa|X11'
    python3 -m pip list 2> /dev/null | grep -iE '^(torch|transformers|pytest|numpy|pillow|scikit-image) '
} > "$K/gl-env.txt" 2>&1
# glvnd finds vendor files in /etc/glvnd/egl_vendor.d and /usr/share/glvnd/egl_vendor.d; only when
# neither holds NVIDIA's is the driver mount's named explicitly (each directory checked on its own).
found=""
for d in /etc/glvnd/egl_vendor.d /usr/share/glvnd/egl_vendor.d; do
    for j in "$d"/*nvidia*.json; do [ -e "$j" ] && found=$j; done
done
if [ -z "$found" ] && [ -e /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    echo "set __EGL_VENDOR_LIBRARY_FILENAMES=$__EGL_VENDOR_LIBRARY_FILENAMES" >> "$K/gl-env.txt"
else
    echo "NVIDIA EGL vendor file in a default directory: ${found:-none}" >> "$K/gl-env.txt"
fi
export PYTHONUNBUFFERED=1
# KIT_FAULTS=1 (default): after the kit, two faults a GPU node really has, on the same machine,
# each as a matrix and raw probe facts under $K/faults/<name>/ (packed with the rest):
#   gpu-hidden          CUDA_VISIBLE_DEVICES="" (a job without a GPU on a GPU node): the silent CPU
#                       fallback of torch, xgboost and transformers the product exists to catch;
#   egl-vendor-missing  __EGL_VENDOR_LIBRARY_FILENAMES names no file (an image without NVIDIA's
#                       EGL vendor file): what EGL rendering does then.
KIT_PACK="" bash "$ROOT/tests/gpu/run_kit.sh" "$K"
status=$?
if [ "${KIT_FAULTS:-1}" = 1 ] && [ ! -e "$K/SKIPPED" ]; then
    export PYTHONPATH="$ROOT:${KIT_SITE:-/tmp/containercheck-kit-site}${PYTHONPATH:+:$PYTHONPATH}"
    for fault in gpu-hidden egl-vendor-missing; do
        F="$K/faults/$fault"
        mkdir -p "$F"
        case $fault in
            gpu-hidden) set -- env CUDA_VISIBLE_DEVICES= ;;
            egl-vendor-missing) set -- env __EGL_VENDOR_LIBRARY_FILENAMES=/nonexistent/10_nvidia.json ;;
        esac
        W=$(mktemp -d)
        printf '[pytest]\n' > "$W/pytest.ini"
        ( cd "$W" && timeout 300 "$@" python3 -m pytest -c "$W/pytest.ini" -p no:cacheprovider \
            -p no:containercheck -p pytest_containercheck.plugin --image host --host-python "$(command -v python3)" \
            --require-gpu --require-hw-render -rA --matrix-json "$F/matrix.json" --matrix-md "$F/matrix.md" ) \
            > "$F/pytest.log" 2>&1
        echo "kit: fault $fault: pytest exited $?" | tee -a "$K/kit.log"
        rm -rf "$W"
        "$@" python3 "$ROOT/tests/gpu/kit.py" record "$F/probes" 150 >> "$F/record.log" 2>&1
    done
fi
tar czf "$DEST/kit.tgz" -C "$K" . && echo "kit: packed $K into $DEST/kit.tgz"
for f in kit.log verdict.txt SKIPPED; do
    [ -e "$K/$f" ] && cp "$K/$f" "$DEST/"
done
exit "$status"
