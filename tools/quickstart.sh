#!/bin/sh
# The main job on built-in defaults: install what is missing, build, then
#  1. list every OpenCL device with the target profile it binds to, and build every kernel and every
#     program variant the tiny model's run uses (independent programs on parallel threads);
#  2. run the shipped tiny A.X K1 checkpoint on the default device (PoCL CPU on a fresh machine):
#     prefill the transformers reference prompt, generate 8 tokens greedily, print throughput;
#     then text in, text out: a question through its chat template and tokenizer, the reply streamed
#     (its weights are random, so the reply is noise);
#  3. plan the full-size A.X K1 (519B) on 8 REBEL-Quad cards and print the plan.
set -e
cd "$(dirname "$0")/.."
sh tools/deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
./build/tools/clnpu devices
./build/tools/clnpu kernels --model models/tiny-axk1
echo "== tiny A.X K1 (models/tiny-axk1): prompt of 24 ids, 8 new tokens =="
./build/tools/clnpu run --model models/tiny-axk1 \
    --ids 296,365,263,313,40,223,311,274,157,172,163,193,185,305,68,221,193,230,243,246,169,257,365,277 \
    -n 8 --stats
echo "== text in, text out: models/tiny-axk1's tokenizer and chat template (random weights: the reply is noise) =="
./build/tools/clnpu run --model models/tiny-axk1 --prompt "안녕하세요! What is A.X K1?" --chat --no-think \
    --greedy --max-tokens 24 --stats
echo "== full-size A.X K1 (models/axk1/config.json) planned on clusters/rebel-quad-8.yaml =="
./build/tools/clnpu plan --model models/axk1/config.json --cluster clusters/rebel-quad-8.yaml
