#!/usr/bin/env python3
"""Numeric checks of one burn-peft binary on another device, against the CPU and PEFT.

Runs the CLI (no Rust toolchain needed where it runs) on the fixtures of tests/fixtures:
  1. eval of the tiny Llama (plain and tied) and of every PEFT fixture adapter, unmerged and
     merged where the method merges, against the losses transformers + PEFT wrote in
     expected.json;
  2. training trajectories: a few steps of full fine-tuning, IA3, LoRA, DoRA, prefix tuning
     and LoRA with gradient checkpointing by layer on --device, and the same without
     checkpointing on flex, step losses compared (every method starts from the same
     values on every backend: IA3 at one, the others drawn on the host from --seed), so
     gradients through the base and through each kind of adapter are checked;
  3. a LoRA adapter trained on flex, evaluated on --device and on flex;
  4. with --dtype bf16 and f16, the tiny Llama and five adapters against the losses
     transformers + PEFT give in those types (expected_half.json, scripts/half_reference.py),
     within HALF_TOL, each record also giving ours and PyTorch's distance from the f32 loss;
     a device whose backend lacks the type is reported and skipped.
Prints one JSON line per check and exits 1 if any check is outside its tolerance.

Usage: python3 scripts/backend_check.py --bin target/release/burn-peft --device vulkan
           [--tol 1e-3] [--steps 10] [--dtypes "bf16 f16"] [--out results.jsonl]
           [--quick] [--half-only] [--runner "CMD ..."]
--runner is put in front of every run of the binary (scripts/setup-lavapipe.sh's `run`, which
starts it on a newer Mesa's software Vulkan).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
# What bf16 / f16 rounding leaves between two correct implementations on the fixture (flex
# against PyTorch on the CPU: 5.3e-3 and 9.2e-4 at most).
HALF_TOL = {"bf16": 6e-3, "f16": 1.5e-3}
MERGEABLE = {"lora_qv", "lora_rs_all", "dora_attn", "lora_regex_layer1", "lora_layers1_list",
             "lora_excl", "ia3"}


RUNNER = []


def cli(binary, *args):
    out = subprocess.run([*RUNNER, binary, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])}: {out.stderr.strip()[-400:]}")
    return out.stdout


def eval_loss(binary, device, model, adapter=None, merge=False, dtype="f32"):
    args = ["eval", "--model", os.path.join(FIX, model), "--text", os.path.join(FIX, "text.txt"),
            "--max-tokens", "48", "--json", "--device", device, "--dtype", dtype]
    if adapter:
        args += ["--adapter", os.path.join(FIX, "adapters", adapter)]
    if merge:
        args.append("--merge")
    return json.loads(cli(binary, *args).strip().splitlines()[-1])["loss"]


def train_losses(binary, device, method, steps, out, *extra):
    cli(binary, "finetune", "--model", os.path.join(FIX, "tiny-llama"),
        "--data", os.path.join(FIX, "text.txt"), "--method", method, "--steps", str(steps),
        "--seq-len", "32", "--batch-size", "4", "--lr", "5e-3", "--eval-every", "0",
        "--eval-samples", "4", "--device", device, "--out", out, *extra)
    losses = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "step" in rec and "loss" in rec:
                losses.append(rec["loss"])
    return losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--runner", default="")
    ap.add_argument("--dtypes", default="bf16 f16",
                    help="half precisions to check against expected_half.json ('' for none)")
    ap.add_argument("--quick", action="store_true",
                    help="one adapter per method (LoRA, rsLoRA, DoRA, IA3, prefix, prompt)")
    ap.add_argument("--half-only", action="store_true",
                    help="only the --dtypes checks (skip the f32 evals and the trajectories)")
    a = ap.parse_args()
    RUNNER.extend(shlex.split(a.runner))
    with open(os.path.join(FIX, "expected.json")) as f:
        expected = json.load(f)
    records = []

    def record(rec):
        # Written as it comes, so that a run cut short by a time limit keeps what it checked.
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def check(name, got, want, tol=None, **context):
        tol = a.tol if tol is None else tol
        record(dict(check=name, device=a.device, got=got, want=want, diff=abs(got - want),
                    tol=tol, ok=abs(got - want) <= tol, **context))

    def guarded(name, fn):
        try:
            fn()
        except Exception as e:  # one failing check must not hide the others
            record(dict(check=name, device=a.device, error=str(e)[:400], ok=False))

    if not a.half_only:
        f32_checks(a, expected, check, guarded)
    half_checks_all(a, expected, check, record, guarded)
    if not a.half_only:
        trajectory_checks(a, check, guarded)

    bad = [r for r in records if not r["ok"]]
    print(f"{len(records) - len(bad)}/{len(records)} checks within tolerance ({a.tol}; half "
          f"precision {HALF_TOL}) on {a.device}")
    sys.exit(1 if bad else 0)


def f32_checks(a, expected, check, guarded):
    guarded("base", lambda: check("base", eval_loss(a.bin, a.device, "tiny-llama"),
                                  expected["base_loss"]))
    guarded("base_tied", lambda: check("base_tied", eval_loss(a.bin, a.device, "tiny-llama-tied"),
                                       expected["base_loss_tied"]))
    quick = {"lora_rs_all", "dora_attn", "ia3", "prefix_proj", "prompt"}
    for name, want in expected["adapters"].items():
        if a.quick and name not in quick:
            continue
        guarded(name, lambda: check(name, eval_loss(a.bin, a.device, "tiny-llama", name),
                                    want["loss"]))
        if name in MERGEABLE:
            guarded(name + "+merge", lambda: check(
                name + "+merge", eval_loss(a.bin, a.device, "tiny-llama", name, merge=True),
                want["merged_loss"]))


def half_checks_all(a, expected, check, record, guarded):
    # Each record also says how far ours and PyTorch's half-precision loss are from PEFT's f32
    # loss: a backend that rounds at other points (cubecl fuses elementwise chains on GPUs) can
    # miss PyTorch's half value while erring as much as PyTorch does, or less.
    def f32_context(name, got, want):
        ref = expected["base_loss"] if name == "base" else expected["adapters"][name]["loss"]
        return dict(ours_vs_f32=abs(got - ref), torch_half_vs_f32=abs(want - ref))

    with open(os.path.join(FIX, "expected_half.json")) as f:
        half = json.load(f)
    for dtype in a.dtypes.replace(",", " ").split():
        def half_checks(dtype=dtype):
            try:
                got = eval_loss(a.bin, a.device, "tiny-llama", dtype=dtype)
            except RuntimeError as e:
                if "cannot compute in" not in str(e):
                    raise
                record(dict(check=f"{dtype}_skipped", device=a.device, note=str(e)[-200:],
                            ok=True))
                return
            want = half[dtype]["base_loss"]
            check(f"{dtype}_base", got, want, HALF_TOL[dtype], **f32_context("base", got, want))
            for name, want in half[dtype]["adapters"].items():
                got = eval_loss(a.bin, a.device, "tiny-llama", name, dtype=dtype)
                check(f"{dtype}_{name}", got, want, HALF_TOL[dtype], **f32_context(name, got, want))
        guarded(dtype, half_checks)


def trajectory_checks(a, check, guarded):
    with tempfile.TemporaryDirectory() as tmp:
        # "lora-layers": LoRA with gradient checkpointing by layer on the device, against
        # flex's plain run (the same trajectory).
        for name in ["full", "ia3", "lora", "dora", "prefix", "lora-layers"]:
            def trajectory(name=name):
                method = name.split("-")[0]
                extra = ["--gradient-checkpointing", "layers"] if name.endswith("-layers") else []
                ours = train_losses(a.bin, a.device, method, a.steps, os.path.join(tmp, name + "-ours"), *extra)
                ref = train_losses(a.bin, "flex", method, a.steps, os.path.join(tmp, name + "-flex"))
                if len(ours) != len(ref) or not ours:
                    raise RuntimeError(f"{len(ours)} step losses against {len(ref)} on flex")
                worst = max(range(len(ours)), key=lambda i: abs(ours[i] - ref[i]))
                check(f"train_{name}_step{worst + 1}", ours[worst], ref[worst])
            guarded("train_" + name, trajectory)

        def lora_trained():
            out = os.path.join(tmp, "lora")
            train_losses(a.bin, "flex", "lora", a.steps, out)
            args = ["eval", "--model", os.path.join(FIX, "tiny-llama"), "--adapter", out,
                    "--text", os.path.join(FIX, "text.txt"), "--max-tokens", "48", "--json"]
            ours = json.loads(cli(a.bin, *args, "--device", a.device).strip().splitlines()[-1])
            ref = json.loads(cli(a.bin, *args, "--device", "flex").strip().splitlines()[-1])
            check("trained_lora_eval", ours["loss"], ref["loss"])
        guarded("trained_lora_eval", lora_trained)


if __name__ == "__main__":
    main()
