#!/usr/bin/env bash
# A software Vulkan (Mesa's lavapipe) that runs burn's WGPU and Vulkan kernels, for machines
# with no GPU (CI). Nothing is installed system-wide.
#
# Debian 12's Mesa 22.3.6 lavapipe segfaults in vkCreateComputePipelines on burn's first matmul,
# through both the SPIR-V (`vulkan`) and the WGSL (`wgpu`) paths (backtrace in
# docs/perf-log/2026-11-27-wgpu-lavapipe.md). Mesa 26.2 from Debian sid runs them. It needs
# sid's newer C library, so the program is started through sid's dynamic loader with sid's
# libraries (a program built against an older glibc runs on a newer one):
#
#   scripts/setup-lavapipe.sh [DIR]        # prints DIR/run
#   DIR/run target/debug/burn-peft eval --device wgpu ...
#
# DIR defaults to $BURN_PEFT_CACHE/lavapipe-$MESA_VERSION (BURN_PEFT_CACHE defaults to
# ~/.cache/burn-peft). apt checks every package against Debian's signed archive index.
# Needs: apt-get reaching deb.debian.org (sid), dpkg-deb.
set -euo pipefail

MESA_VERSION=${MESA_DEB_VERSION:-26.2.6-1}
cache=${BURN_PEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/burn-peft}
dir=${1:-$cache/lavapipe-$MESA_VERSION}

if [ -x "$dir/run" ]; then
    echo "$dir/run"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=scripts/sid-apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/sid-apt.sh"
sid_apt_init "$work" setup-lavapipe
MESA_VERSION=$(sid_version mesa-vulkan-drivers "$MESA_VERSION")
# The driver with everything it needs at run time, the C and C++ runtime and the Vulkan loader
# included: apt's dependency closure.
mapfile -t packages < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends \
    --no-suggests --no-enhances --no-breaks --no-replaces --no-conflicts --no-pre-depends \
    mesa-vulkan-drivers | grep -v -e '^ ' -e '^<' -e '^mesa-vulkan-drivers$' | sort -u)
packages+=("mesa-vulkan-drivers=$MESA_VERSION" libvulkan1)
if ! sid_download "${packages[@]}"; then
    echo "setup-lavapipe: could not download Mesa $MESA_VERSION's packages from Debian sid" >&2
    exit 1
fi

mkdir -p "$work/out/root"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/out/root"; done
# Only the libraries and the loader are kept.
mkdir -p "$work/out/lib"
cp -a "$work/out/root/usr/lib/x86_64-linux-gnu/." "$work/out/lib/"
cp -aL "$work/out/root/lib64/ld-linux-x86-64.so.2" "$work/out/ld.so" 2>/dev/null ||
    cp -aL "$work/out/lib/ld-linux-x86-64.so.2" "$work/out/ld.so"
rm -rf "$work/out/root"

mkdir -p "$(dirname "$dir")"
rm -rf "$dir.tmp"
mv "$work/out" "$dir.tmp"
cat >"$dir.tmp/lvp_icd.json" <<EOF
{"file_format_version": "1.0.1",
 "ICD": {"library_path": "$dir/lib/libvulkan_lvp.so", "api_version": "1.4.0"}}
EOF
cat >"$dir.tmp/run" <<EOF
#!/bin/sh
# Runs a program on Mesa $MESA_VERSION's lavapipe (written by burn-peft's scripts/setup-lavapipe.sh).
export VK_DRIVER_FILES="$dir/lvp_icd.json"
export XDG_RUNTIME_DIR="\${XDG_RUNTIME_DIR:-/tmp}"
exec "$dir/ld.so" --library-path "$dir/lib" "\$@"
EOF
chmod +x "$dir.tmp/run"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir/run"
