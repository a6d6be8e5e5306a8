#!/bin/sh
# Fuzz the safetensors header, shard index, config.json and target-profile parsers with libFuzzer (clang),
# under ASan + UBSan, for a bounded time. Usage: tools/fuzz.sh [SECONDS]   (default 60)
# Seeds come from the shipped tiny checkpoint; crashes are written to build-fuzz/.
set -e
cd "$(dirname "$0")/.."
SECONDS_BUDGET="${1:-60}"
if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang not found (apt-get install clang); skipping" >&2
    exit 0
fi
mkdir -p build-fuzz/corpus
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
    -DCL_TARGET_OPENCL_VERSION=300 -Iinclude -Ibackend \
    tests/fuzz/fuzz_parsers.c runtime/safetensors.c runtime/checkpoint.c runtime/model_config.c \
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
open("build-fuzz/corpus/profile", "wb").write(b"\x03" + open("targets/rebellions-atom.yaml", "rb").read())
PY
cd build-fuzz
./fuzz_parsers -max_total_time="$SECONDS_BUDGET" -max_len=32768 -print_final_stats=1 corpus 2>&1 | tail -15

# Plan files (schema/plan_schema.c): a binary of its own, seeded with two plans of the tiny model;
# the same time budget.
cd ..
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
    -DCL_TARGET_OPENCL_VERSION=300 -Iinclude -Ibackend \
    tests/fuzz/fuzz_plan.c schema/plan_schema.c runtime/dtype.c common/status.c common/cl_error.c \
    common/file_read.c common/yaml_in.c common/yaml_out.c -lyaml -lm -o build-fuzz/fuzz_plan
mkdir -p build-fuzz/corpus-plan
cp tests/data/plan-tiny-ep2.yaml build-fuzz/corpus-plan/ep2
cp tests/data/plan-tiny-pp3.yaml build-fuzz/corpus-plan/pp3
cd build-fuzz
./fuzz_plan -max_total_time="$SECONDS_BUDGET" -max_len=8192 -print_final_stats=1 corpus-plan 2>&1 | tail -15

cd ..
# The text parsers (tokenizer.json, chat templates, text through a tokenizer): a third of the budget.
TEXT_BUDGET=$(( SECONDS_BUDGET / 3 > 0 ? SECONDS_BUDGET / 3 : 1 ))
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
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
cd build-fuzz
./fuzz_text -max_total_time="$TEXT_BUDGET" -max_len=262144 -print_final_stats=1 corpus-text 2>&1 | tail -8
