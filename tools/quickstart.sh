#!/bin/sh
# The main job on built-in defaults: install, build, then list devices with their target
# profiles and build every kernel on the default device (PoCL CPU on a fresh machine).
set -e
cd "$(dirname "$0")/.."
sh tools/deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
./build/tools/clnpu devices
./build/tools/clnpu kernels
