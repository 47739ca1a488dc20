#!/usr/bin/python3
"""Writes the golden files under tests/data/golden/ (see README.md).

  images/    decoded and Pillow-resized RGB8 bytes for tests/data/images/* + manifest.json,
             and normalized fp32 pixel tensors (preprocess.safetensors)
  <model>/   tokenizer.json, prompts.json, case_<name>.{json,safetensors}

Usage: make_golden.py [--what images,tokenizer,prompts,forward] [--models tiny-a,tiny-b]
       make_golden.py --what forward --models quant   (the GPTQ checkpoints of make_tiny_quant.py)
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


# --------------------------------------------------------------------------------------------
# tokenizer

def tokenizer_strings():
    import xc2_ref
    meta = xc2_ref.DEFAULT_META
    return [
        "", " ", "   ", "\t", "\n", "\n\n\n", "Hello world", "Hello, world!", " leading space",
        "trailing space ", "  two leading", "multiple   spaces   inside", "tab\tseparated\tvalues",
        "line one\nline two\n", "\r\n windows newline\r\n", "    four spaces indent",
        "The quick brown fox jumps over the lazy dog.", "ALL CAPS TEXT", "don't, won't, I'm, it's",
        "Hello , world . ok ? yes !", "1234567890", "3.14159 and 2024", "a" * 40,
        "请详细描述这张图片。", "今天天气很好，我们一起去公园散步吧。", "浦语·灵笔",
        "上海人工智能实验室 (Shanghai AI Laboratory)", "中英文混合 mixed 文本 text", "日本語のテキスト",
        "I love pizza 🍕 and coffee ☕", "🦜🦩", "😂", "❤️", "👍🏽", "Ж д λ α β γ", "쀍 한국어", "مرحبا",
        "é è ñ ü", "e\u0301", "\u00a0nbsp", "zero\u200bwidth", "©®™ §¶", "\x00\x01 control",
        "[UNUSED_TOKEN_146]", "[UNUSED_TOKEN_145]", "[UNUSED_TOKEN_146]user\nHi[UNUSED_TOKEN_145]\n",
        "[UNUSED_TOKEN_146]system\n" + meta + "[UNUSED_TOKEN_145]\n",
        "Please describe this image in detail.[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n",
        "x[UNUSED_TOKEN_146]y", "[UNUSED_TOKEN_146", "[UNUSED_TOKEN_147]", "[unused_token_146]",
        "<s>", "</s>", "<unk>", "<s>[UNUSED_TOKEN_146]user\n", "hello <s> world", "hello<s>world",
        "a </s> b <unk> c", "<s><s></s>", "  <s>  ", "<S> not special", "<s", "s>", "< s>",
        "<ImageHere>Please describe this image in detail.", "<image> <image>", "<Seg0> 段落 <Seg12>",
        "给定文章\"<Seg0> 你好\n\" 根据上述文章，选择适合插入图像的6行",
        "def main(argv):\n    return 0\n", "x = [a + b for a, b in zip(xs, ys)]", '{"key": [1, 2, 3]}',
    ]


NO_BOS = {"", " ", "Hello world", " leading space", "请详细描述这张图片。", "[UNUSED_TOKEN_146]",
          "<s>", "hello <s> world", "🦜🦩", "\n", "tab\tseparated\tvalues", "<s>[UNUSED_TOKEN_146]user\n",
          "Please describe this image in detail.[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n",
          "a </s> b <unk> c", "    four spaces indent"}


def make_tokenizer_golden(model):
    import xc2_ref
    folder = os.path.join(MODELS, model)
    tok = xc2_ref.Tokenizer(os.path.join(folder, "tokenizer.model"))
    sp = tok.sp
    enc = []
    for s in tokenizer_strings():
        enc.append(collections.OrderedDict([("text", s), ("add_bos", True), ("ids", tok.encode(s, True))]))
    for s in tokenizer_strings():
        if s in NO_BOS:
            enc.append(collections.OrderedDict([("text", s), ("add_bos", False), ("ids", tok.encode(s, False))]))
    assert len(enc) >= 60
    # decode cases
    dec_ids = []
    for s in ["Hello world", "Hello , world . ok ? yes ! I 'm sure it 's", "请详细描述这张图片。", " leading",
              "multiple   spaces\n\ttab", "<s>x</s>y<unk>z", "Answer.[UNUSED_TOKEN_145]\nrest",
              "🦜🦩 parrot", "中英文混合 mixed"]:
        dec_ids.append(tok.encode(s, True))
    parrot = tok.encode("🦜", False)
    bytes_ids = [i for i in parrot if sp.id_to_piece(i).startswith("<0x")]
    assert len(bytes_ids) == 4, [sp.id_to_piece(i) for i in parrot]
    dec_ids += [bytes_ids[:2], bytes_ids[2:], bytes_ids[:3] + tok.encode("ok", False), bytes_ids[1:],
                tok.encode("Ж", False)[:1], [], [1, 2], [0], [1, 1, tok.piece_to_id("[UNUSED_TOKEN_146]")],
                [tok.piece_to_id("▁")] if tok.piece_to_id("▁") != 0 else [5]]
    # a fixed pseudo-random id sequence over the whole vocabulary (LCG, no RNG dependency)
    x, ids = 12345, []
    for _ in range(40):
        x = (1103515245 * x + 12345) % (2 ** 31)
        ids.append(x % tok.vocab_size)
    dec_ids.append(ids)
    dec = []
    for ids in dec_ids:
        e = collections.OrderedDict([("ids", ids), ("skip_special_tokens", True),
                                     ("text", tok.decode(ids, True, clean_up=True))])
        raw = tok.decode(ids, True, clean_up=False)
        if raw != e["text"]:
            e["text_without_cleanup"] = raw
        dec.append(e)
    pieces = collections.OrderedDict()
    for p in ["[UNUSED_TOKEN_145]", "[UNUSED_TOKEN_146]", "<s>", "</s>", "<unk>", "<0x0A>", "<0x00>", "<0xFF>"]:
        pieces[p] = tok.piece_to_id(p)
    out = collections.OrderedDict([
        ("note", xc2_ref.Tokenizer.__doc__.strip()),
        ("tokenizer", f"models/{model}/tokenizer.model"),
        ("vocab_size", tok.vocab_size),
        ("add_dummy_prefix", sp.encode("a", out_type=str)[0].startswith("\u2581")),
        ("pieces", pieces),
        ("encode", enc),
        ("decode", dec),
    ])
    d = os.path.join(GOLDEN, model)
    os.makedirs(d, exist_ok=True)
    dump_json(os.path.join(d, "tokenizer.json"), out)
    print(f"{model}: tokenizer.json: {len(enc)} encode, {len(dec)} decode cases")


# --------------------------------------------------------------------------------------------
# prompts

IMG_A = "images/rgb_64x48.png"
IMG_B = "images/odd_37x23.png"
IMG_C = "images/gray_33x20.png"


def prompt_specs():
    """(name, path, kwargs). chat_*: query/system/history; compose: instruction/with_meta/assistant_prefix."""
    import xc2_ref
    M = xc2_ref.DEFAULT_META
    return [
        ("text_default", "chat_text", dict(query="Hello! Who are you?", system=M, n_images=0)),
        ("text_nosys", "chat_text", dict(query="What is 2+2?", system="", n_images=0)),
        ("text_history", "chat_text", dict(query="Tell me a joke.", system=M, n_images=0,
                                           history=[["Hi", "Hello! How can I help?"],
                                                    ["你好", "你好！有什么可以帮你的？"]])),
        ("text_literal_s", "chat_text", dict(query="say <s> and </s> please", system="", n_images=0)),
        ("img1_marker", "chat_image", dict(query="<ImageHere>Please describe this image in detail.", system=M,
                                           n_images=1)),
        ("img1_nomarker", "chat_image", dict(query="Please describe this image in detail.", system=M, n_images=1)),
        ("img2_nomarker", "chat_image", dict(
            query="please write an article based on the images. Title: my favorite animal.", system=M,
            n_images=2)),
        ("img2_markers", "chat_image", dict(query="Compare <ImageHere> with<ImageHere>, please.", system="",
                                            n_images=2)),
        ("img2_adjacent", "chat_image", dict(query="<ImageHere><ImageHere>Two images.", system="", n_images=2)),
        ("marker_only", "chat_image", dict(query="<ImageHere>", system="", n_images=1)),
        ("img1_nosys", "chat_image", dict(query="What is in the picture?", system="", n_images=1)),
        ("img1_history", "chat_image", dict(query="<ImageHere>And this one?", system=M, n_images=1,
                                            history=[["Hi", "Hello!"]])),
        ("zh", "chat_image", dict(query="请详细描述这张图片。", system=M, n_images=1)),
        ("compose_0", "compose", dict(instruction="写一篇关于大熊猫的文章。", n_images=0)),
        ("compose_1", "compose", dict(instruction="写一篇关于大熊猫的文章。", n_images=1)),
        ("compose_2", "compose", dict(instruction="<image> <image>根据图片写一篇文章。", n_images=2,
                                      assistant_prefix="标题是\"")),
        ("compose_select", "compose", dict(
            instruction="根据给定上下文和候选图像，选择合适的配图：第一段<image>第二段候选图像包括: "
                        "A.<image>\nB.<image>", n_images=3, assistant_prefix="最合适的图是")),
        ("compose_meta", "compose", dict(instruction="缩写以下段落：今天天气很好。", n_images=0, with_meta=True)),
    ]


def build_prompt(tok, path, kw, max_length, n_visual):
    import xc2_ref
    if path == "chat_text":
        return xc2_ref.build_chat_text(tok, kw["query"], kw.get("history", ()), kw["system"])
    if path == "chat_image":
        return xc2_ref.build_chat_image(tok, kw["query"], kw["n_images"], kw.get("history", ()), kw["system"],
                                        max_length, n_visual)
    return xc2_ref.build_compose(tok, kw["instruction"], kw["n_images"], kw.get("with_meta", False),
                                 kw.get("assistant_prefix", ""), max_length, n_visual)


def make_prompts_golden(model):
    import xc2_ref
    folder = os.path.join(MODELS, model)
    cfg = xc2_ref.load_config(folder)
    tok = xc2_ref.Tokenizer(os.path.join(folder, "tokenizer.model"))
    n_visual = cfg.grid ** 2
    cases = []
    for name, path, kw in prompt_specs():
        p = build_prompt(tok, path, kw, cfg.max_length, n_visual)
        toks, spans = p.positions(n_visual)
        e = collections.OrderedDict([("name", name), ("path", path)])
        if path == "compose":
            e["system"] = xc2_ref.COMPOSE_META if kw.get("with_meta", False) else ""
            e["history"] = []
            e["query"] = kw["instruction"]
            e["instruction"] = kw["instruction"]
            e["with_meta"] = kw.get("with_meta", False)
            e["assistant_prefix"] = kw.get("assistant_prefix", "")
        else:
            e["system"] = kw["system"]
            e["history"] = kw.get("history", [])
            e["query"] = kw["query"]
        e["n_images"] = kw["n_images"]
        e["text"] = p.text
        e["segments"] = p.segments
        e["tokens"] = toks
        e["image_spans"] = spans
        cases.append(e)
    # checks of the documented rules
    by = {c["name"]: c for c in cases}
    im_start = tok.piece_to_id("[UNUSED_TOKEN_146]")
    t = by["text_default"]["tokens"]
    assert t[:2] == [1, 1] and im_start in t[2:4], t[:4]
    assert all(s["ids"][0] == 1 for c in cases if c["path"] == "chat_image" for s in c["segments"] if "ids" in s)
    assert [("ids" in s) for s in by["img2_adjacent"]["segments"]] == [True, False, False, True]
    for c in cases:
        if c["path"] == "compose":
            firsts = [s["ids"][0] for s in c["segments"] if "ids" in s]
            assert firsts[0] == 1 and 1 not in firsts[1:]
    out = collections.OrderedDict([
        ("note", "Prompt assembly (spec 10, 12) with the tiny tokenizer. chat_image: split on <ImageHere>, BOS on "
                 "every non-empty part, image k after part k. chat_text: text = '<s>' + template, tokenized with "
                 "BOS -> [1, 1, ...]. compose: split on <image>, BOS on the first non-empty part only. xc2 marker "
                 "rule: no marker in query -> one marker per image at the start of the query joined by single "
                 "spaces (compose: ('<image> '*n).strip() prepended). tokens: -1 at image rows; image_spans: "
                 "[start, length]. Truncation to config max_length applies to chat_image and compose."),
        ("n_visual", n_visual),
        ("max_length", cfg.max_length),
        ("cases", cases),
    ])
    d = os.path.join(GOLDEN, model)
    os.makedirs(d, exist_ok=True)
    dump_json(os.path.join(d, "prompts.json"), out)
    print(f"{model}: prompts.json: {len(cases)} cases")


# --------------------------------------------------------------------------------------------
# forward + greedy cases

FORWARD_CASES = {
    "tiny-a": [
        ("text", "chat_text", dict(query="How many animals are there in this photo?", system="default",
                                   images=[])),
        ("img1", "chat_image", dict(query="Please describe this image in detail.", system="default",
                                    images=[IMG_A])),
        ("img2", "chat_image", dict(query="Compare <ImageHere> with<ImageHere>, please.", system="",
                                    images=[IMG_A, IMG_B])),
        ("zh", "chat_image", dict(query="请详细描述这张图片。", system="", images=[IMG_C])),
    ],
    "tiny-b": [
        ("text", "chat_text", dict(query="Please describe this image in detail.", system="default", images=[])),
        ("img1", "chat_image", dict(query="Write a short poem about the sea.", system="", images=[IMG_A])),
        ("img2", "chat_image", dict(query="Tell me about these two pictures.", system="", images=[IMG_A, IMG_B])),
        ("ntk", "chat_image", dict(query="What is in the picture?", system="default", images=[IMG_B])),
    ],
}

# The GPTQ checkpoints of make_tiny_quant.py: the reference dequantizes them, then runs as usual.
QUANT_MODELS = ("tiny-q4-g32", "tiny-q4-g32-act", "tiny-q4-pc-sym", "tiny-q8-g32-act", "tiny-q8-pc", "tiny-q4-g32-h8")
for _q in QUANT_MODELS:
    FORWARD_CASES[_q] = [
        ("text", "chat_text", dict(query="How many animals are there in this photo?", system="default", images=[])),
        ("img1", "chat_image", dict(query="Please describe this image in detail.", system="", images=[IMG_A])),
    ]

MAX_NEW = 64
PENALTY = 1.005


def _stats(a, b):
    """a: float32 run, b: float64 reference. max_abs, max |ref|, nmse = sum((a-b)^2) / sum(b^2)."""
    a, b = a.double(), b.double()
    d = (a - b).abs()
    return collections.OrderedDict([("max_abs", float(d.max())), ("ref_max_abs", float(b.abs().max())),
                                    ("nmse", float((d * d).sum() / (b * b).sum()))])


def make_forward_golden(model):
    import torch
    import safetensors_io as sio
    import xc2_ref
    folder = os.path.join(MODELS, model)
    m64 = xc2_ref.Model(folder, dtype=torch.float64)
    m32 = xc2_ref.Model(folder, dtype=torch.float32, state_dict=m64.storage)
    cfg = m64.cfg
    d = os.path.join(GOLDEN, model)
    os.makedirs(d, exist_ok=True)
    for name, path, kw in FORWARD_CASES[model]:
        system = xc2_ref.DEFAULT_META if kw["system"] == "default" else kw["system"]
        images = [os.path.join(DATA, p) for p in kw["images"]]
        prompt = m64.prepare_chat(kw["query"], images, system=system)
        assert prompt.path == path
        pixels = m64.pixels(images)
        out = m64.forward(prompt, pixels=pixels)
        out32 = m32.forward(prompt, pixels=pixels)
        g = m64.generate(prompt, pixels=pixels, max_new_tokens=MAX_NEW, repetition_penalty=PENALTY)
        gi = m64.generate(prompt, pixels=pixels, max_new_tokens=MAX_NEW, repetition_penalty=PENALTY,
                          ignore_eos=True)
        assert len(gi["tokens"]) == MAX_NEW and gi["tokens"][:len(g["tokens"])] == g["tokens"]
        min_margin = min(gi["margins"])
        T = out["h0"].shape[0]
        crosses = T + MAX_NEW > cfg.max_position_embeddings
        gr = m64.generate(prompt, pixels=pixels, max_new_tokens=MAX_NEW, repetition_penalty=PENALTY,
                          ignore_eos=True, use_cache=False)
        if not crosses:
            assert gr["tokens"] == gi["tokens"], "KV cache vs recompute differ without dynamic NTK"
        # f32 greedy with the same procedure: must agree given the margins
        g32 = m32.generate(prompt, pixels=pixels, max_new_tokens=MAX_NEW, repetition_penalty=PENALTY,
                           ignore_eos=True)
        assert g32["tokens"] == gi["tokens"], f"{model}/{name}: f32 greedy differs from f64"
        tensors = collections.OrderedDict()
        if prompt.n_images:
            tensors["pixels"] = pixels.float()
            tensors["vit_out"] = out["vit_out"].float()
            tensors["proj_out"] = out["proj_out"].float()
        for i, h in enumerate(out["hidden"]):
            tensors[f"hidden_{i}"] = h.float()
        tensors["logits"] = out["logits"].float()
        tensors["logits_f32"] = out32["logits"].float()
        noise = collections.OrderedDict()
        for k in ("vit_out", "proj_out"):
            if k in out:
                noise[k] = _stats(out32[k], out[k])
        for i in range(len(out["hidden"])):
            noise[f"hidden_{i}"] = _stats(out32["hidden"][i], out["hidden"][i])
        noise["logits"] = _stats(out32["logits"], out["logits"])
        toks, spans = out["tokens"], out["spans"]
        j = collections.OrderedDict([
            ("name", name), ("model", f"models/{model}"), ("path", path),
            ("query", kw["query"]), ("system", system), ("history", []),
            ("images", kw["images"]), ("img_size", cfg.img_size), ("n_visual", m64.n_visual),
            ("text", prompt.text), ("segments", prompt.segments), ("tokens", toks), ("image_spans", spans),
            ("n_positions", T),
            ("tensors", "case_%s.safetensors: pixels [N,3,S,S], vit_out [N,g2,Dv], proj_out [N,g2,D], hidden_0 "
                        "(input embeddings) .. hidden_L (after layer L, before the final norm) [T,D], logits [T,V] "
                        "(float64 reference stored as F32), logits_f32 (the same forward computed in float32)"
                        % name),
            ("f32_vs_f64", noise),
            ("greedy", collections.OrderedDict([
                ("max_new_tokens", MAX_NEW), ("repetition_penalty", PENALTY),
                ("penalty_includes_prompt", path == "chat_text"),
                ("stop_ids", m64.stop_ids()),
                ("tokens", g["tokens"]), ("text", g["text"]),
                ("tokens_ignore_eos", gi["tokens"]),
                ("min_margin", min_margin),
                ("margins", [round(x, 6) for x in gi["margins"]]),
                ("rope_decode", "kv_cache"),
            ])),
        ])
        if crosses:
            j["greedy"]["dynamic_ntk_note"] = (
                "prompt+generation exceeds max_position_embeddings: tokens use HF KV-cache semantics (each new "
                "position p is rotated with the NTK base for kv_len = p+1; cached keys keep their rotation). "
                "tokens_ignore_eos_recompute: recomputing the whole sequence each step instead.")
            j["greedy"]["tokens_ignore_eos_recompute"] = gr["tokens"]
        sio.write_file(os.path.join(d, f"case_{name}.safetensors"), tensors)
        dump_json(os.path.join(d, f"case_{name}.json"), j)
        nstop = len(g["tokens"])
        print(f"{model}/{name}: T={T} stop_len={nstop} min_margin={min_margin:.5f} "
              f"logits f32-f64 max_abs={noise['logits']['max_abs']:.2e} "
              f"{'(dynamic NTK; recompute ' + ('same' if gr['tokens'] == gi['tokens'] else 'differs') + ')' if crosses else ''}")
        assert min_margin > 1e-3, f"{model}/{name}: min margin {min_margin} too small; pick another prompt"
    # PLoRA checks: zeroed Plora tensors leave the text-only logits unchanged (bit for bit) and change the
    # image-path logits
    mz = xc2_ref.Model(folder, dtype=torch.float64, zero_plora=True)
    for name, path, kw in FORWARD_CASES[model]:
        system = xc2_ref.DEFAULT_META if kw["system"] == "default" else kw["system"]
        images = [os.path.join(DATA, p) for p in kw["images"]]
        prompt = m64.prepare_chat(kw["query"], images, system=system)
        a = m64.forward(prompt, images)["logits"]
        b = mz.forward(prompt, images)["logits"]
        if path == "chat_text":
            assert torch.equal(a, b), "PLoRA changed text-only logits"
        else:
            diff = float((a - b).abs().max())
            assert diff > 0.1, diff
            print(f"{model}/{name}: PLoRA effect on logits max_abs={diff:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="images,tokenizer,prompts,forward")
    ap.add_argument("--models", default="tiny-a,tiny-b")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    what = args.what.split(",")
    models = list(QUANT_MODELS) if args.models == "quant" else args.models.split(",")
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
