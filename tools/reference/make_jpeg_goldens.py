#!/usr/bin/env python3
"""JPEG variants and Pillow's decode of each (PIL .convert('RGB') bytes), for tests/vision/jpeg_test.cpp:
baseline 4:2:0, progressive, 4:4:4, greyscale and Adobe CMYK. Deterministic.

  /usr/bin/python3 tools/reference/make_jpeg_goldens.py   # writes tests/data/images/jpeg/
"""
import json
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "images", "jpeg")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((61, 83, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(base).resize((83, 61), Image.BILINEAR)
    variants = {
        "baseline": lambda p: im.save(p, quality=90),
        "progressive": lambda p: im.save(p, quality=75, progressive=True),
        "yuv444": lambda p: im.save(p, quality=95, subsampling=0),
        "grey": lambda p: im.convert("L").save(p, quality=85),
        "cmyk": lambda p: im.convert("CMYK").save(p, quality=85),
    }
    manifest = []
    for name, save in variants.items():
        path = os.path.join(OUT, name + ".jpg")
        save(path)
        dec = Image.open(path)
        mode = dec.mode
        rgb = dec.convert("RGB")
        with open(os.path.join(OUT, name + ".rgb"), "wb") as f:
            f.write(rgb.tobytes())
        manifest.append({"file": name + ".jpg", "rgb": name + ".rgb", "mode": mode,
                         "width": rgb.width, "height": rgb.height})
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "images": manifest}, f, indent=1)


if __name__ == "__main__":
    main()
