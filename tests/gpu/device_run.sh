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
PYTHONUNBUFFERED=1 KIT_PACK="$DEST/kit.tgz" bash "$ROOT/tests/gpu/run_kit.sh" "$K"
