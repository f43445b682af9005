#!/usr/bin/env python3
"""Tiny random models of the Llama-shaped families other than Llama, made by transformers, with
their reference numbers, for crates/burn-peft-models/tests/families.rs:

    tests/fixtures/families/<name>/   config.json, model.safetensors, tokenizer.json
    tests/fixtures/families/expected.json

* mistral-window: Mistral with a sliding window of 8 (shorter than the texts), which must
  change the loss against the same weights without a window;
* qwen2-bias: Qwen2 with its q/k/v biases (random, not zero);
* qwen3-qknorm: Qwen3 with its per-head q/k RMSNorm and a head_dim of 32 (4 heads of 32 on a
  width of 64: the projections are wider than the model);
* llama3-rope, llama-linear-rope: Llama with RoPE scaling `llama3` (an original context of 16,
  so that the 8 frequencies of a 16-wide head fall on both sides of the band and in it) and
  `linear` (factor 4);
* llama-dynamic-rope: Llama with RoPE scaling `dynamic` (factor 2) and a context of 16
  positions, so that the text and the generation run past it (and the loss with plain RoPE on
  the same weights, which must differ).

Each family also gets a LoRA adapter made by PEFT (`<name>-lora/`: r 4 on every linear
layer, random B so that it changes the output) and its loss. Each family gets: the loss on
the 48 token ids of expected.json, the loss with the
window off (Mistral), and 16 greedy tokens after a 12-token prompt (the decoder's cache
path, past the window). The tokenizer is the tiny Llama's. Run (offline, CPU, float32):

    python3 scripts/make_family_fixtures.py [--out tests/fixtures]
"""

import argparse
import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

TOKENS = 48  # the token ids expected.json keeps
PROMPT = 12
NEW = 16
SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    hidden_act="silu",
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=None,
    eos_token_id=0,
    pad_token_id=None,
)


@torch.no_grad()
def randomize(model, seed):
    """Every parameter from one seeded generator in sorted-name order: matrices and biases
    N(0, 0.2²), norm weights 1 + N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def reference(model, ids):
    x = torch.tensor([ids[:TOKENS]])
    loss = float(model(input_ids=x, labels=x).loss)
    prompt = torch.tensor([ids[:PROMPT]])
    out = model.generate(
        prompt,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return loss, out[0, PROMPT:].tolist()


@torch.no_grad()
def make_lora(model, out_dir, ids, seed):
    config = peft.LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    torch.manual_seed(seed)
    pm = peft.get_peft_model(model, config)
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(pm.named_parameters(), key=lambda kv: kv[0]):
        if "lora_" in name:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.eval()
    pm.save_pretrained(out_dir)
    x = torch.tensor([ids[:TOKENS]])
    loss = float(pm(input_ids=x, labels=x).loss)
    pm.unload()
    for fn in os.listdir(out_dir):
        if fn == "README.md":
            os.remove(os.path.join(out_dir, fn))
        else:
            os.chmod(os.path.join(out_dir, fn), 0o644)
    return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures")
    args = parser.parse_args()
    root = os.path.join(args.out, "families")
    ids = json.load(open(os.path.join(args.out, "expected.json")))["input_ids"]
    vocab = json.load(open(os.path.join(args.out, "tiny-llama", "config.json")))["vocab_size"]
    expected = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
                "peft_version": peft.__version__,
                "tokens": TOKENS, "prompt": PROMPT, "new_tokens": NEW, "models": {}}
    def rope(parameters):
        shape = {k: v for k, v in SHAPE.items() if k != "rope_theta"}
        return LlamaConfig(vocab_size=vocab, rope_parameters={"rope_theta": 10000.0, **parameters}, **shape)

    families = {
        "mistral-window": (MistralForCausalLM, MistralConfig(vocab_size=vocab, sliding_window=8, **SHAPE)),
        "qwen2-bias": (Qwen2ForCausalLM, Qwen2Config(vocab_size=vocab, use_sliding_window=False, **SHAPE)),
        "qwen3-qknorm": (Qwen3ForCausalLM, Qwen3Config(
            vocab_size=vocab, use_sliding_window=False, **{**SHAPE, "head_dim": 32})),
        "llama3-rope": (LlamaForCausalLM, rope({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16})),
        "llama-linear-rope": (LlamaForCausalLM, rope({"rope_type": "linear", "factor": 4.0})),
        # A context of 16 positions: the 48-token text and the generation past position 16
        # run on frequencies grown for their length.
        "llama-dynamic-rope": (LlamaForCausalLM, LlamaConfig(
            vocab_size=vocab, rope_parameters={"rope_theta": 10000.0, "rope_type": "dynamic",
                                               "factor": 2.0},
            **{k: v for k, v in SHAPE.items() if k != "rope_theta"} | {"max_position_embeddings": 16})),
    }
    for seed, (name, (cls, config)) in enumerate(families.items(), start=11):
        torch.manual_seed(seed)
        model = cls(config).to(torch.float32)
        randomize(model, seed)
        model.eval()
        model.config._attn_implementation = "eager"
        out_dir = os.path.join(root, name)
        os.makedirs(out_dir, exist_ok=True)
        model.save_pretrained(out_dir)
        gc = os.path.join(out_dir, "generation_config.json")
        if os.path.exists(gc):
            os.remove(gc)
        shutil.copy(os.path.join(args.out, "tiny-llama", "tokenizer.json"), out_dir)
        loss, greedy = reference(model, ids)
        entry = {"loss": loss, "greedy": greedy}
        entry["lora_loss"] = make_lora(model, os.path.join(root, f"{name}-lora"), ids, seed)
        if name == "llama-dynamic-rope":
            # The same weights with plain RoPE: the scaling must matter on this text.
            plain = LlamaForCausalLM(LlamaConfig(
                vocab_size=vocab, **{**SHAPE, "max_position_embeddings": 16})).to(torch.float32)
            plain.load_state_dict(model.state_dict())
            plain.eval()
            plain.config._attn_implementation = "eager"
            entry["loss_plain_rope"], _ = reference(plain, ids)
        if name.startswith("mistral"):
            # The same weights without the window: the window must matter on these texts.
            model.config.sliding_window = None
            entry["loss_without_window"], _ = reference(model, ids)
        expected["models"][name] = entry
        print(name, entry)
    with open(os.path.join(root, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)


if __name__ == "__main__":
    main()
