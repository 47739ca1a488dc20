"""GPTQ weights as AutoGPTQ and Transformers store them ("gptq" checkpoint format, the old packing),
written from the format description only (independent of the C++ code).

For a Linear(in=K, out=N) with `bits` in {4, 8}, p = 32 // bits values per int32 word:
  qweight  int32 [K / p, N]            value k of column n sits in word k // p at bits (k % p) * bits
                                       (little end first), i.e. packed along the input dimension
  qzeros   int32 [G, ceil(N / p)]      the stored zero of (group g, column n) in word n // p at bits
                                       (n % p) * bits: packed along the output dimension; AutoGPTQ stores
                                       zero - 1 and every reader adds the 1 back
  scales   fp16  [G, N]
  g_idx    int32 [K]                   group of input row k; without act-order g_idx[k] = k // group_size
  bias     fp16  [N]                   optional (no InternLM2 linear has one)
with G = 1 for group_size -1 (one group over K), else ceil(K / group_size). Dequantization:
  w[n, k] = scales[g, n] * (q[k, n] - (stored_zero[g, n] + 1)),  g = g_idx[k].
Act-order (desc_act) checkpoints permute the order in which GPTQ visits the input rows; g_idx then maps
row k to the group of its rank in that order, so a group's rows are scattered over K.

round_to_nearest() is xc2's RTN quantizer (`xc2 quantize`), the one the C++ must reproduce bit for bit:
per group (the rows k with g_idx[k] = g) and column n, in float32:
  xmin = min(0, min w), xmax = max(0, max w); sym: xmax = max(-xmin, xmax), xmin = -xmax when xmin < 0;
  a group of zeros gets xmin = -1, xmax = 1;
  scale = f16((xmax - xmin) / maxq), maxq = 2^bits - 1 (the smallest f16 subnormal if that rounds to 0);
  zero = 2^(bits-1) (sym) or clamp(round(-xmin / scale), 1, maxq) (asym; never 0, because a stored zero of
  -1 cannot be packed into `bits` bits);
  q = clamp(round(w / scale) + zero, 0, maxq)  (round half to even; w / scale an f32 division by the f16 scale).
"""
import re

import torch


def n_groups(k, group_size):
    return 1 if group_size == -1 else (k + group_size - 1) // group_size


def default_g_idx(k, group_size):
    gs = k if group_size == -1 else group_size
    return torch.arange(k, dtype=torch.int32) // gs


def act_order_g_idx(k, group_size, generator):
    """g_idx of an act-order checkpoint: rows visited in a random order, group = rank // group_size."""
    gs = k if group_size == -1 else group_size
    perm = torch.randperm(k, generator=generator)
    g = torch.empty(k, dtype=torch.int32)
    g[perm] = (torch.arange(k) // gs).to(torch.int32)
    return g


def _pack(vals, bits, dim):
    """vals: int64 tensor of values in [0, 2^bits); packs p = 32 // bits consecutive values along dim into an int32."""
    p = 32 // bits
    v = vals.to(torch.int64).movedim(dim, 0)
    assert v.shape[0] % p == 0 or dim == 1, "packed dimension must be a multiple of 32 / bits"
    pad = (-v.shape[0]) % p
    if pad:
        v = torch.cat([v, torch.zeros((pad,) + tuple(v.shape[1:]), dtype=torch.int64)])
    v = v.reshape((v.shape[0] // p, p) + tuple(v.shape[1:]))
    word = torch.zeros((v.shape[0],) + tuple(v.shape[2:]), dtype=torch.int64)
    for j in range(p):
        word |= v[:, j] << (bits * j)
    word = torch.where(word >= 2 ** 31, word - 2 ** 32, word)  # as int32 two's complement
    return word.to(torch.int32).movedim(0, dim).contiguous()


def _unpack(words, bits, dim, count):
    p = 32 // bits
    w = words.to(torch.int64).movedim(dim, 0) & 0xFFFFFFFF
    parts = [(w >> (bits * j)) & ((1 << bits) - 1) for j in range(p)]
    v = torch.stack(parts, 1).reshape((w.shape[0] * p,) + tuple(w.shape[1:]))[:count]
    return v.movedim(0, dim).contiguous()


def pack_qweight(q, bits):
    """q: [K, N] ints in [0, 2^bits) -> qweight int32 [K * bits / 32, N]."""
    return _pack(q, bits, 0)


def unpack_qweight(qweight, bits, k):
    return _unpack(qweight, bits, 0, k)


def pack_qzeros(zero, bits):
    """zero: [G, N] true zero points in [1, 2^bits] -> qzeros int32 [G, ceil(N * bits / 32)] holding zero - 1."""
    return _pack(zero.to(torch.int64) - 1, bits, 1)


def unpack_qzeros(qzeros, bits, n):
    """-> the true zero points [G, N] (stored value + 1)."""
    return _unpack(qzeros, bits, 1, n) + 1


def dequantize(t, bits):
    """t: dict with qweight, qzeros, scales, g_idx -> w [N, K] float64 (exact: f16 scale times a small integer)."""
    g_idx = t["g_idx"].long()
    k = g_idx.shape[0]
    n = t["scales"].shape[1]
    q = unpack_qweight(t["qweight"], bits, k).double()        # [K, N]
    z = unpack_qzeros(t["qzeros"], bits, n).double()          # [G, N]
    s = t["scales"].double()                                  # [G, N]
    w = s[g_idx] * (q - z[g_idx])                             # [K, N]
    return w.t().contiguous()


def round_to_nearest(w, bits, group_size, sym, g_idx=None):
    """w: [N, K] weight (any float dtype) -> dict(qweight, qzeros, scales, g_idx) as described above."""
    n, k = w.shape
    if g_idx is None:
        g_idx = default_g_idx(k, group_size)
    G = n_groups(k, group_size)
    maxq = 2 ** bits - 1
    x = w.float().t()                                         # [K, N] f32
    scales = torch.empty(G, n, dtype=torch.float16)
    zeros = torch.empty(G, n, dtype=torch.int64)
    q = torch.empty(k, n, dtype=torch.int64)
    for g in range(G):
        rows = (g_idx.long() == g).nonzero().flatten()
        if rows.numel() == 0:
            scales[g] = 1.0
            zeros[g] = 2 ** (bits - 1) if sym else 1
            continue
        xg = x[rows]
        zero_t = torch.zeros(n, dtype=torch.float32)
        xmin = torch.minimum(xg.min(0).values, zero_t)
        xmax = torch.maximum(xg.max(0).values, zero_t)
        if sym:
            xmax = torch.maximum(-xmin, xmax)
            xmin = torch.where(xmin < 0, -xmax, xmin)
        both0 = (xmin == 0) & (xmax == 0)
        xmin = torch.where(both0, torch.full_like(xmin, -1.0), xmin)
        xmax = torch.where(both0, torch.full_like(xmax, 1.0), xmax)
        s16 = ((xmax - xmin) / float(maxq)).to(torch.float16)
        s16 = torch.where(s16 == 0, torch.full_like(s16, 2.0 ** -24), s16)
        s = s16.float()
        if sym:
            z = torch.full((n,), 2 ** (bits - 1), dtype=torch.int64)
        else:
            z = torch.clamp(torch.round(-xmin / s), 1, maxq).to(torch.int64)
        q[rows] = torch.clamp(torch.round(xg / s).to(torch.int64) + z, 0, maxq)
        scales[g] = s16
        zeros[g] = z
    return {"qweight": pack_qweight(q, bits), "qzeros": pack_qzeros(zeros, bits), "scales": scales,
            "g_idx": g_idx.to(torch.int32)}


# Which linears are quantized in an InternLM-XComposer2 GPTQ checkpoint (the upstream 4-bit example's
# `inside_layer_modules`): the five decoder linears of every layer. PLoRA A/B, ViT, projector, embeddings,
# final norm and output head stay 16-bit.
QUANT_LINEARS = ("attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w3", "feed_forward.w2")


def quantized_bases(n_layers):
    return [f"model.layers.{i}.{lin}" for i in range(n_layers) for lin in QUANT_LINEARS]


def head_bits(qcfg):
    """The output head's bits when the settings quantize it ("lm_head": true, AutoGPTQ / GPTQModel), else None.
    GPTQModel's "dynamic" rules (module-name regex, re.match; "+:" or bare overrides, "-:" skips) can give it
    other bits."""
    if not qcfg.get("lm_head"):
        return None
    bits = qcfg["bits"]
    for key, rule in (qcfg.get("dynamic") or {}).items():
        skip = key.startswith("-:")
        pattern = key[2:] if skip or key.startswith("+:") else key
        if re.match(pattern, "output"):
            if skip:
                return None
            bits = rule.get("bits", bits)
    return bits


def dequantize_state_dict(sd, qcfg, n_layers):
    """A GPTQ state dict -> the same with every quantized linear as a float64 `.weight` (reference forward)."""
    out = dict(sd)
    bases = [(b, qcfg["bits"]) for b in quantized_bases(n_layers)]
    if head_bits(qcfg) is not None:
        bases.append(("output", head_bits(qcfg)))
    for base, bits in bases:
        t = {p: out.pop(f"{base}.{p}") for p in ("qweight", "qzeros", "scales", "g_idx")}
        out.pop(f"{base}.bias", None)
        out[f"{base}.weight"] = dequantize(t, bits)
    return out


def self_test():
    g = torch.Generator().manual_seed(7)
    for bits in (4, 8):
        for gs in (32, -1):
            for sym in (True, False):
                for act in (False, True):
                    w = torch.randn(40, 64, generator=g)
                    gi = act_order_g_idx(64, gs, g) if act else None
                    t = round_to_nearest(w, bits, gs, sym, gi)
                    assert t["qweight"].shape == (64 * bits // 32, 40)
                    assert t["qzeros"].shape == (n_groups(64, gs), (40 * bits + 31) // 32)
                    q = unpack_qweight(t["qweight"], bits, 64)
                    assert torch.equal(pack_qweight(q, bits), t["qweight"])
                    z = unpack_qzeros(t["qzeros"], bits, 40)
                    assert torch.equal(pack_qzeros(z, bits), t["qzeros"])
                    wd = dequantize(t, bits)
                    err = (wd - w.double()).abs().max() / w.abs().max()
                    assert err < (0.2 if bits == 4 else 0.02), (bits, gs, sym, act, float(err))
    # hand-checked packing: values 1..8 along K in one word
    q = torch.arange(1, 9).reshape(8, 1)
    assert int(pack_qweight(q, 4)[0, 0]) == 0x87654321 - 2 ** 32
    print("gptq.py self-test ok")


if __name__ == "__main__":
    self_test()
