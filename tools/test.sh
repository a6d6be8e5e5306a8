#!/bin/sh
# Install, build and run the whole test suite; with --sanitize, also under ASan + UBSan.
# The last lines printed are Check's summary.
set -e
cd "$(dirname "$0")/.."
sh tools/deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
sh tools/check_edges.sh build/libclnpu.so
python3 tools/check_examples.py
export CK_VERBOSITY=normal
# Build programs once per run into a private cache; PoCL's own cache stays as it is.
export CLNPU_CACHE_DIR="${CLNPU_CACHE_DIR:-$PWD/build/kernel-cache}"
./build/tests/clnpu-tests
if [ "$1" = "--sanitize" ]; then
    [ -f build-asan/build.ninja ] || meson setup build-asan --buildtype=debugoptimized \
        -Db_sanitize=address,undefined -Db_lundef=false
    ninja -C build-asan
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
    echo "== again under AddressSanitizer + UndefinedBehaviorSanitizer =="
    ./build-asan/tests/clnpu-tests
fi
