#!/usr/bin/python3
"""Deterministic generator of the tiny GPTQ test checkpoints under tests/data/models/ (see README.md).

One small 16-bit base model (spec TINY_Q, tiny-a's tokenizer) quantized with gptq.round_to_nearest into
the layout AutoGPTQ writes, in five variants that together cover bits 4 and 8, group sizes 32 and -1,
act-order (desc_act) on and off, symmetric and asymmetric, safetensors (single and sharded) and .bin, and
both places of the settings (config.json quantization_config, quantize_config.json):

  tiny-q4-g32        4 bit, group 32, asym, no act-order   model.safetensors, quantization_config
  tiny-q4-g32-act    4 bit, group 32, sym, act-order       2 safetensors shards + index
  tiny-q4-pc-sym     4 bit, per channel (-1), sym          model.safetensors, quantize_config.json
  tiny-q8-g32-act    8 bit, group 32, asym, act-order      pytorch_model.bin
  tiny-q8-pc         8 bit, per channel (-1), asym         model.safetensors
  tiny-q4-g32-h8     4 bit, group 32, asym, and the output head at 8 bits ("lm_head": true and a GPTQModel
                     "dynamic" rule for its bits, as `xc2 quantize --head-bits 8` writes)

The quantized linears are the five decoder linears of every layer (gptq.QUANT_LINEARS), and in tiny-q4-g32-h8
the output head; everything else is the base model's fp16 tensors. Goldens: make_golden.py (the reference dequantizes, then runs float64).
"""
import collections
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gptq  # noqa: E402
import make_tiny  # noqa: E402
import safetensors_io as sio  # noqa: E402
import xc2_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "../.."))
MODELS = os.path.join(ROOT, "tests/data/models")

TINY_Q = dict(
    seed=4242, dtype=torch.float16, torch_dtype="float16", layout="single",
    hidden=128, heads=2, kv_heads=1, ffn=256, layers=2, lora_r=8, plora_scale=1.0,
    max_pos=32768, rope_theta=1000000, rms_eps=1e-5, max_length=4096,
    img_size=28, proj_hidden=64,
    vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1,
                patch_size=14, image_size=28, layer_norm_eps=1e-5, hidden_act="quick_gelu"),
    store_native_pos=False, lm_head_scale=6.0, stop_row_gain=1.6,
)

# name: (bits, group_size, sym, desc_act, layout, config place)
VARIANTS = collections.OrderedDict([
    ("tiny-q4-g32", (4, 32, False, False, "single", "config")),
    ("tiny-q4-g32-act", (4, 32, True, True, "sharded2", "config")),
    ("tiny-q4-pc-sym", (4, -1, True, False, "single", "file")),
    ("tiny-q8-g32-act", (8, 32, False, True, "bin", "config")),
    ("tiny-q8-pc", (8, -1, False, False, "single", "config")),
    ("tiny-q4-g32-h8", (4, 32, False, False, "single", "config")),
])
HEAD_BITS = {"tiny-q4-g32-h8": 8}  # variants whose output head is quantized too, at these bits


def quant_config(bits, group_size, sym, desc_act):
    return collections.OrderedDict([
        ("bits", bits), ("group_size", group_size), ("damp_percent", 0.01), ("desc_act", desc_act),
        ("static_groups", False), ("sym", sym), ("true_sequential", True), ("model_name_or_path", None),
        ("model_file_base_name", "model"), ("quant_method", "gptq"), ("checkpoint_format", "gptq"),
    ])


def quantize_state_dict(sd, n_layers, bits, group_size, sym, desc_act, seed, head_bits=None):
    g = torch.Generator().manual_seed(seed)
    bases = {b: bits for b in gptq.quantized_bases(n_layers)}
    if head_bits:
        bases["output"] = head_bits
    out = collections.OrderedDict()
    for name, t in sd.items():
        base = name[:-len(".weight")] if name.endswith(".weight") else None
        if base not in bases:
            out[name] = t
            continue
        k = t.shape[1]
        gi = gptq.act_order_g_idx(k, group_size, g) if desc_act else None
        q = gptq.round_to_nearest(t, bases[base], group_size, sym, gi)
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            out[f"{base}.{part}"] = q[part]
    return out


def main():
    torch.set_num_threads(1)
    tok = os.path.join(MODELS, "tiny-a", "tokenizer.model")
    vocab = xc2_ref.Tokenizer(tok).vocab_size
    cfg = make_tiny.make_config(TINY_Q, vocab)
    base = make_tiny.make_weights(TINY_Q, vocab)
    for i, (name, (bits, gs, sym, act, layout, place)) in enumerate(VARIANTS.items()):
        folder = os.path.join(MODELS, name)
        make_tiny.clean_folder(folder)
        qc = quant_config(bits, gs, sym, act)
        hb = HEAD_BITS.get(name)
        if hb:
            qc["lm_head"] = True
            qc["dynamic"] = {"+:^output$": {"bits": hb}}
        c = collections.OrderedDict(cfg)
        if place == "config":
            c["quantization_config"] = qc
        make_tiny.write_side_files(folder, c, tok)
        if place == "file":
            with open(os.path.join(folder, "quantize_config.json"), "w") as f:
                json.dump(qc, f, indent=2)
                f.write("\n")
        sd = quantize_state_dict(base, TINY_Q["layers"], bits, gs, sym, act, seed=100 + i, head_bits=hb)
        if layout == "sharded2":
            sio.write_sharded(folder, sd, 2, prefix="model")
        elif layout == "bin":
            make_tiny.torch_save(os.path.join(folder, "pytorch_model.bin"), sd)
        else:
            sio.write_file(os.path.join(folder, "model.safetensors"), sd, metadata={"format": "pt"})
        back = xc2_ref._load_stored(folder)
        assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd), name
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"{os.path.relpath(folder, ROOT)}: {len(sd)} tensors, {size / 1e3:.0f} kB")
        assert size < 1.5e6


if __name__ == "__main__":
    main()
