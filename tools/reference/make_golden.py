#!/usr/bin/python3
"""Writes the golden files under tests/data/golden/ (see README.md).

  images/    decoded and Pillow-resized RGB8 bytes for tests/data/images/* + manifest.json,
             and normalized fp32 pixel tensors (preprocess.safetensors)
  <model>/   tokenizer.json, prompts.json, case_<name>.{json,safetensors}

Usage: make_golden.py [--what images,tokenizer,prompts,forward] [--models tiny-a,tiny-b]
"""
import argparse
import collections
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
DATA = os.path.join(ROOT, "tests/data")
IMAGES = os.path.join(DATA, "images")
GOLDEN = os.path.join(DATA, "golden")
MODELS = os.path.join(DATA, "models")


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------------
# images

# every decodable image gets: decoded bytes + these resizes
IMG_SIZES_ALL = [(28, 28), (56, 56), (50, 30)]
# large squash sizes only for a few images, to keep the repository small
IMG_SIZES_EXTRA = {
    "rgb_64x48.png": [(224, 224), (490, 490)],
    "odd_37x23.png": [(224, 224), (490, 490)],
    "rgba_40x30.png": [(224, 224)],
    "gray_33x20.png": [(224, 224)],
}
IMG_NOTES = {
    "photo_48x40.jpg": "JPEG: decoders differ (libjpeg-turbo here); compare loosely",
    "anim_24x18.gif": "2-frame GIF; first frame only",
    "rgba_40x30.png": "alpha dropped by convert('RGB') (no compositing)",
    "corrupt.png": "truncated PNG: must fail to decode",
    "not_an_image.png": "text file: must fail to decode",
}


def make_images():
    import numpy as np
    import torch
    from PIL import Image
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode
    import safetensors_io as sio
    import xc2_ref

    out = os.path.join(GOLDEN, "images")
    os.makedirs(out, exist_ok=True)
    manifest = collections.OrderedDict()
    manifest["note"] = ("RGB8 raw HWC bytes. <stem>.rgb = PIL Image.open(p).convert('RGB') (unresized); "
                        "<stem>_<W>x<H>.rgb = that image resized by torchvision Resize((H,W), BICUBIC) on the "
                        "PIL image (= PIL resize BICUBIC). preprocess.safetensors: ToTensor+Normalize(CLIP) "
                        "fp32 [3,S,S] for the listed images.")
    entries = []
    pre = collections.OrderedDict()
    for fn in sorted(os.listdir(IMAGES)):
        path = os.path.join(IMAGES, fn)
        stem = os.path.splitext(fn)[0]
        e = collections.OrderedDict([("file", "images/" + fn), ("stem", stem)])
        try:
            with Image.open(path) as im0:
                mode = im0.mode
                im = im0.convert("RGB")
        except Exception as ex:  # noqa: BLE001
            e["decodable"] = False
            e["error"] = type(ex).__name__
            if fn in IMG_NOTES:
                e["note"] = IMG_NOTES[fn]
            entries.append(e)
            continue
        e["decodable"] = True
        e["mode"] = mode
        e["width"], e["height"] = im.size
        raw = im.tobytes()
        with open(os.path.join(out, stem + ".rgb"), "wb") as f:
            f.write(raw)
        e["rgb"] = stem + ".rgb"
        e["sha256"] = hashlib.sha256(raw).hexdigest()
        if fn in IMG_NOTES:
            e["note"] = IMG_NOTES[fn]
        if fn.endswith(".jpg"):
            e["loose"] = True
        rs = []
        for (w, h) in IMG_SIZES_ALL + IMG_SIZES_EXTRA.get(fn, []):
            r = T.Resize((h, w), interpolation=InterpolationMode.BICUBIC)(im)
            direct = im.resize((w, h), Image.BICUBIC)
            assert r.tobytes() == direct.tobytes(), "torchvision Resize != PIL resize"
            name = f"{stem}_{w}x{h}.rgb"
            with open(os.path.join(out, name), "wb") as f:
                f.write(r.tobytes())
            rs.append(collections.OrderedDict([("width", w), ("height", h), ("rgb", name)]))
            if w == h and fn in ("rgb_64x48.png", "odd_37x23.png") and w in (28, 56):
                t = xc2_ref.preprocess_image(path, w)
                # cross-check against the plain numpy formula of spec 8.5
                a = np.frombuffer(r.tobytes(), dtype=np.uint8).reshape(h, w, 3).transpose(2, 0, 1)
                a = torch.from_numpy(a.astype(np.float32)).div(255)
                m = torch.tensor(xc2_ref.CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
                s = torch.tensor(xc2_ref.CLIP_STD, dtype=torch.float32).view(3, 1, 1)
                assert torch.equal((a - m) / s, t)
                pre[f"{stem}_{w}"] = t
        e["resized"] = rs
        entries.append(e)
    manifest["images"] = entries
    manifest["preprocess"] = collections.OrderedDict(
        [("file", "preprocess.safetensors"),
         ("tensors", collections.OrderedDict((k, {"image": k.rsplit("_", 1)[0], "size": int(k.rsplit("_", 1)[1])})
                                             for k in pre))])
    sio.write_file(os.path.join(out, "preprocess.safetensors"), pre)
    dump_json(os.path.join(out, "manifest.json"), manifest)
    print(f"images: {len(entries)} entries -> {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="images,tokenizer,prompts,forward")
    ap.add_argument("--models", default="tiny-a,tiny-b")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    what = args.what.split(",")
    models = args.models.split(",")
    if "images" in what:
        make_images()
    if "tokenizer" in what:
        for m in models:
            make_tokenizer_golden(m)
    if "prompts" in what:
        for m in models:
            make_prompts_golden(m)
    if "forward" in what:
        for m in models:
            make_forward_golden(m)


if __name__ == "__main__":
    main()
