#!/usr/bin/env python3
"""Side by side: the matrix products of a training step at the SmolLM2-135M shape (512 rows),
through burn on flex, through the `gemm` crate that flex calls, and through PyTorch, on the same
threads, one process after the other, several rounds. Prints a markdown table of median
GFLOP/s and the ratios.

Usage (it builds the Rust side with `cargo bench --no-run` unless --binary is given):

    python3 scripts/bench_matmul.py --python /path/to/venv/bin/python [--rounds 3] [--reps 20]

The Rust side is `benches/flex_matmul.rs` (see its header for what each variant does).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import machine

# Runs in the venv: one JSON line per (shape, op), as the example prints them.
TORCH = r"""
import json, sys, time, torch
reps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
rows = 512
for k, n in [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 8192)]:
    x, w, g = torch.randn(rows, k), torch.randn(k, n), torch.randn(rows, n)
    for op, f in [("x·W", lambda: x @ w), ("g·Wᵀ", lambda: g @ w.t()), ("xᵀ·g", lambda: x.t() @ g)]:
        f()
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        s = (time.perf_counter() - t0) / reps
        print(json.dumps({"shape": f"{rows}x{k}x{n}", "op": op, "variant": "torch",
                          "ms": s * 1e3, "gflops": 2 * rows * k * n / s / 1e9}))
"""


def run(cmd, env):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def build_bench():
    """Builds benches/flex_matmul.rs (release, as `cargo bench` does) and returns its path."""
    out = subprocess.run(
        ["cargo", "bench", "--no-run", "--bench", "flex_matmul", "--message-format=json"],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "flex_matmul":
            return msg["executable"]
    sys.exit("cargo built no flex_matmul bench")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="a Python with torch")
    ap.add_argument("--binary", help="the built bench (default: built here with cargo)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="also append every record to this file")
    args = ap.parse_args()
    if args.binary is None:
        args.binary = build_bench()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: cargo bench --no-run --bench flex_matmul")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    records = []
    for round_ in range(args.rounds):
        for cmd in ([args.binary, str(args.reps)],
                    [args.python, "-c", TORCH, str(args.reps), str(args.threads)]):
            for rec in run(cmd, env):
                rec["round"] = round_
                records.append(rec)
    if args.json:
        with open(args.json, "a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")

    def median(shape, op, variant):
        vals = [r["gflops"] for r in records
                if (r["shape"], r["op"], r["variant"]) == (shape, op, variant)]
        return statistics.median(vals) if vals else None

    copied = "gemm, zeroed and copied output"
    laid = "burn, laid out"
    print(f"{args.threads} threads, {args.rounds} rounds, median GFLOP/s\n")
    print(f"Machine: {machine.describe()}, {args.threads} threads\n")
    print("| shape m×k×n | product | burn (flex) | burn, weight laid out | gemm "
          "| gemm, zeroed + copied output | PyTorch | burn / gemm | laid out / gemm "
          "| burn / PyTorch | gemm / PyTorch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    seen = []
    for r in records:
        key = (r["shape"], r["op"])
        if key in seen:
            continue
        seen.append(key)
        b, l, g, c, t = (median(*key, v) for v in ("burn", laid, "gemm", copied, "torch"))
        cell = lambda v: "" if v is None else f"{v:.0f}"
        ratio = lambda a, z: "" if a is None or z is None else f"{a / z:.2f}"
        print(f"| {key[0]} | {key[1]} | {cell(b)} | {cell(l)} | {cell(g)} | {cell(c)} "
              f"| {cell(t)} | {ratio(b, g)} | {ratio(l, g)} | {ratio(b, t)} | {ratio(g, t)} |")


if __name__ == "__main__":
    main()
