#!/bin/sh
# Fuzz the file parsers with libFuzzer (clang), under ASan + UBSan, for a bounded time per target.
# Usage: tools/fuzz.sh [SECONDS] [RUNS]   SECONDS per target (default 60); RUNS, when given, stops
# each target after that many executions instead (the long run in docs/limits.md: 1000000).
# Targets: fuzz_parsers (safetensors header, shard index, config.json, target profiles), fuzz_plan
# (plan files), fuzz_inputs (cluster files, tuning databases, token-id lists) and fuzz_text
# (tokenizer.json, chat templates; a third of the time). Seeds come from the shipped files; a crash
# fails the script and is written to build-fuzz/.
set -e
cd "$(dirname "$0")/.."
SECONDS_BUDGET="${1:-60}"
RUNS="${2:--1}"
# Under CI a fixed seed (FUZZ_SEED, default 1), so that a red run can be replayed exactly; by hand a
# fresh seed each time, to explore further.
SEED="${FUZZ_SEED:-0}"
[ -n "$CI" ] && [ -z "$FUZZ_SEED" ] && SEED=1
if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang not found (apt-get install clang); skipping" >&2
    exit 0
fi
# One target over its corpus (max input length $3, default 32768; seconds $4, default SECONDS); a
# crash fails the script (a pipe into tail would hide the status).
run_fuzz() {
    if ! (cd build-fuzz && "./$1" -max_total_time="${4:-$SECONDS_BUDGET}" -runs="$RUNS" -seed="$SEED" -max_len="${3:-32768}" \
            -print_final_stats=1 "$2" >"$1.log" 2>&1); then
        tail -40 "build-fuzz/$1.log"
        echo "fuzz: $1 failed (crash input and log in build-fuzz/)" >&2
        exit 1
    fi
    tail -6 "build-fuzz/$1.log"
}
# float-cast-overflow is a clang-only UBSan check: out-of-range double -> integer casts (D8)
SAN="-fsanitize=fuzzer,address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow"
mkdir -p build-fuzz/corpus
clang -g -O1 $SAN -D_GNU_SOURCE \
    -DCL_TARGET_OPENCL_VERSION=300 -Iinclude -Ibackend \
    tests/fuzz/fuzz_parsers.c runtime/safetensors.c runtime/checkpoint.c runtime/model_config.c \
    runtime/model_config_quant.c runtime/model_config_family.c \
    runtime/dtype.c common/status.c common/cl_error.c backend/profile_parse.c common/file_read.c common/yaml_in.c \
    -lcjson -lyaml -lm -o build-fuzz/fuzz_parsers
# Seeds: selector byte + a real header, index, config and profile.
python3 - <<'PY'
import struct
d = "models/tiny-axk1/"
raw = open(d + "model-00001-of-00002.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
open("build-fuzz/corpus/header", "wb").write(b"\x00" + raw[8:8 + n])
open("build-fuzz/corpus/index", "wb").write(b"\x01" + open(d + "model.safetensors.index.json", "rb").read())
open("build-fuzz/corpus/config", "wb").write(b"\x02" + open(d + "config.json", "rb").read())
for m in ("tiny-axk2", "tiny-dsv32", "tiny-dsv3-fp8"):  # the sparse-attention and FP8 configs
    open("build-fuzz/corpus/config-" + m, "wb").write(b"\x02" + open("models/" + m + "/config.json", "rb").read())
open("build-fuzz/corpus/profile", "wb").write(b"\x03" + open("targets/rebellions-atom.yaml", "rb").read())
PY
run_fuzz fuzz_parsers corpus

# Plan files (schema/plan_schema.c): a binary of its own, seeded with two plans of the tiny model;
# the same time budget.
clang -g -O1 $SAN -D_GNU_SOURCE \
    -DCL_TARGET_OPENCL_VERSION=300 -Iinclude -Ibackend \
    tests/fuzz/fuzz_plan.c schema/plan_schema.c runtime/dtype.c common/status.c common/cl_error.c \
    common/file_read.c common/yaml_in.c common/yaml_out.c -lyaml -lm -o build-fuzz/fuzz_plan
mkdir -p build-fuzz/corpus-plan
cp tests/data/plan-tiny-ep2.yaml build-fuzz/corpus-plan/ep2
cp tests/data/plan-tiny-pp3.yaml build-fuzz/corpus-plan/pp3
run_fuzz fuzz_plan corpus-plan 8192

# --- fuzz_inputs: cluster files, tuning databases, token-id lists (issue 17) ---
# The builtin profiles, tunables.yaml, shipped tuning databases and kernel sources are embedded as
# the library build embeds them (tools/embed.py), so the parsers run as they do in libclnpu.
python3 tools/embed.py clnpu_embedded_targets build-fuzz/targets_embed.c targets/*.yaml
python3 tools/embed.py clnpu_embedded_tunables build-fuzz/tunables_embed.c kernels-cl/tunables.yaml
python3 tools/embed.py clnpu_embedded_tuning build-fuzz/tuning_embed.c tuning/*.yaml
python3 tools/embed.py clnpu_embedded_kernels build-fuzz/kernels_embed.c kernels-cl/*.cl
clang -g -O1 $SAN -D_GNU_SOURCE -DCL_TARGET_OPENCL_VERSION=300 -Iinclude -Ibackend \
    tests/fuzz/fuzz_inputs.c tools/cli_ids.c scheduler/cluster.c backend/profile_set.c backend/profile_parse.c backend/isa.c \
    backend/tuning.c common/yaml_in.c common/yaml_out.c common/file_read.c common/status.c common/cl_error.c \
    build-fuzz/targets_embed.c build-fuzz/tunables_embed.c build-fuzz/tuning_embed.c build-fuzz/kernels_embed.c \
    -lyaml -lm -o build-fuzz/fuzz_inputs
mkdir -p build-fuzz/corpus-inputs
python3 - <<'PY'
import glob
d = "build-fuzz/corpus-inputs/"
for i, f in enumerate(sorted(glob.glob("clusters/*.yaml"))):
    open(d + "cluster%d" % i, "wb").write(b"\x00" + open(f, "rb").read())
open(d + "tuning", "wb").write(b"\x01" + open("tuning/pocl-cpu.yaml", "rb").read())
open(d + "ids", "wb").write(b"\x02" + b"1,2,3\n4 5\t6")
PY
run_fuzz fuzz_inputs corpus-inputs
# --- end fuzz_inputs ---

# The text parsers (tokenizer.json, chat templates, text through a tokenizer): a third of the budget.
TEXT_BUDGET=$(( SECONDS_BUDGET / 3 > 0 ? SECONDS_BUDGET / 3 : 1 ))
clang -g -O1 $SAN -D_GNU_SOURCE \
    -DCL_TARGET_OPENCL_VERSION=300 -Iinclude -Ibackend \
    tests/fuzz/fuzz_text.c text/tokenizer.c text/tokenizer_bpe.c text/tokenizer_pretok.c text/tokenizer_decode.c \
    text/chat_template.c common/status.c common/cl_error.c common/file_read.c \
    -lcjson -lpcre2-8 -lutf8proc -lm -lpthread -o build-fuzz/fuzz_text
mkdir -p build-fuzz/corpus-text
python3 - <<'PY'
t = open("tests/data/tokenizer-nfc/tokenizer.json", "rb").read()
open("build-fuzz/corpus-text/tokenizer", "wb").write(b"\x00" + t)
for name in ("chatml", "deepseek-v3", "features"):
    open("build-fuzz/corpus-text/" + name, "wb").write(b"\x01" + open("tests/data/chat/%s.jinja" % name, "rb").read())
open("build-fuzz/corpus-text/text", "wb").write(b"\x02" + "Hello <s> 세계 123  \n".encode())
PY
run_fuzz fuzz_text corpus-text 262144 "$TEXT_BUDGET"
