#!/usr/bin/env python3
"""Generate the reference fixtures used by burn-peft's tests.

Everything here is produced with the *real* Python stack (PyTorch +
transformers + PEFT) so that the Rust port can be checked against it:

    tests/fixtures/
        text.txt                      hand-written English prose (tokenizer corpus + eval text)
        tiny-llama/                   random-init LlamaForCausalLM (GQA, untied lm_head)
            config.json, model.safetensors, tokenizer.json
        tiny-llama-tied/              same shapes, tie_word_embeddings=True, other seed
            config.json, model.safetensors, tokenizer.json
        adapters/<name>/              PeftModel.save_pretrained output
            adapter_config.json, adapter_model.safetensors
        expected.json                 reference losses / logits / parameter counts

Nothing is downloaded: models are built from a config, the tokenizer is
trained on text.txt.  Run with

    HF_HUB_OFFLINE=1 python3 scripts/make_fixtures.py [--out tests/fixtures]

The script is deterministic: every random tensor comes from an explicitly
seeded torch.Generator (or torch.manual_seed before a constructor), and all
computations run in float32 on the CPU.  Re-running it with the same library
versions reproduces the same files bit for bit (modulo JSON float printing).
"""

import argparse
import json
import math
import os
import shutil
import sys

# PEFT keeps target_modules in a Python *set* and writes it to
# adapter_config.json in set-iteration order, which depends on the string hash
# seed.  Re-exec with a fixed PYTHONHASHSEED so the JSON files are byte-stable.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

import peft  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from peft import (  # noqa: E402
    IA3Config,
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptTuningConfig,
    get_peft_model,
)
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

VOCAB_SIZE = 384  # 256 byte symbols + 1 special token + 127 merges
EOT = "<|endoftext|>"
N_IDS = 48  # number of token ids used for the reference losses
N_EVAL = 32  # the eval CLI test uses --max-tokens 32
INIT_STD = 0.2  # initializer_range (deliberately large: loss reacts to bugs)
# Scales of the prompt-learning weights, chosen so the adapters move the loss visibly.
PREFIX_STD = float(os.environ.get("PREFIX_STD", 2.0))
PROJ_GAIN = float(os.environ.get("PROJ_GAIN", 3.0))
PROMPT_STD = float(os.environ.get("PROMPT_STD", 5.0))

# Original prose written for this project (no third-party text).  It is the
# tokenizer's training corpus as well as the evaluation text.
TEXT = """\
The river begins as a thin thread of water high in the hills, where the snow
lingers late into spring and the air smells of stone and pine. Each morning the
sun warms the slopes, and small streams gather in the hollows, running over
pebbles and under fallen branches until they meet and become one. By the time
the water reaches the first village it is wide enough for a wooden bridge, and
children lean over the rail to watch leaves spin past on the current.

Weather shapes the river more than any other force. In a dry summer the water
sinks low and slow, and the banks show pale stripes of mud where the flood once
stood. Herons wait in the shallows, patient as fence posts, and the fish crowd
into the deep pools beneath the willows. Then the clouds build in the west,
grey at first and later almost black, and the wind turns the leaves over so
that the whole valley flashes silver. When the rain arrives it comes all at
once, drumming on roofs and fields, and within a day the river is brown and
loud and fast.

Farmers along the lower valley read the sky the way sailors read the sea. A
ring around the moon means rain before long; a red sky at evening promises a
fair morning; swallows flying low warn of a storm. Some of these sayings are
old guesses, and some hold a grain of truth, because the air grows heavy and
damp before a front, and insects drift closer to the ground where the birds
can catch them. The farmers do not argue about the reasons. They simply bring
the hay in early and tie down the doors of the barn.

In autumn the mornings are cold and still. Mist rises from the water and fills
the valley like milk in a bowl, so that only the tops of the tallest trees
stand clear. Sound travels far on such days: a dog barking on the far bank, a
cart on the road, the slow bell of the church across the fields. By noon the
sun burns the mist away, and the river is bright again, carrying the first
yellow leaves of the year down toward the town.

Winter brings ice to the edges of the stream. Thin plates form along the banks
at night and break apart in the afternoon, turning slowly in the eddies like
broken windows. When a hard frost holds for a week, the still pools freeze from
side to side, and the water can be heard moving underneath, a low and patient
voice beneath the white surface. Snow falls on the ice and on the fields alike,
and for a while the river almost disappears.

Then the thaw comes, and with it the loudest weeks of the year. Melt water pours
out of the hills, the ice groans and cracks, and the river rises over its banks
into the meadows. The flood leaves behind fresh silt, dark and rich, and when
the water finally returns to its bed the grass grows greener than before. The
people of the valley have learned to live with this rhythm of rain and drought,
frost and flood. They build their houses on the higher ground, they plant their
gardens where the silt is deep, and every spring they walk down to the bridge
to see how high the water climbed while they slept.
"""


def gen(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed (keeps each random draw independent)."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def train_tokenizer(text: str) -> tokenizers.Tokenizer:
    """Train a small byte-level BPE on `text`.

    * byte-level pre-tokenizer (GPT-2 style, no prefix space) and decoder,
    * all 256 byte symbols are in the initial alphabet so any text encodes,
    * one special token `<|endoftext|>` (id 0),
    * no post-processor: encode() never adds special tokens.
    """
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok


# ---------------------------------------------------------------------------
# Base models
# ---------------------------------------------------------------------------


def llama_config(vocab_size: int, eot_id: int, tied: bool) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: 2 query heads per kv head
        hidden_act="silu",
        max_position_embeddings=256,
        initializer_range=INIT_STD,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=tied,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=eot_id,
        pad_token_id=None,
    )


@torch.no_grad()
def randomize_base(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with our own deterministic random values.

    Matrices (linear + embedding): N(0, INIT_STD^2).
    RMSNorm weights: 1 + 0.1 * N(0, 1), so that the norm weights matter.
    Parameters are visited in sorted-name order with one generator, which
    makes the result independent of transformers' own init code.  With tied
    embeddings `named_parameters()` yields the shared tensor only once.
    """
    g = gen(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight") or "layernorm" in name:
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(INIT_STD * torch.randn(p.shape, generator=g))


def build_base(out_dir: str, tok_path: str, vocab_size: int, eot_id: int, tied: bool, seed: int) -> None:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(vocab_size, eot_id, tied)).to(torch.float32)
    randomize_base(model, seed)
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors
    # keep only what the Rust side needs (generation_config.json is noise here)
    gc = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    shutil.copy(tok_path, os.path.join(out_dir, "tokenizer.json"))
    for fn in os.listdir(out_dir):
        os.chmod(os.path.join(out_dir, fn), 0o644)


def load_base(model_dir: str) -> LlamaForCausalLM:
    """Load a fixture model in f32 on CPU, eval mode, eager attention."""
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


# ---------------------------------------------------------------------------
# Loss helpers
# ---------------------------------------------------------------------------


@torch.no_grad()
def causal_loss(model, ids: list[int]) -> float:
    """Mean next-token cross entropy as computed by transformers/PEFT.

    Note: for prompt tuning PEFT prepends `num_virtual_tokens` labels of -100,
    so the first real token is *also* predicted (from the last virtual token):
    the mean is then over len(ids) targets instead of len(ids)-1.
    """
    x = torch.tensor([ids], dtype=torch.long)
    return float(model(input_ids=x, labels=x).loss)


def count_params(model) -> tuple[int, int]:
    """(trainable, all) exactly as print_trainable_parameters() reports them."""
    if isinstance(model, PeftModel):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def file_tensors(path: str) -> dict:
    """{key: shape} of a safetensors file (for the report and for expected.json)."""
    out = {}
    with safe_open(path, framework="pt") as f:
        for k in sorted(f.keys()):
            out[k] = list(f.get_slice(k).get_shape())
    return out


# ---------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------

def adapter_specs():
    """name -> dict(cfg=config factory, seed=..., plus the scales used by
    randomize_adapter: a_std/b_std for LoRA A/B entries, emb_std for prompt
    learning embeddings, proj_gain for the prefix projection MLP).

    The scales were picked so that each adapter moves the loss by a clearly
    visible amount (about 0.09 - 0.8 nat, see loss_delta_vs_base in
    expected.json) without swamping the base model.
    """
    task = "CAUSAL_LM"
    return {
        "lora_qv": dict(
            cfg=lambda: LoraConfig(
                task_type=task, r=4, lora_alpha=8, lora_dropout=0.0,
                target_modules=["q_proj", "v_proj"], init_lora_weights=False,
            ),
            seed=101, a_std=0.3, b_std=0.3,
        ),
        "lora_rs_all": dict(
            cfg=lambda: LoraConfig(
                task_type=task, r=8, lora_alpha=16, use_rslora=True, lora_dropout=0.0,
                target_modules="all-linear", init_lora_weights=False,
            ),
            seed=102, a_std=0.15, b_std=0.15,
        ),
        "dora_attn": dict(
            cfg=lambda: LoraConfig(
                task_type=task, r=4, lora_alpha=8, use_dora=True, lora_dropout=0.0,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False,
            ),
            seed=103, a_std=0.3, b_std=0.3,
        ),
        # PEFT 0.21 rejects `layers_to_transform` together with a regex-string
        # `target_modules` ("`layers_to_transform` cannot be used when
        # `target_modules` is a str."), so the layer restriction lives inside
        # the regex here, and `lora_layers1_list` below covers
        # `layers_to_transform` with a list of module names.
        "lora_regex_layer1": dict(
            cfg=lambda: LoraConfig(
                task_type=task, r=2, lora_alpha=4, lora_dropout=0.0,
                target_modules=r".*\.layers\.1\.mlp\.(up|down)_proj",
                init_lora_weights=False,
            ),
            seed=104, a_std=0.4, b_std=0.4,
        ),
        "lora_layers1_list": dict(
            cfg=lambda: LoraConfig(
                task_type=task, r=2, lora_alpha=4, lora_dropout=0.0,
                target_modules=["up_proj", "down_proj"], layers_to_transform=[1],
                init_lora_weights=False,
            ),
            seed=110, a_std=0.4, b_std=0.4,
        ),
        "lora_excl": dict(
            cfg=lambda: LoraConfig(
                task_type=task, r=4, lora_alpha=4, lora_dropout=0.0,
                target_modules="all-linear", exclude_modules=["o_proj", "gate_proj"],
                init_lora_weights=False,
            ),
            seed=105, a_std=0.3, b_std=0.3,
        ),
        "ia3": dict(
            cfg=lambda: IA3Config(
                task_type=task, target_modules=["k_proj", "v_proj", "down_proj"],
                feedforward_modules=["down_proj"],
            ),
            seed=106,
        ),
        "prefix": dict(
            cfg=lambda: PrefixTuningConfig(task_type=task, num_virtual_tokens=5),
            seed=107, emb_std=PREFIX_STD,
        ),
        "prefix_proj": dict(
            cfg=lambda: PrefixTuningConfig(
                task_type=task, num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=32,
            ),
            seed=108, emb_std=1.0, proj_gain=PROJ_GAIN,
        ),
        "prompt": dict(
            cfg=lambda: PromptTuningConfig(task_type=task, num_virtual_tokens=6),
            seed=109, emb_std=PROMPT_STD,
        ),
    }


@torch.no_grad()
def randomize_adapter(pm: PeftModel, name: str, spec: dict) -> None:
    """Give every adapter weight a deterministic random value.

    PEFT's own init (even with init_lora_weights=False) would be fine, but
    doing it by hand pins the exact distribution and seed.
    """
    g = gen(spec["seed"])
    params = sorted(pm.named_parameters(), key=lambda kv: kv[0])
    touched = 0
    for pname, p in params:
        if "lora_A" in pname:
            p.copy_(spec["a_std"] * torch.randn(p.shape, generator=g))
        elif "lora_B" in pname:
            p.copy_(spec["b_std"] * torch.randn(p.shape, generator=g))
        else:
            continue
        touched += 1
    # DoRA magnitude: PEFT initialises it to ||W + s*B@A|| per output row at
    # creation time (with the *old* A/B).  Recompute it from the new A/B, then
    # perturb by (1 + 0.1*randn) so that it is not the identity rescaling.
    for mname, mod in sorted(pm.named_modules(), key=lambda kv: kv[0]):
        mags = getattr(mod, "lora_magnitude_vector", None)
        if mags is None or name not in mags:
            continue
        base_w = mod.get_base_layer().weight
        delta = mod.get_delta_weight(name)  # = scaling * B @ A
        norm = torch.linalg.norm(base_w + delta, dim=1)
        m = mags[name].weight
        m.copy_(norm * (1.0 + 0.1 * torch.randn(m.shape, generator=g)))
        touched += 1
    # IA3 vectors: around one.
    for pname, p in params:
        if "ia3_l" in pname:
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            touched += 1
    # Prompt learning encoders (prefix / prompt tuning).
    if pm.peft_config[name].is_prompt_learning:
        enc = pm.prompt_encoder[name]
        for pname, p in sorted(enc.named_parameters(), key=lambda kv: kv[0]):
            if pname == "embedding.weight":
                p.copy_(spec["emb_std"] * torch.randn(p.shape, generator=g))
            elif pname.endswith("weight"):  # projection MLP (prefix_projection=True)
                fan_in = p.shape[1]
                p.copy_(spec["proj_gain"] * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:  # MLP biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            touched += 1
    assert touched > 0, f"nothing randomized for {name}"


def make_adapter(base_dir: str, out_dir: str, spec: dict, ids: list[int]) -> dict:
    """Create one adapter on a fresh copy of the base model and save it.

    The adapter is created under PEFT's adapter name "default" (names such as
    "ia3" or "prefix" collide with PEFT's parameter prefixes and trigger a
    reinitialisation warning); the folder name is what identifies it.
    """
    name = "default"
    torch.manual_seed(spec["seed"])
    base = load_base(base_dir)
    pm = get_peft_model(base, spec["cfg"]())
    randomize_adapter(pm, name, spec)
    trainable, total = count_params(pm)
    pm.eval()
    loss_in_memory = causal_loss(pm, ids)
    # PEFT would record the absolute path of the base model; store the
    # fixture folder name instead so the files do not depend on the checkout.
    # (save_pretrained then warns "Could not find a config file in tiny-llama";
    # that only concerns saving resized embeddings, which we never do.)
    pm.peft_config[name].base_model_name_or_path = "tiny-llama"
    shutil.rmtree(out_dir, ignore_errors=True)
    pm.save_pretrained(out_dir, safe_serialization=True)
    readme = os.path.join(out_dir, "README.md")
    if os.path.exists(readme):  # auto-generated model card, not needed
        os.remove(readme)
    for fn in os.listdir(out_dir):  # safetensors are written 0600; make them readable
        os.chmod(os.path.join(out_dir, fn), 0o644)
    return {"trainable_params": trainable, "all_params": total, "loss_before_save": loss_in_memory}


def load_adapter_model(base_dir: str, adapter_dir: str, name: str = "default") -> PeftModel:
    """Base model + one adapter, loaded exactly like a PEFT user would."""
    base = load_base(base_dir)
    pm = PeftModel.from_pretrained(base, adapter_dir, adapter_name=name)
    pm.eval()
    return pm


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # avoid thread-count dependent reduction order

    # -- text + tokenizer ---------------------------------------------------
    with open(os.path.join(out, "text.txt"), "w", encoding="utf-8") as f:
        f.write(TEXT)
    tok = train_tokenizer(TEXT)
    vocab_size = tok.get_vocab_size()
    eot_id = tok.token_to_id(EOT)
    tok_tmp = os.path.join(out, "tokenizer.json.tmp")
    tok.save(tok_tmp)

    # -- base models --------------------------------------------------------
    base_dir = os.path.join(out, "tiny-llama")
    tied_dir = os.path.join(out, "tiny-llama-tied")
    for d in (base_dir, tied_dir):
        shutil.rmtree(d, ignore_errors=True)
    build_base(base_dir, tok_tmp, vocab_size, eot_id, tied=False, seed=1234)
    build_base(tied_dir, tok_tmp, vocab_size, eot_id, tied=True, seed=5678)
    os.remove(tok_tmp)

    # Input ids: exactly how the Rust side is expected to produce them.
    tok_loaded = tokenizers.Tokenizer.from_file(os.path.join(base_dir, "tokenizer.json"))
    with open(os.path.join(out, "text.txt"), encoding="utf-8") as f:
        text = f.read()
    all_ids = tok_loaded.encode(text).ids
    ids = all_ids[:N_IDS]
    ids32 = all_ids[:N_EVAL]

    expected: dict = {
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "text_num_tokens": len(all_ids),
        "input_ids": ids,
    }

    base = load_base(base_dir)
    expected["base_loss"] = causal_loss(base, ids)
    with torch.no_grad():
        logits = base(input_ids=torch.tensor([ids])).logits
    expected["base_logits_first"] = [float(v) for v in logits[0, -1, :8]]
    tr, tot = count_params(base)
    expected["models"] = {"tiny-llama": {"trainable_params": tr, "all_params": tot}}

    tied = load_base(tied_dir)
    expected["base_loss_tied"] = causal_loss(tied, ids)
    tr, tot = count_params(tied)
    expected["models"]["tiny-llama-tied"] = {"trainable_params": tr, "all_params": tot}

    # -- adapters -------------------------------------------------------------
    adapters_dir = os.path.join(out, "adapters")
    os.makedirs(adapters_dir, exist_ok=True)
    expected["adapters"] = {}
    mergeable = {"lora_qv", "lora_rs_all", "dora_attn", "lora_regex_layer1", "lora_layers1_list", "lora_excl", "ia3"}
    for name, spec in adapter_specs().items():
        adir = os.path.join(adapters_dir, name)
        info = make_adapter(base_dir, adir, spec, ids)

        # Reference loss from a *reloaded* adapter (what a consumer sees).
        pm = load_adapter_model(base_dir, adir)
        info["loss"] = causal_loss(pm, ids)
        with torch.no_grad():
            lg = pm(input_ids=torch.tensor([ids])).logits
        info["logits_first"] = [float(v) for v in lg[0, -1, :8]]  # last position, for debugging
        info["loss_delta_vs_base"] = info["loss"] - expected["base_loss"]
        # Saving + PeftModel.from_pretrained must reproduce the in-memory model.
        assert abs(info["loss"] - info["loss_before_save"]) < 1e-5, (name, info)
        if name in mergeable:
            merged = pm.merge_and_unload()
            merged.eval()
            info["merged_loss"] = causal_loss(merged, ids)
        info["saved_tensors"] = file_tensors(os.path.join(adir, "adapter_model.safetensors"))
        info["saved_params"] = int(sum(math.prod(s) for s in info["saved_tensors"].values()))
        expected["adapters"][name] = info
        print(f"{name:20s} loss={info['loss']:.6f} delta={info['loss_delta_vs_base']:+.4f}"
              f" trainable={info['trainable_params']} all={info['all_params']}"
              + (f" merged={info['merged_loss']:.6f}" if "merged_loss" in info else ""))

    # -- two LoRA adapters active at the same time ----------------------------
    a, b = "lora_qv", "lora_regex_layer1"
    pm = load_adapter_model(base_dir, os.path.join(adapters_dir, a), a)
    pm.load_adapter(os.path.join(adapters_dir, b), adapter_name=b)
    pm.base_model.set_adapter([a, b])
    pm.eval()
    assert sorted(pm.base_model.active_adapters) == sorted([a, b]), pm.base_model.active_adapters
    multi = causal_loss(pm, ids)
    # Cross-check: merging both adapters into the weights must give the same loss.
    merged_both = pm.merge_and_unload(adapter_names=[a, b])
    merged_both.eval()
    multi_merged = causal_loss(merged_both, ids)
    assert abs(multi - multi_merged) < 1e-4, (multi, multi_merged)
    for single in (a, b):
        assert abs(multi - expected["adapters"][single]["loss"]) > 1e-3, "multi-adapter loss equals a single one"
    expected[f"multi_{a}+{b}"] = {"loss": multi, "merged_loss": multi_merged, "adapters": [a, b]}
    print(f"multi {a}+{b}: loss={multi:.6f} merged={multi_merged:.6f}")

    # -- eval CLI reference (first 32 tokens) ---------------------------------
    base = load_base(base_dir)
    pm = load_adapter_model(base_dir, os.path.join(adapters_dir, "lora_qv"))
    expected["eval_max_tokens_32"] = {
        "input_ids": ids32,
        "base_loss": causal_loss(base, ids32),
        "lora_qv_loss": causal_loss(pm, ids32),
    }

    # Sanity: fixtures must stay small.
    total_bytes = 0
    for root, _, files in os.walk(out):
        for fn in files:
            total_bytes += os.path.getsize(os.path.join(root, fn))
    expected["_fixture_notes"] = {
        "dtype": "float32, CPU, model.eval(), eager attention",
        "loss": "model(input_ids=ids, labels=ids).loss; prompt tuning averages over len(ids) targets "
                "(virtual tokens get label -100, so ids[0] is predicted too), all others over len(ids)-1",
    }
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"fixtures written to {out} ({total_bytes / 1024:.0f} KiB before expected.json)")
    assert total_bytes < 2 * 1024 * 1024, "fixtures grew beyond 2 MB"


if __name__ == "__main__":
    sys.exit(main())
