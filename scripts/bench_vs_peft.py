#!/usr/bin/env python3
"""Side by side: `burn-peft bench-step` and PyTorch + PEFT (`scripts/peft_runner.py`, or
--anchor PATH) on the same machine and shapes, one after the other, several rounds. Prints a
markdown table of medians and ratios (ours / PyTorch for tokens/s, ours / PyTorch for peak RSS).

Usage (after `cargo build --release -p burn-peft-cli`):

    python3 scripts/bench_vs_peft.py --python /path/to/venv/bin/python \\
        [--methods lora,full,ia3,prefix] [--rounds 2] [--batch 4] [--seq 128]

Peak memory is each process's maximum RSS (the runner reports GPU memory only).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import machine

WRAP = ("import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(r.stdout)\n"
        "sys.stderr.write(r.stderr)\n"
        "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(r.returncode)")


def measured(cmd, env=None):
    r = subprocess.run([sys.executable, "-c", WRAP] + cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    peak = int(r.stderr.strip().splitlines()[-1].split()[-1]) * 1024
    line = [l for l in r.stdout.splitlines() if l.startswith("{")][0]
    return json.loads(line), peak


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.environ.get("BURN_PEFT_PYTHON", "python3"))
    ap.add_argument("--anchor", default=os.path.join(here, "peft_runner.py"),
                    help="the PyTorch + PEFT runner (default: scripts/peft_runner.py)")
    ap.add_argument("--bin", default=os.path.join(here, "../target/release/burn-peft"))
    ap.add_argument("--ours", action="append", default=[],
                    help="DEVICE:BINARY[:EXTRA ARGS] to time, repeatable (default flex:--bin); e.g. "
                         "tch:target/tch/release/burn-peft with scripts/setup-tch.sh's environment, "
                         "or flex:target/release/burn-peft:--batch-threads 1")
    ap.add_argument("--methods", default="lora,full,ia3,prefix")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    # (label, device, binary, extra bench-step arguments)
    ours_list = []
    for spec in a.ours or [f"flex:{a.bin}"]:
        device, binary, *extra = spec.split(":", 2)
        extra = extra[0].split() if extra else []
        ours_list.append((" ".join([device] + extra), device, binary, extra))
    # Two binaries on the same device with the same arguments (an A/B of builds) are told
    # apart by their paths, and identical specs by their position.
    for suffix in (lambda i, binary: binary, lambda i, binary: f"#{i + 1}"):
        labels = [label for label, *_ in ours_list]
        ours_list = [(f"{label} {suffix(i, binary)}" if labels.count(label) > 1 else label,
                      device, binary, extra)
                     for i, (label, device, binary, extra) in enumerate(ours_list)]
    # LD_LIBRARY_PATH from scripts/setup-tch.sh serves the tch binary; the runner's own torch
    # must not pick up those libraries.
    python_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    rows = {}
    for rnd in range(a.rounds):
        for m in a.methods.split(","):
            r = rows.setdefault(m, {"theirs": [], "theirs_peak": []})
            for label, device, binary, extra in ours_list:
                ours, ours_peak = measured([binary, "bench-step", "--shape", "smollm2-135m", "--method", m,
                                            "--r", "16", "--batch-size", str(a.batch), "--seq-len", str(a.seq),
                                            "--steps", str(a.steps), "--warmup", str(a.warmup),
                                            "--device", device, "--json"] + extra)
                r.setdefault(label, []).append(ours["tokens_per_s"])
                r.setdefault(label + "_peak", []).append(ours_peak)
                print(f"round {rnd} {m}: burn-peft {label} {ours['tokens_per_s']:.0f} tok/s "
                      f"({ours_peak / 2**30:.2f} GiB)", file=sys.stderr, flush=True)
            theirs, theirs_peak = measured([a.python, a.anchor, "--device", "cpu", "--shapes", "smol",
                                            "--methods", m, "--dtype", "f32", "--batch", str(a.batch),
                                            "--seq", str(a.seq), "--steps", str(a.steps),
                                            "--warmup", str(a.warmup)], env=python_env)
            r["theirs"].append(theirs["tokens_per_s"])
            r["theirs_peak"].append(theirs_peak)
            print(f"round {rnd} {m}: PEFT {theirs['tokens_per_s']:.0f} tok/s ({theirs_peak / 2**30:.2f} GiB)",
                  file=sys.stderr, flush=True)
    print(f"Machine: {machine.describe()}\n")
    print("| method | backend | burn-peft tokens/s | PyTorch+PEFT tokens/s | speed ratio | burn-peft peak RSS | PyTorch peak RSS | memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for m, r in rows.items():
        t, tp = statistics.median(r["theirs"]), max(r["theirs_peak"])
        for label, *_ in ours_list:
            o, op = statistics.median(r[label]), max(r[label + "_peak"])
            print(f"| {m} | {label} | {o:.0f} | {t:.0f} | {o / t:.2f} | {op / 2**30:.2f} GiB | "
                  f"{tp / 2**30:.2f} GiB | {op / tp:.2f} |")

if __name__ == "__main__":
    main()
