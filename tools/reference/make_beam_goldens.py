#!/usr/bin/env python3
"""Beam-search goldens: tests/data/golden/<model>/beams.json, from xc2_ref.Model.beam_search (float64) on the
prompts of the forward goldens (case_<name>.json): N = 2, 3 and 5 beams, with and without a strong repetition
penalty, another length penalty, and a case where an extra stop id (one the 3-beam answer contains) ends some
beams early. Each entry: case, num_beams, repetition_penalty, length_penalty, max_new_tokens, extra_stops,
tokens (the answer without its stop token), stop (the stop id or null), score.

    make_beam_goldens.py            tiny-a and tiny-b
    make_beam_goldens.py --demo     tests/data/golden/xc2-shapes/beams.json: the bundled demo model on the
                                    README's command (examples/shapes-1.png, "Describe the picture.", N = 3 and 5);
                                    run again whenever models/xc2-shapes changes
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import xc2_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "tests/data")
GOLDEN = os.path.join(DATA, "golden")
CASES = {"tiny-a": ["img1", "text"], "tiny-b": ["text", "img1"]}
MAX_NEW = 20


def main():
    torch.set_num_threads(2)
    for model_name, cases in CASES.items():
        model = xc2_ref.Model(os.path.join(DATA, "models", model_name), dtype=torch.float64)
        out = []
        for case in cases:
            with open(os.path.join(GOLDEN, model_name, f"case_{case}.json")) as f:
                c = json.load(f)
            system = c["system"]
            images = [os.path.join(DATA, p) for p in c["images"]]
            prompt = model.prepare_chat(c["query"], images, system=system)
            assert prompt.path == c["path"]
            pixels = model.pixels(images) if images else None
            runs = [(n, 1.005, 1.0, []) for n in (2, 3, 5)] + [(3, 1.5, 1.0, []), (3, 1.005, 0.5, [])]
            first = model.beam_search(prompt, pixels=pixels, num_beams=3, max_new_tokens=MAX_NEW)
            if len(first["tokens"]) > 2:
                runs.append((3, 1.005, 1.0, [first["tokens"][2]]))
            for n, pen, lp, extra in runs:
                r = model.beam_search(prompt, pixels=pixels, num_beams=n, max_new_tokens=MAX_NEW,
                                      repetition_penalty=pen, length_penalty=lp, extra_stops=extra)
                out.append({"case": case, "num_beams": n, "repetition_penalty": pen, "length_penalty": lp,
                            "max_new_tokens": MAX_NEW, "extra_stops": extra, "tokens": r["tokens"],
                            "stop": r["stop"], "score": r["score"]})
                print(model_name, case, n, pen, lp, extra, len(r["tokens"]), r["stop"], f"{r['score']:.6f}")
        with open(os.path.join(GOLDEN, model_name, "beams.json"), "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


def demo():
    torch.set_num_threads(2)
    model = xc2_ref.Model(os.path.join(ROOT, "models/xc2-shapes"), dtype=torch.float64)
    image = os.path.join(ROOT, "examples/shapes-1.png")
    query = "Describe the picture."
    prompt = model.prepare_chat(query, [image])
    pixels = model.pixels([image])
    out = []
    for n in (3, 5):
        r = model.beam_search(prompt, pixels=pixels, num_beams=n, max_new_tokens=64)
        out.append({"image": "examples/shapes-1.png", "query": query, "num_beams": n, "repetition_penalty": 1.005,
                    "length_penalty": 1.0, "max_new_tokens": 64, "tokens": r["tokens"], "stop": r["stop"],
                    "score": r["score"], "text": model.tok.decode(r["tokens"])})
        print("xc2-shapes", n, len(r["tokens"]), r["stop"], f"{r['score']:.6g}", out[-1]["text"])
    folder = os.path.join(GOLDEN, "xc2-shapes")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "beams.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    demo() if sys.argv[1:] == ["--demo"] else main()
