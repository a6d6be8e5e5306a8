#!/usr/bin/env python3
"""clnpu's tokenizer beside Hugging Face tokenizers, single thread, same text, same run.

    pip install tokenizers
    python3 bench/tokenizer_compare.py [--build build] [--repeats 5]

Encoding the whole text as one string, and line by line (HF: encode_batch on one thread; clnpu:
one encode call per line). Tokenizers: the tokenizer-bpe fixture (3,000 tokens) and a 163,840-token tokenizer made from it
(A.X K1's vocabulary size): random merges of existing tokens appended until the vocabulary has
163,840 entries, written to /tmp. Text: every fixture case's text, repeated to ~2 MB. Prints a
table and one JSON line per tokenizer; the ids must agree (checksum).
"""
import argparse
import json
import os
import random
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/data/tokenizer-bpe")


def make_large(path, size=163840, seed=1):
    d = json.load(open(os.path.join(FIXTURE, "tokenizer.json"), encoding="utf-8"))
    vocab, merges = d["model"]["vocab"], d["model"]["merges"]
    toks = [t for t in vocab if len(t) <= 6]
    rng = random.Random(seed)
    nxt = max(max(vocab.values()), max(a["id"] for a in d["added_tokens"])) + 1
    while len(vocab) < size:
        a, b = rng.choice(toks), rng.choice(toks)
        if a + b in vocab:
            continue
        vocab[a + b] = nxt
        nxt += 1
        merges.append([a, b])
        if len(a + b) <= 6:
            toks.append(a + b)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False)
    return path


def checksum(ids):
    s = 1469598103934665603
    for i in ids:
        s = ((s ^ i) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{s:016x}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    texts = [json.loads(l)["text"] for l in open(os.path.join(FIXTURE, "cases.jsonl"), encoding="utf-8")]
    text = "\n".join(texts)
    text = text * max(1, (2 << 20) // len(text.encode()))
    tpath = "/tmp/clnpu-tokenizer-bench.txt"
    with open(tpath, "w", encoding="utf-8") as f:
        f.write(text)
    large = make_large("/tmp/clnpu-tokenizer-163840.json")
    print(f"text: {len(text.encode()) / 1e6:.2f} MB; load average {open('/proc/loadavg').read().split()[0]}")
    print(f"{'tokenizer':<28} {'vocab':>7} {'HF load s':>9} {'clnpu load s':>12} {'HF MB/s':>8} {'clnpu MB/s':>10} {'ratio':>6}")
    lines = text.split("\n")
    runs = (("tokenizer-bpe", os.path.join(FIXTURE, "tokenizer.json"), False), ("synthetic 163,840", large, False),
            ("synthetic 163,840, by line", large, True))
    for name, path, by_line in runs:
        t0 = time.perf_counter()
        tok = Tokenizer.from_file(path)
        hf_load = time.perf_counter() - t0
        best = 1e30
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            if by_line:  # encode_batch: no Python loop per line; one thread (RAYON_NUM_THREADS=1)
                ids = [i for e in tok.encode_batch(lines, add_special_tokens=False) for i in e.ids]
            else:
                ids = tok.encode(text, add_special_tokens=False).ids
            best = min(best, time.perf_counter() - t0)
        out = subprocess.run([os.path.join(a.build, "bench/tokenizer_bench"), path, tpath, str(a.repeats)] + (["lines"] if by_line else []),
                             capture_output=True, text=True, check=True)
        c = json.loads(out.stdout)
        assert c["checksum"] == checksum(ids) and c["ids"] == len(ids), f"{name}: ids differ from HF"
        mb = len(text.encode()) / 1e6
        ratio = (mb / c["encode_s"]) / (mb / best)
        print(f"{name:<28} {tok.get_vocab_size():>7} {hf_load:>9.3f} {c['load_s']:>12.3f} {mb / best:>8.2f} "
              f"{mb / c['encode_s']:>10.2f} {ratio:>5.2f}x")
        print(json.dumps({"tokenizer": name, "vocab": tok.get_vocab_size(), "hf_load_s": round(hf_load, 4),
                          "clnpu_load_s": c["load_s"], "hf_encode_s": round(best, 4), "clnpu_encode_s": c["encode_s"],
                          "ids": len(ids), "speed_ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
