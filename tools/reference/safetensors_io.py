"""Minimal safetensors reader/writer (numpy + torch only; no `safetensors` package needed).

Format: 8-byte little-endian u64 header length N, then N bytes of JSON
  {"name": {"dtype": "F32"|"F16"|"BF16"|..., "shape": [...], "data_offsets": [begin, end]}, ...,
   "__metadata__": {str: str}}   (optional)
then the raw little-endian tensor bytes; offsets are relative to the end of the header.
The writer keeps insertion order, lays tensors out back to back in that order, and pads the JSON
header with spaces to a multiple of 8 bytes (as the reference implementation does).

Sharded checkpoints: `<prefix>-0000i-of-0000n.safetensors` + `<prefix>.safetensors.index.json`
with {"metadata": {"total_size": N}, "weight_map": {name: file}}.

Public functions:
  read_file(path) -> OrderedDict[str, torch.Tensor]
  read_header(path) -> (OrderedDict header, data_start)
  read_folder(dir) -> OrderedDict (model.safetensors or model.safetensors.index.json)
  write_file(path, tensors, metadata=None)
  write_sharded(dir, tensors, n_shards, prefix="model") -> list of file names
"""
import collections
import json
import os
import struct

import numpy as np
import torch

# dtype name -> (torch dtype, numpy dtype used to move the bytes, bytes per element)
_DTYPES = {
    "F64": (torch.float64, np.float64, 8),
    "F32": (torch.float32, np.float32, 4),
    "F16": (torch.float16, np.float16, 2),
    "BF16": (torch.bfloat16, np.int16, 2),
    "I64": (torch.int64, np.int64, 8),
    "I32": (torch.int32, np.int32, 4),
    "I16": (torch.int16, np.int16, 2),
    "I8": (torch.int8, np.int8, 1),
    "U8": (torch.uint8, np.uint8, 1),
    "BOOL": (torch.bool, np.bool_, 1),
}
_TORCH_TO_NAME = {v[0]: k for k, v in _DTYPES.items()}


def dtype_name(t):
    return _TORCH_TO_NAME[t.dtype]


def tensor_bytes(t):
    """Raw little-endian bytes of a tensor (C order)."""
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(order="C")


def read_header(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: file too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        hdr = f.read(n)
        if len(hdr) != n:
            raise ValueError(f"{path}: truncated header")
    header = json.loads(hdr.decode("utf-8"), object_pairs_hook=collections.OrderedDict)
    return header, 8 + n


def read_file(path):
    header, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tdt, ndt, size = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        shape = list(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * size or e > len(data):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {b},{e} for shape {shape}")
        arr = np.frombuffer(data, dtype=np.dtype(ndt).newbyteorder("<"), count=count, offset=b)
        t = torch.from_numpy(arr.astype(ndt, copy=True)).reshape(shape)
        if tdt == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[name] = t
    return out


def read_folder(folder):
    """Load model.safetensors, or all shards listed in model.safetensors.index.json."""
    idx = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f, object_pairs_hook=collections.OrderedDict)["weight_map"]
        files = []
        for fn in wm.values():
            if fn not in files:
                files.append(fn)
        out = collections.OrderedDict()
        for fn in files:
            part = read_file(os.path.join(folder, fn))
            for k, v in part.items():
                if wm.get(k) != fn:
                    raise ValueError(f"tensor {k} in {fn} but index says {wm.get(k)}")
                out[k] = v
        missing = [k for k in wm if k not in out]
        if missing:
            raise ValueError(f"tensors listed in the index but not found: {missing[:5]}")
        return out
    return read_file(os.path.join(folder, "model.safetensors"))


def write_file(path, tensors, metadata=None):
    header = collections.OrderedDict()
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name, t in tensors.items():
        b = tensor_bytes(t)
        header[name] = collections.OrderedDict(
            [("dtype", dtype_name(t)), ("shape", list(t.shape)), ("data_offsets", [off, off + len(b)])])
        off += len(b)
        blobs.append(b)
    hj = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def split_shards(names, sizes, n_shards):
    """Split an ordered list of tensors into n contiguous groups of roughly equal byte size."""
    total = sum(sizes)
    groups = [[] for _ in range(n_shards)]
    acc = 0
    for name, s in zip(names, sizes):
        g = min(n_shards - 1, int(acc * n_shards // max(total, 1)))
        groups[g].append(name)
        acc += s
    if any(not g for g in groups):
        raise ValueError("too few tensors for that many shards")
    return groups


def write_sharded(folder, tensors, n_shards, prefix="model", ext="safetensors", saver=None):
    """Write tensors into n_shards files + index. `saver(path, ordered_dict)` overrides the
    per-shard writer (used for the pytorch_model-*.bin variant). Returns the file names."""
    os.makedirs(folder, exist_ok=True)
    names = list(tensors.keys())
    sizes = [tensors[k].numel() * tensors[k].element_size() for k in names]
    groups = split_shards(names, sizes, n_shards)
    weight_map = collections.OrderedDict()
    files = []
    for i, g in enumerate(groups):
        fn = f"{prefix}-{i + 1:05d}-of-{n_shards:05d}.{ext}"
        part = collections.OrderedDict((k, tensors[k]) for k in g)
        path = os.path.join(folder, fn)
        if saver is None:
            write_file(path, part, metadata={"format": "pt"})
        else:
            saver(path, part)
        for k in g:
            weight_map[k] = fn
        files.append(fn)
    index = collections.OrderedDict(
        [("metadata", {"total_size": int(sum(sizes))}), ("weight_map", weight_map)])
    idx_name = f"{prefix}.{ext}.index.json"
    with open(os.path.join(folder, idx_name), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return files
