#!/usr/bin/env python3
"""Reference losses of the fixture model and adapters in bf16 and f16, from transformers + PEFT.

The base model is loaded in the half type (eager attention, CPU) and each adapter with PEFT's
defaults (`autocast_adapter_dtype=True`: adapter weights in f32, as burn-peft keeps them). Writes
tests/fixtures/expected_half.json, which `crates/burn-peft-models/tests/precision.rs` checks
`--dtype bf16` / `f16` against. Run from the repository root with a venv that has torch,
transformers and peft (the versions are recorded in the file):

    python3 scripts/half_reference.py
"""

import json
import os

import peft
import torch
import transformers
from peft import PeftModel
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
# Adapters that act on linear layers (prompt learning adds no precision question of its own).
ADAPTERS = ["lora_qv", "lora_rs_all", "dora_attn", "lora_excl", "ia3"]


def loss(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss.float())


def base(dtype):
    m = LlamaForCausalLM.from_pretrained(
        os.path.join(ROOT, "tiny-llama"), dtype=dtype, attn_implementation="eager"
    )
    return m.eval()


def main():
    expected = json.load(open(os.path.join(ROOT, "expected.json")))
    ids = expected["input_ids"]
    out = {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
        "note": "losses of tiny-llama on input_ids of expected.json, base weights and "
        "activations in the named type, adapters in f32 (PEFT autocast_adapter_dtype=True)",
    }
    for name, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16)]:
        entry = {"base_loss": loss(base(dtype), ids), "adapters": {}}
        for adapter in ADAPTERS:
            pm = PeftModel.from_pretrained(base(dtype), os.path.join(ROOT, "adapters", adapter))
            pm.eval()
            entry["adapters"][adapter] = loss(pm, ids)
        out[name] = entry
        print(name, json.dumps(entry))
    path = os.path.join(ROOT, "expected_half.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
