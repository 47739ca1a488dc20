#!/usr/bin/env python3
"""Compares the intermediates that `xc2 logits --dump DIR` wrote with the reference's, stage by stage and
layer by layer: the same chat prompt (template, system text, image placement and BOS rules as `xc2 logits`)
runs through xc2_ref.Model in float64, and each DIR/NAME.npy / DIR/layerNN.NAME.npy is compared with the
reference's tensor of the same name (relative L2). Prints one line per tensor, worst first, and exits 1 when
any exceeds --tol (default 1e-5, the parity bar of the f32 CPU backend).

  build/xc2 logits -m tests/data/models/tiny-a --device cpu -i examples/shapes-1.png "Describe it." --dump /tmp/d
  /usr/bin/python3 tools/reference/compare_dump.py --model tests/data/models/tiny-a --dump /tmp/d \\
      --image examples/shapes-1.png "Describe it."
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xc2_ref  # noqa: E402


def file_name(name, layer):
    return (f"layer{layer:02d}." if layer >= 0 else "") + name + ".npy"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dump", required=True, help="the folder `xc2 logits --dump` wrote")
    ap.add_argument("--image", action="append", default=[])
    ap.add_argument("--system", default=None, help="system text (default: the upstream meta instruction)")
    ap.add_argument("--no-system", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--show", type=int, default=20, help="lines to print (worst first); 0: all")
    ap.add_argument("query")
    a = ap.parse_args()

    model = xc2_ref.Model(a.model, dtype=torch.float64)
    system = "" if a.no_system else (a.system if a.system is not None else xc2_ref.DEFAULT_META)
    prompt = model.prepare_chat(a.query, a.image, system=system)
    ref = {}

    def keep(name, layer, x):
        ref[file_name(name, layer)] = x.detach().to(torch.float64).numpy().copy()

    model.forward(prompt, a.image, dump=keep)

    rows, missing = [], []
    for fname, want in ref.items():
        path = os.path.join(a.dump, fname)
        if not os.path.exists(path):
            missing.append(fname)
            continue
        got = np.load(path).astype(np.float64)
        if got.shape != want.shape:
            rows.append((float("inf"), fname, f"shape {got.shape} vs reference {want.shape}"))
            continue
        err = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
        rows.append((err, fname, ""))
    extra = sorted(set(f for f in os.listdir(a.dump) if f.endswith(".npy")) - set(ref))
    rows.sort(key=lambda r: -r[0])
    for err, fname, note in rows[: a.show or len(rows)]:
        print(f"{err:10.3e}  {fname}  {note}".rstrip())
    bad = [r for r in rows if not r[0] <= a.tol]
    print(f"{len(rows)} tensors compared, {len(bad)} above {a.tol:g}; missing in the dump: {len(missing)}; "
          f"not in the reference: {len(extra)}")
    for f in missing:
        print(f"missing: {f}")
    for f in extra:
        print(f"not in the reference: {f}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
