#!/usr/bin/env bash
# Makes burn's `cuda` feature build offline (no CUDA and no GitHub needed on the build machine).
#
# burn 0.22.1's `cuda` pulls cubecl-cuda -> cubecl-llvm (NVPTX) -> tracel-llvm-bundler 23.1.0-4,
# whose build script downloads a prebuilt LLVM from GitHub unless
#   $XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed   (default ~/.local/share)
# exists. It then asks that directory's bin/llvm-config (with --link-static) for the include
# and lib directories, the static LLVM libraries and the system libraries, and links them.
#
# This script fills that directory from Debian's packages instead of GitHub:
#   - llvm-23-dev and libpolly-23-dev (headers and static libraries), pinned below; apt checks each package
#     against the signed archive index, so the hashes are Debian's;
#   - Debian's own llvm-config is run once, through Debian's newer C library unpacked beside it
#     (it needs glibc >= 2.38), and its answers are written into a small llvm-config script;
#   - the static libraries were built against glibc 2.43, whose C23 scanf/strtol entry points
#     (__isoc23_*) older C libraries lack: a tiny static shim maps them onto the classic ones,
#     so the result links and runs on glibc 2.36 (Debian 12) and later.
# Nothing is installed system-wide. Then build with (see docs/backends.md):
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p burn-peft-cli --features cuda
#
# Usage: scripts/setup-cuda-llvm.sh [PREFIX]
#   PREFIX defaults to the bundler's own directory (above). Another PREFIX needs
#   XDG_DATA_HOME=<dir> at build time with PREFIX = <dir>/tracel/tracel-llvm-23.1.0-4.
# Needs: apt-get reaching deb.debian.org (sid), dpkg-deb, gcc, ar, zlib1g-dev, libzstd-dev.
set -euo pipefail

LLVM_VERSION=${LLVM_DEB_VERSION:-1:23.1.4-2}
prefix=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for lib in libz.so libzstd.so; do
    if [ "$(gcc -print-file-name=$lib)" = "$lib" ]; then
        echo "setup-cuda-llvm: $lib is missing: apt-get install zlib1g-dev libzstd-dev" >&2
        exit 1
    fi
done
if [ -e "$prefix/.tracel-llvm-installed" ]; then
    echo "already set up: $prefix"
    exit 0
fi

# shellcheck source=scripts/sid-apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/sid-apt.sh"
sid_apt_init "$work" setup-cuda-llvm
LLVM_VERSION=$(sid_version llvm-23-dev "$LLVM_VERSION")
# llvm-config itself needs the newer C/C++ runtime and libz3 to start; they are unpacked into
# the work directory only.
if ! sid_download "llvm-23-dev=$LLVM_VERSION" "llvm-23=$LLVM_VERSION" \
    "libpolly-23-dev=$LLVM_VERSION" libc6 libstdc++6 libgcc-s1 libz3-4 zlib1g libzstd1; then
    echo "setup-cuda-llvm: could not download llvm-23-dev=$LLVM_VERSION from Debian sid" >&2
    echo "(set LLVM_DEB_VERSION to the version 'apt-cache policy llvm-23-dev' shows there)" >&2
    exit 1
fi
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

llvm="$work/root/usr/lib/llvm-23"
rt="$work/root/usr/lib/x86_64-linux-gnu"
# llvm-config finds its prefix from its own path: the loader that starts it must sit in bin/.
cp "$rt/ld-linux-x86-64.so.2" "$llvm/bin/ld-newer.so"
ask() { "$llvm/bin/ld-newer.so" --library-path "$rt" "$llvm/bin/llvm-config" --link-static "$1"; }

mkdir -p "$prefix/bin" "$prefix/lib"
cp -rL "$llvm/include" "$prefix/include"  # Debian links into /usr/include/llvm-23
# Debian's LLVM lists Polly among its components, so --libs names it too.
cp "$llvm"/lib/libLLVM*.a "$llvm"/lib/libPolly*.a "$prefix/lib/"

cat >"$work/isoc23.c" <<'EOF'
/* glibc 2.38 renamed the C23 versions of these; older C libraries have only the classic ones. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
int __isoc23_sscanf(const char *s, const char *f, ...) {
    va_list a; va_start(a, f); int r = vsscanf(s, f, a); va_end(a); return r;
}
int __isoc23_scanf(const char *f, ...) {
    va_list a; va_start(a, f); int r = vscanf(f, a); va_end(a); return r;
}
EOF
gcc -O2 -fPIC -c "$work/isoc23.c" -o "$work/isoc23.o"
ar rcs "$prefix/lib/libisoc23shim.a" "$work/isoc23.o"

libs="$(ask --libs) -lisoc23shim"
# Only what the NVPTX path pulls in is linked (--as-needed); z3 and libxml2 are not among it.
system_libs=$(ask --system-libs | tr ' ' '\n' | grep -v -e z3 -e xml2 | tr '\n' ' ')
version=$(ask --version)
cxxflags=$(ask --cxxflags | sed "s|-I$llvm/include|-I$prefix/include|")
cflags=$(ask --cflags | sed "s|-I$llvm/include|-I$prefix/include|")

cat >"$prefix/bin/llvm-config" <<EOF
#!/bin/sh
# Written by burn-peft's scripts/setup-cuda-llvm.sh: Debian's llvm-config $version answers,
# recorded for the prefix $prefix.
for a in "\$@"; do
    case "\$a" in
    --link-static) ;;
    --version) echo "$version" ;;
    --libdir) echo "$prefix/lib" ;;
    --includedir) echo "$prefix/include" ;;
    --libs) echo "$libs" ;;
    --system-libs) echo "$system_libs" ;;
    --cxxflags) echo "$cxxflags" ;;
    --cflags) echo "$cflags" ;;
    *) echo "llvm-config (recorded): unsupported option \$a" >&2; exit 1 ;;
    esac
done
EOF
chmod +x "$prefix/bin/llvm-config"
touch "$prefix/.tracel-llvm-installed"
echo "LLVM $version set up in $prefix ($(du -sh "$prefix" | cut -f1))"
echo "build: CUDARC_CUDA_VERSION=13000 cargo build --release -p burn-peft-cli --features cuda"
