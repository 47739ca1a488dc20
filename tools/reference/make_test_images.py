#!/usr/bin/python3
"""Writes small deterministic test images to tests/data/images/ (see README.md).

All content is computed from integer formulas (no RNG, no fonts), so reruns give identical files
with the same Pillow/libpng/libwebp/libjpeg versions (Debian bookworm: Pillow 9.4).

  rgb_64x48.png        RGB, shapes over a gradient
  odd_37x23.png        RGB, odd sizes
  rgba_40x30.png       RGBA with varying alpha (convert('RGB') drops alpha, no compositing)
  gray_33x20.png       8-bit grayscale (L)
  palette_30x30.png    palette (P) image, 16 colours, no transparency
  rgb_45x31.bmp        24-bit BMP
  anim_24x18.gif       2-frame GIF; only the first frame is used
  lossless_32x24.webp  lossless WebP
  lossy_32x24.webp     lossy WebP (quality 80)
  photo_48x40.jpg      baseline JPEG (quality 90, 4:2:0); decoders differ, compare loosely
  corrupt.png          the first 60 bytes of rgb_64x48.png (truncated)
  not_an_image.png     plain text with a .png name
"""
import argparse
import os

from PIL import Image, ImageDraw


def gradient(w, h, mode="RGB"):
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = ((x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), ((x + y) * 7) % 256)
    return im


def shapes(im):
    d = ImageDraw.Draw(im)
    w, h = im.size
    d.rectangle([w // 8, h // 6, w // 2, h // 2], fill=(230, 30, 40))
    d.ellipse([w // 2, h // 3, w - 3, h - 2], fill=(20, 200, 60), outline=(255, 255, 255))
    d.line([0, h - 1, w - 1, 0], fill=(10, 10, 250), width=2)
    d.polygon([(3, h - 3), (w // 4, h // 2), (w // 3, h - 5)], fill=(250, 240, 20))
    return im


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/data/images"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    p = lambda n: os.path.join(out, n)

    rgb = shapes(gradient(64, 48))
    rgb.save(p("rgb_64x48.png"), optimize=False)

    odd = shapes(gradient(37, 23))
    odd.save(p("odd_37x23.png"))

    rgba = shapes(gradient(40, 30)).convert("RGBA")
    px = rgba.load()
    for y in range(30):
        for x in range(40):
            r, g, b, _ = px[x, y]
            px[x, y] = (r, g, b, (x * 6 + y * 3) % 256)
    rgba.save(p("rgba_40x30.png"))

    gray = Image.new("L", (33, 20))
    gp = gray.load()
    for y in range(20):
        for x in range(33):
            gp[x, y] = (x * 8 + (y // 4) * 40) % 256
    ImageDraw.Draw(gray).ellipse([5, 3, 20, 17], fill=250)
    gray.save(p("gray_33x20.png"))

    pal = Image.new("P", (30, 30))
    palette = []
    for i in range(16):
        palette += [(i * 53) % 256, (i * 97 + 40) % 256, (255 - i * 16) % 256]
    pal.putpalette(palette + [0] * (768 - len(palette)))
    pp = pal.load()
    for y in range(30):
        for x in range(30):
            pp[x, y] = ((x // 4) + (y // 5) * 3) % 16
    pal.save(p("palette_30x30.png"))

    shapes(gradient(45, 31)).save(p("rgb_45x31.bmp"))

    f0 = shapes(gradient(24, 18)).quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    f1 = gradient(24, 18).transpose(Image.Transpose.FLIP_LEFT_RIGHT).quantize(
        colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    f0.save(p("anim_24x18.gif"), save_all=True, append_images=[f1], duration=100, loop=0)

    web = shapes(gradient(32, 24))
    web.save(p("lossless_32x24.webp"), lossless=True, quality=100, method=4)
    web.save(p("lossy_32x24.webp"), lossless=False, quality=80, method=4)

    shapes(gradient(48, 40)).save(p("photo_48x40.jpg"), quality=90, subsampling=2, optimize=False,
                                   progressive=False)

    with open(p("rgb_64x48.png"), "rb") as f:
        data = f.read()
    with open(p("corrupt.png"), "wb") as f:
        f.write(data[:60])
    with open(p("not_an_image.png"), "w") as f:
        f.write("this is not an image, just text with a .png name\n")
    for n in sorted(os.listdir(out)):
        print(f"{n}: {os.path.getsize(p(n))} bytes")


if __name__ == "__main__":
    main()
