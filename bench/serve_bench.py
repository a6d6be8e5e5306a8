#!/usr/bin/env python3
"""clnpu serve throughput against clnpu run --sequences, in one run on one machine.

Starts `clnpu serve` on a loopback port, sends N concurrent streaming requests (greedy, the same
prompt length and max_tokens for each) through bench/serve_load (C, so the clients stay light on
a small machine), and measures from the clients: time to first token
(p50 / p99), inter-token latency (p50 / p99), and decode tokens/s while all N streams are in
their decode phase (the window from the last stream's first token to the first stream's last).
Then runs `clnpu run --sequences N` on the same config and compares its decode tokens/s.

Usage: bench/serve_bench.py [--clnpu build/tools/clnpu] [--config models/axk1-mini/config.json]
                            [--streams 8,32] [--prompt 32] [--tokens 64] [--repeat 3]
Only the Python standard library; every request goes to 127.0.0.1.
"""
import argparse
import http.client
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


def serve_round(load, port, n, plen, tokens, vocab, seed):
    p = subprocess.run([load, str(port), str(n), str(plen), str(tokens), str(vocab), str(seed)],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    if p.returncode or not r["ok"]:
        sys.exit("serve_load: a stream failed:\n" + p.stdout + p.stderr)
    return r["rate"], r["ttft"], r["itl_p50"], r["itl_p99"]


def run_rate(clnpu, config, n, plen, tokens):
    ids = ",".join(str(random.randrange(3, 1000)) for _ in range(plen))
    p = subprocess.run([clnpu, "run", "--random-weights", "--config", config, "--ids", ids, "-n", str(tokens),
                        "--sequences", str(n), "--stats"], capture_output=True, text=True)
    m = re.search(r"decode: \d+ tokens in [\d.]+ ms, ([\d.]+) tokens/s", p.stderr)
    if p.returncode or not m:
        sys.exit("clnpu run failed:\n" + p.stderr)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clnpu", default="build/tools/clnpu")
    ap.add_argument("--load", default="build/bench/serve_load")
    ap.add_argument("--config", default="models/axk1-mini/config.json")
    ap.add_argument("--streams", default="8,32")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    vocab = json.load(open(a.config))["vocab_size"]
    rows = []
    for n in [int(x) for x in a.streams.split(",")]:
        port = free_port()
        srv = subprocess.Popen([a.clnpu, "serve", "--random-weights", "--config", a.config, "--port", str(port),
                                "--sequences", str(n), "--context", str(a.prompt + a.tokens + 8)],
                               stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(600):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    c.request("GET", "/health")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            else:
                sys.exit("clnpu serve did not come up")
            serve_round(a.load, port, n, a.prompt, 4, vocab, 0)  # warm: kernels built, caches touched
            rates, runs, ttfts, i50, i99 = [], [], [], [], []
            for k in range(a.repeat):  # interleaved with clnpu run, so both see the same machine
                rate, ttft, p50, p99 = serve_round(a.load, port, n, a.prompt, a.tokens, vocab, k + 1)
                rates.append(rate), ttfts.extend(ttft), i50.append(p50), i99.append(p99)
                runs.append(run_rate(a.clnpu, a.config, n, a.prompt, a.tokens))
        finally:
            srv.terminate()
            srv.wait(timeout=30)
        s, r = statistics.median(rates), statistics.median(runs)
        rows.append((n, s, r, s / r, pct(ttfts, .5), pct(ttfts, .99), statistics.median(i50), statistics.median(i99)))
    print(f"config {a.config}, prompt {a.prompt} tokens, {a.tokens} new tokens per stream, "
          f"medians of {a.repeat} runs")
    print("streams | serve decode tok/s | run --sequences tok/s | ratio | TTFT p50 / p99 ms | ITL p50 / p99 ms")
    for n, s, r, q, t50, t99, i50, i99 in rows:
        print(f"{n:7d} | {s:18.1f} | {r:21.1f} | {q:5.2f} | {t50 * 1e3:7.1f} / {t99 * 1e3:7.1f} | "
              f"{i50 * 1e3:6.1f} / {i99 * 1e3:6.1f}")
        print(json.dumps({"bench": "serve", "streams": n, "serve_tok_s": s, "run_tok_s": r, "ratio": q,
                          "ttft_p50_s": t50, "ttft_p99_s": t99, "itl_p50_s": i50, "itl_p99_s": i99}))


if __name__ == "__main__":
    main()
