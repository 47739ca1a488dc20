#!/usr/bin/env python3
"""Times the PyTorch reference (xc2_ref.Model) the way `xc2 bench` times the engine, for the ratio
`xc2 bench` prints: ViT + projector for one image, prefill of [BOS] + image rows + text rows (logits of
the last row only), then greedy decode steps over the KV cache. Prints one JSON line starting with
{"bench_ref". Run by `xc2 bench`; usable alone:

  /usr/bin/python3 tools/reference/bench_ref.py --model /tmp/xc2-bench/xc2-vl-7b-synthetic-L2-V2-490 \\
      --threads 2 --dtype bfloat16

--device cuda runs the same model on GPU 0 (weights moved there, torch's default device set to cuda, CUDA
synchronised before every clock read). Without a CUDA-enabled torch it prints {"bench_ref": false, ...} with the
reason and exits with status 3, so `xc2 bench` can say the reference could not run.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xc2_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--text-tokens", type=int, default=64)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    cuda = a.device == "cuda"
    if cuda:
        why = None
        if not torch.cuda.is_available():
            why = f"torch {torch.__version__} has no usable CUDA device (built with CUDA {torch.version.cuda})"
        elif not hasattr(torch, "set_default_device"):
            why = f"torch {torch.__version__} is too old for --device cuda (needs torch.set_default_device, 2.0+)"
        if why:
            print(json.dumps({"bench_ref": False, "error": why}), flush=True)
            sys.exit(3)
    m = xc2_ref.Model(a.model, dtype=dtype, tokenizer=False)  # fixed token ids: no tokenizer (nor sentencepiece)
    if cuda:
        m.w = {k: v.to("cuda") for k, v in m.w.items()}
        torch.set_default_device("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = m.cfg
    S = cfg.img_size
    g = torch.Generator().manual_seed(42)
    pixels = (torch.rand(1, 3, S, S, generator=g, device="cpu") * 2 - 1).to(a.device)
    text_ids = [1000 + (i * 7919) % 50000 for i in range(a.text_tokens)]
    vt = m.n_visual
    best = {"vit_ms": 1e30, "prefill_ms": 1e30, "decode_ms": 1e30}
    with torch.no_grad():
        for _ in range(a.repeats):
            sync()
            t0 = time.perf_counter()
            feats = m.project(m.vit(pixels))[0]
            sync()
            best["vit_ms"] = min(best["vit_ms"], (time.perf_counter() - t0) * 1e3)
            h = torch.cat([m.embed_tokens([1]), feats.to(dtype), m.embed_tokens(text_ids)], dim=0)
            mask = torch.zeros(h.shape[0], dtype=torch.bool)
            mask[1:1 + vt] = True
            cache = {"k": [], "v": [], "len": 0}
            sync()
            t0 = time.perf_counter()
            logits, _ = m.decoder(h, mask, cache, last_only=True)
            sync()
            best["prefill_ms"] = min(best["prefill_ms"], (time.perf_counter() - t0) * 1e3)
            nxt = 1000
            t0 = time.perf_counter()
            for _ in range(a.decode_steps):
                logits, _ = m.decoder(m.embed_tokens([nxt]), None, cache, last_only=True)
                nxt = int(torch.argmax(logits[-1]))
            best["decode_ms"] = min(best["decode_ms"], (time.perf_counter() - t0) * 1e3)
    out = {"bench_ref": True, "dtype": a.dtype, "device": a.device, "threads": torch.get_num_threads(),
           "positions": int(h.shape[0]), "vit_ms": best["vit_ms"], "prefill_ms": best["prefill_ms"],
           "decode_tok_s": a.decode_steps * 1e3 / best["decode_ms"]}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
