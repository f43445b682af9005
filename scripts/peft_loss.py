#!/usr/bin/env python3
"""Compute a causal-LM loss with transformers + PEFT, for cross-checking burn-peft.

Usage:

    python3 scripts/peft_loss.py --model DIR [--adapter DIR ...] \\
        (--ids-json FILE | --text FILE) [--max-tokens N]

* --model DIR     a transformers model directory (config.json + model.safetensors),
                  e.g. tests/fixtures/tiny-llama.  With --text, DIR/tokenizer.json is
                  used to encode the text.
* --adapter DIR   a PEFT adapter directory (adapter_config.json +
                  adapter_model.safetensors).  May be repeated: all adapters are
                  loaded and active at the same time (LoRA-family / IA3 only;
                  prompt-learning adapters cannot be combined).  Without any
                  --adapter the plain base model is evaluated.
* --ids-json FILE JSON file with either a list of token ids or an object with an
                  "input_ids" list (e.g. tests/fixtures/expected.json).
* --text FILE     plain text, encoded as
                  tokenizers.Tokenizer.from_file(DIR/tokenizer.json).encode(text).ids
                  (no special tokens are added).
* --max-tokens N  keep only the first N token ids.

Prints exactly one JSON line on stdout:

    {"loss": <mean next-token cross entropy>, "tokens": <number of input ids used>}

The loss is model(input_ids, labels=input_ids).loss in float32 on the CPU with
the model in eval mode, i.e. the mean over tokens-1 predictions (for prompt
tuning PEFT also predicts the first token from the virtual tokens).

Exit codes: 0 ok, 2 bad arguments / inputs, 3 the Python stack (torch,
transformers, peft, tokenizers) is not installed.
"""

import argparse
import json
import os
import sys
import warnings


def fail(code: int, msg: str) -> "None":
    print(f"peft_loss.py: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="base model directory")
    ap.add_argument("--adapter", action="append", default=[], help="adapter directory (repeatable)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids-json", help='JSON list of ids, or object with "input_ids"')
    src.add_argument("--text", help="text file to tokenize with MODEL/tokenizer.json")
    ap.add_argument("--max-tokens", type=int, default=None, help="use only the first N ids")
    return ap.parse_args()


def main() -> None:
    args = parse_args()

    # Offline, quiet, deterministic.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")

    try:
        import torch
        import tokenizers
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError as e:  # the Rust test treats exit code 3 as "skip"
        fail(3, f"python stack not available ({e}); install: pip install torch transformers peft safetensors")

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    # ---- token ids -----------------------------------------------------------
    if args.ids_json is not None:
        with open(args.ids_json, encoding="utf-8") as f:
            data = json.load(f)
        ids = data["input_ids"] if isinstance(data, dict) else data
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            fail(2, f"{args.ids_json}: expected a list of ints or an object with 'input_ids'")
    else:
        tok_path = os.path.join(args.model, "tokenizer.json")
        if not os.path.exists(tok_path):
            fail(2, f"--text needs {tok_path}")
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
        ids = tokenizers.Tokenizer.from_file(tok_path).encode(text).ids
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens]
    if len(ids) < 2:
        fail(2, "need at least 2 token ids")

    # ---- model + adapters ------------------------------------------------------
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    if args.adapter:
        names = [f"adapter{i}" for i in range(len(args.adapter))]
        model = PeftModel.from_pretrained(model, args.adapter[0], adapter_name=names[0])
        if len(names) > 1:
            if model.peft_config[names[0]].is_prompt_learning:
                fail(2, "prompt-learning adapters cannot be combined with other adapters")
            for name, path in zip(names[1:], args.adapter[1:]):
                model.load_adapter(path, adapter_name=name)
                if model.peft_config[name].is_prompt_learning:
                    fail(2, "prompt-learning adapters cannot be combined with other adapters")
            # Activate all of them at once on the tuner layers; their effects add up.
            model.base_model.set_adapter(names)
    model.eval()

    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        loss = model(input_ids=x, labels=x).loss
    print(json.dumps({"loss": float(loss), "tokens": len(ids)}))


if __name__ == "__main__":
    main()
