#!/usr/bin/python3
"""Writes the small checkpoint fixtures of tests/io (run with Debian's /usr/bin/python3, torch 1.13).

    /usr/bin/python3 tests/data/io/make_fixtures.py      # rewrites tests/data/io/*.bin, *.safetensors, sharded/

state_p2.bin       torch.save of a module state dict (OrderedDict + _metadata) plus extra entries: f32, f16,
                   bf16, views sharing one storage (offsets 0 and 4), a 0-d tensor, an empty tensor, an
                   nn.Parameter, size-1 dims with odd strides; default pickle protocol 2, prefix "state_p2"
state_p4.bin       the same dict with pickle_protocol=4 (FRAME, SHORT_BINUNICODE, MEMOIZE, ...)
state_archive.bin  the same dict saved through a BytesIO, so the zip prefix is "archive"
state.safetensors  the same tensors written by the independent writer below (contiguous copies), the
                   oracle the C++ tests compare the .bin readers against, name by name and byte by byte
noncontig.bin      a transposed (non-contiguous) tensor          -> Unsupported
double.bin         an f32 tensor and a float64 tensor            -> Unsupported (DoubleStorage)
long.bin           an int64 tensor                               -> Unsupported (LongStorage)
legacy.bin         _use_new_zipfile_serialization=False          -> Unsupported (legacy format)
nested.bin         {"state_dict": {...}}                         -> Io (no top-level tensors)
list.bin           [tensor]                                      -> Io (not a dict)
sharded/           pytorch_model-0000{1,2}-of-00002.bin + pytorch_model.bin.index.json + config.json
"""
import collections
import io
import json
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

SAFE_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors):
    """Minimal safetensors writer: tensors in dict order, back to back, header padded to 8 bytes."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        b = tensor_bytes(t)
        header[name] = {"dtype": SAFE_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def state_dict():
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(12, dtype=torch.float32).view(3, 4) * 0.5 - 2.0)
        lin.bias.copy_(torch.tensor([1.0, -1.0, 0.25]))
    sd = torch.nn.Sequential(collections.OrderedDict(linear=lin)).state_dict()  # OrderedDict with _metadata
    base = torch.arange(10, dtype=torch.bfloat16)
    sd["half.weight"] = (torch.arange(6, dtype=torch.float32).view(2, 3) / 4).half()
    sd["bf.base"] = base
    sd["bf.view_tail"] = base[4:]          # same storage, storage_offset 4
    sd["bf.view_2d"] = base[:6].view(2, 3)  # same storage, offset 0
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4, dtype=torch.bfloat16)
    sd["param"] = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    sd["unit_dims"] = torch.arange(3, dtype=torch.float32).view(1, 3, 1)
    sd["unit_stride"] = torch.arange(3, dtype=torch.float16).view(3, 1).t()  # shape [1, 3], stride (1, 1)
    return sd


def main():
    os.chdir(HERE)
    sd = state_dict()
    torch.save(sd, "state_p2.bin")
    torch.save(sd, "state_p4.bin", pickle_protocol=4)
    buf = io.BytesIO()
    torch.save(sd, buf)
    with open("state_archive.bin", "wb") as f:
        f.write(buf.getvalue())
    write_safetensors("state.safetensors", sd)

    torch.save({"w": torch.arange(6, dtype=torch.float32).view(2, 3).t()}, "noncontig.bin")
    torch.save({"ok": torch.ones(2), "d": torch.ones(2, dtype=torch.float64)}, "double.bin")
    torch.save({"ids": torch.arange(4)}, "long.bin")
    torch.save({"w": torch.ones(2)}, "legacy.bin", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": {"w": torch.ones(2)}}, "nested.bin")
    torch.save([torch.ones(2)], "list.bin")

    os.makedirs("sharded", exist_ok=True)
    names = list(sd.keys())
    shards = [names[:4], names[4:]]
    weight_map, total = {}, 0
    for k, part in enumerate(shards):
        fname = "pytorch_model-%05d-of-%05d.bin" % (k + 1, len(shards))
        torch.save({n: sd[n] for n in part}, os.path.join("sharded", fname))
        for n in part:
            weight_map[n] = fname
            total += sd[n].numel() * sd[n].element_size()
    with open(os.path.join("sharded", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join("sharded", "config.json"), "w") as f:
        json.dump({"model_type": "internlmxcomposer2", "img_size": 28}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
