#!/bin/sh
# The shared library exports exactly the functions include/clnpu/ declares: nothing internal leaks,
# nothing public is left hidden (a declaration without CLNPU_API). Usage: tools/check_exports.sh LIBCLNPU.so
set -e
cd "$(dirname "$0")/.."
lib="${1:-build/libclnpu.so}"
tmp="${TMPDIR:-/tmp}/clnpu-exports.$$"
trap 'rm -f "$tmp".*' EXIT
# Declared: every clnpu_ name followed by "(" in the preprocessed public headers (comments gone; a
# function pointer reads "(*clnpu_x)" or "clnpu_status (*x)" and does not match).
${CC:-cc} -E -P -Iinclude include/clnpu/clnpu.h | grep -oE '\bclnpu_[A-Za-z0-9_]+[[:space:]]*\(([^*]|$)' \
    | sed 's/[[:space:]]*(.*//' | sort -u >"$tmp.declared"
nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^_' | sort -u >"$tmp.exported"
if ! cmp -s "$tmp.declared" "$tmp.exported"; then
    echo "check_exports: $lib does not export exactly the public API" >&2
    comm -13 "$tmp.declared" "$tmp.exported" | sed 's/^/  exported but not declared in include\/clnpu\/: /' >&2
    comm -23 "$tmp.declared" "$tmp.exported" | sed 's/^/  declared but not exported (CLNPU_API missing?): /' >&2
    exit 1
fi
echo "check_exports: $(wc -l <"$tmp.exported") symbols, all declared in include/clnpu/"
