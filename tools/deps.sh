#!/bin/sh
# Install what clnpu needs on Debian 12 (as root). Skips apt-get when everything is present.
# Usage: tools/deps.sh [--bench | --oclgrind]   (--bench adds CLBlast and OpenBLAS for bench/;
#        --oclgrind adds Oclgrind for tools/oclgrind_wg.sh)
set -e
PKGS="build-essential meson ninja-build pkg-config python3 ocl-icd-opencl-dev opencl-c-headers \
pocl-opencl-icd clinfo libyaml-dev check libcjson-dev libopenmpi-dev openmpi-bin \
libpcre2-dev libutf8proc-dev libedit-dev libmicrohttpd-dev"
if [ "${1:-}" = "--bench" ]; then PKGS="$PKGS libclblast-dev libopenblas-dev"; fi
if [ "${1:-}" = "--oclgrind" ]; then PKGS="$PKGS oclgrind"; fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "clnpu: installing:$missing"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
