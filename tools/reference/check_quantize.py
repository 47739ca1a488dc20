#!/usr/bin/python3
"""Checks an `xc2 quantize` output folder against this reference's own round-to-nearest quantization:
every GPTQ tensor bit for bit, every other tensor unchanged, quantization_config as requested.

Usage: check_quantize.py SRC_MODEL QUANTIZED_FOLDER
"""
import sys

import torch

import gptq
import safetensors_io as sio
import xc2_ref


def main(src, out):
    q = xc2_ref.quantization_config(out)
    assert q and q["quant_method"] == "gptq" and not q["desc_act"], q
    base = xc2_ref._load_stored(src)
    got = sio.read_folder(out)
    n_layers = xc2_ref.load_config(src).num_hidden_layers
    bases = {b: q["bits"] for b in gptq.quantized_bases(n_layers)}
    if gptq.head_bits(q) is not None:
        bases["output"] = gptq.head_bits(q)
    n_q = 0
    for name, t in base.items():
        b = name[:-len(".weight")]
        if b in bases:
            want = gptq.round_to_nearest(t, bases[b], q["group_size"], q["sym"])
            for part, w in want.items():
                g = got.pop(f"{b}.{part}")
                assert g.dtype == w.dtype and torch.equal(g, w), f"{b}.{part} differs"
            n_q += 1
        else:
            g = got.pop(name)
            assert g.dtype == t.dtype and torch.equal(g, t), f"{name} changed"
    assert not got, f"unexpected tensors {list(got)[:3]}"
    assert n_q == len(bases)
    print(f"check_quantize: {out}: {n_q} linears equal the reference RTN "
          f"(bits {q['bits']}, group {q['group_size']}, sym {q['sym']}, output head {gptq.head_bits(q) or 16}-bit)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
