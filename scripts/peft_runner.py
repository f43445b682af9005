#!/usr/bin/env python3
"""The PyTorch + PEFT side of burn-peft's training-step benchmark.

Builds a Llama-shaped model from transformers with random weights (nothing is downloaded),
wraps it with HF PEFT for one method, and times whole training steps: forward pass, loss,
backward pass, AdamW step. `scripts/bench_vs_peft.py` (CPU) and `scripts/gpu-check.sh` (GPU)
run it beside `burn-peft bench-step`, which builds the same shapes and methods.

    python3 scripts/peft_runner.py --device cpu --shapes smol --methods lora,ia3 --dtype f32 \\
        --batch 4 --seq 128 --steps 3 --warmup 1

Needs torch, transformers and peft. What both sides share:

- shapes (`--shapes`): `tiny`, `smol` (SmolLM2-135M: hidden 576, 30 layers, 9 heads over 3
  key/value heads, MLP 1536, vocabulary 49152) and `1b` (Llama-3.2-1B: hidden 2048, 16
  layers, 32 heads over 8, MLP 8192, vocabulary 128256), input and output embeddings tied;
- methods (`--methods`): `lora` (r 16, alpha 32, no dropout, on q/k/v/o/gate/up/down),
  `dora` (the same with `use_dora`), `ia3` (k, v and down projections, down as the
  feed-forward one), `prefix` (20 virtual tokens, no projection) and `full` (every weight);
- the step: next-token cross-entropy over every position (`labels=input_ids`), AdamW at
  lr 1e-4 over the trainable parameters, gradients dropped after each step; the inputs are
  four batches of random token ids from a seeded generator, used in turn;
- `--dtype f32` on CUDA turns TF32 off, so f32 means f32 here.

For every (shape, method) it prints one JSON object on a line of its own, with the keys
shape, method, dtype, device, batch, seq, trainable, total, ms_per_step (median of the timed
steps), tokens_per_s, achieved_tflops, peak_gib (CUDA's peak allocation; null on the CPU,
where the caller measures the process's peak RSS), loss_first and loss_last. A case that
raises prints {"shape", "method", "error"} instead, and the rest still run. `--out FILE`
appends the successful records to FILE as JSON lines. A plain table closes the output.

achieved_tflops counts 4 FLOPs per parameter and token when the base is frozen (forward pass
and the inputs' gradients), 6 for full fine-tuning (the weights' gradients too), plus
12 · layers · hidden · seq for attention's two products.
"""

import argparse
import json
import time

# name -> (hidden, layers, attention heads, key/value heads, MLP width, vocabulary)
SHAPES = {
    "tiny": (256, 4, 4, 2, 688, 8192),
    "smol": (576, 30, 9, 3, 1536, 49152),
    "1b": (2048, 16, 32, 8, 8192, 128256),
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ["full", "lora", "dora", "ia3", "prefix"]
BATCHES = 4  # distinct input batches, cycled through the steps


def llama_config(shape):
    from transformers import LlamaConfig

    hidden, layers, heads, kv_heads, mlp, vocab = SHAPES[shape]
    return LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, intermediate_size=mlp, vocab_size=vocab,
                       max_position_embeddings=4096, tie_word_embeddings=True)


def peft_config(method):
    """The PEFT configuration of `method`, or None for full fine-tuning."""
    import peft

    if method == "full":
        return None
    if method in ("lora", "dora"):
        return peft.LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                               target_modules=ALL_LINEAR, use_dora=method == "dora")
    if method == "ia3":
        return peft.IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                              feedforward_modules=["down_proj"])
    if method == "prefix":
        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
    raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")


def make_model(shape, method, dtype, device):
    import peft
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(shape)).to(device=device, dtype=dtype)
    config = peft_config(method)
    if config is not None:
        model = peft.get_peft_model(model, config)
    # The adapters in the same type and place as the base, as a user loading in bf16 gets.
    return model.to(device=device, dtype=dtype)


def flops_per_token(params, method, layers, hidden, seq):
    per_param = 6 if method == "full" else 4
    return per_param * params + 12 * layers * hidden * seq


def bench_case(shape, method, dtype, device, batch, seq, steps, warmup):
    import torch

    model = make_model(shape, method, dtype, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    hidden, layers, _, _, _, vocab = SHAPES[shape]
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randint(0, vocab, (batch, seq), generator=generator).to(device)
              for _ in range(BATCHES)]
    on_cuda = device.startswith("cuda")

    def wait():
        if on_cuda:
            torch.cuda.synchronize()

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    timed, losses = [], []
    for step in range(warmup + steps):
        ids = inputs[step % BATCHES]
        wait()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        wait()
        elapsed = time.perf_counter() - start
        losses.append(loss.item())
        if step >= warmup:
            timed.append(elapsed)
    step_s = sorted(timed)[len(timed) // 2]
    tokens_per_s = batch * seq / step_s
    record = {
        "shape": shape,
        "method": method,
        "dtype": str(dtype).rsplit(".", 1)[-1],
        "device": device,
        "batch": batch,
        "seq": seq,
        "trainable": sum(p.numel() for p in trainable),
        "total": total,
        "ms_per_step": step_s * 1e3,
        "tokens_per_s": tokens_per_s,
        "achieved_tflops": flops_per_token(total, method, layers, hidden, seq) * tokens_per_s / 1e12,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    print(json.dumps(record), flush=True)
    del model, optimizer
    if on_cuda:
        torch.cuda.empty_cache()
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N")
    ap.add_argument("--shapes", default="smol,1b", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    ap.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "f16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--out", default=None, help="append the records to this JSON-lines file")
    args = ap.parse_args()
    if args.steps < 1 or args.batch < 1 or args.seq < 2:
        ap.error("--steps and --batch must be at least 1, --seq at least 2")

    import torch

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    if args.dtype == "f32" and args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
    records = []
    for shape in args.shapes.split(","):
        for method in args.methods.split(","):
            try:
                if shape not in SHAPES:
                    raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
                records.append(bench_case(shape, method, dtype, args.device, args.batch, args.seq,
                                          args.steps, args.warmup))
            except Exception as e:  # one failing case must not lose the others
                print(json.dumps({"shape": shape, "method": method, "error": repr(e)[:300]}), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    print(f"{'shape':6} {'method':7} {'dtype':9} {'trainable':>11} {'ms/step':>9} {'tok/s':>10} "
          f"{'TFLOP/s':>8} {'peak GiB':>8}  loss")
    for r in records:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"{r['shape']:6} {r['method']:7} {r['dtype']:9} {r['trainable']:>11} {r['ms_per_step']:>9.1f} "
              f"{r['tokens_per_s']:>10.0f} {r['achieved_tflops']:>8.1f} {peak:>8}  "
              f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}")


if __name__ == "__main__":
    main()
