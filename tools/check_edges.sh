#!/bin/sh
# A library's edges, checked on the built shared object: it exports exactly the functions
# include/clnpu/ declares (nothing internal leaks, nothing public is left hidden by a declaration
# without CLNPU_API), and it calls nothing that ends or signals the process or owns MPI (exit,
# abort, raise, kill, MPI_Init, MPI_Finalize, MPI_Abort: those are the caller's).
# Usage: tools/check_edges.sh LIBCLNPU.so
set -e
cd "$(dirname "$0")/.."
lib="${1:-build/libclnpu.so}"
tmp="${TMPDIR:-/tmp}/clnpu-edges.$$"
trap 'rm -f "$tmp".*' EXIT
# Declared: every clnpu_ name followed by "(" in the preprocessed public headers (comments gone; a
# function pointer reads "(*clnpu_x)" or "clnpu_status (*x)" and does not match).
${CC:-cc} -E -P -Iinclude include/clnpu/clnpu.h | grep -oE '\bclnpu_[A-Za-z0-9_]+[[:space:]]*\(([^*]|$)' \
    | sed 's/[[:space:]]*(.*//' | sort -u >"$tmp.declared"
nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^_' | sort -u >"$tmp.exported"
if ! cmp -s "$tmp.declared" "$tmp.exported"; then
    echo "check_edges: $lib does not export exactly the public API" >&2
    comm -13 "$tmp.declared" "$tmp.exported" | sed 's/^/  exported but not declared in include\/clnpu\/: /' >&2
    comm -23 "$tmp.declared" "$tmp.exported" | sed 's/^/  declared but not exported (CLNPU_API missing?): /' >&2
    exit 1
fi
forbidden='^(exit|_exit|_Exit|quick_exit|abort|raise|kill|killpg|signal|sigaction|__assert_fail|MPI_Init|MPI_Init_thread|MPI_Finalize|MPI_Abort)$'
if nm -D --undefined-only "$lib" | awk '{print $2}' | sed 's/@.*//' | grep -E "$forbidden" >"$tmp.forbidden"; then
    echo "check_edges: $lib calls what belongs to the caller: $(tr '\n' ' ' <"$tmp.forbidden")" >&2
    exit 1
fi
echo "check_edges: $(wc -l <"$tmp.exported") symbols exported, all declared in include/clnpu/; no exit, abort, signal or MPI set-up"
