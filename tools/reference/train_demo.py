#!/usr/bin/python3
"""Trains models/xc2-shapes: a small model with the exact InternLM-XComposer2 architecture (CLIP ViT ->
MLP projector -> InternLM2 decoder with Partial LoRA on image rows) on generated pictures of simple
shapes, so that `xc2 chat --model models/xc2-shapes --image examples/shapes-1.png "Describe the picture."`
gives a real answer on a machine without the 17 GB weights.

    /usr/bin/python3 tools/reference/train_demo.py                  # stage 1 -> models/xc2-shapes/, examples/
    /usr/bin/python3 tools/reference/train_demo.py --init models/xc2-shapes --seed 2 --steps 3000 --lr 5e-4 \
        --warmup 100 --conv-rows 6 --greet-rows 2 --no-examples     # stage 2 (conversations), in place
    /usr/bin/python3 tools/reference/train_demo.py --init models/xc2-shapes --seed 6 --steps 3000 --lr 4e-4 \
        --warmup 100 --conv-rows 8 --greet-rows 2 --blind-rows 3 --named-p 0.6 --no-examples   # stage 3, in place
    /usr/bin/python3 tools/reference/train_demo.py --init models/xc2-shapes --seed 7 --steps 3000 --lr 4e-4 \
        --warmup 100 --conv-rows 8 --greet-rows 2 --blind-rows 5 --named-p 0.7 --no-examples   # stage 4, in place
    /usr/bin/python3 tools/reference/train_demo.py --init models/xc2-shapes --seed 8 --steps 1000 --lr 1.5e-4 \
        --warmup 50 --conv-rows 8 --greet-rows 2 --blind-rows 4 --named-p 0.7 --no-examples    # stage 5, in place
    /usr/bin/python3 tools/reference/train_demo.py --steps 200 --out /tmp/x --no-examples   # quick experiment

The bundled model is stage 1 (7000 steps of single-turn questions from scratch, ~1 h on 2 cores) followed by
stage 2 (3000 steps, ~31 min, from stage 1's stored bf16 weights and tokenizer): the same data plus, in 8 of the
12 picture rows of every step, conversations of 1-4 turns about the picture, 2 of those rows opening with a
greeting (see Packer.conversation_row for the token layout, which is exactly the sequence `xc2 chat` keeps in its
KV cache; tools/reference/eval_demo.py --multiturn checks it against xc2), then stage 3 (3000 steps, ~29 min,
from stage 2): 8 conversation rows, 3 of them "blind" (the picture's shapes removed, each conversation opened by the
scene's description as context and not as a target, so that the follow-ups can only be answered from the
description in the history; colour and position follow-ups about a named kind went 79.0% -> 81.2%), stage 4
(3000 steps, ~30 min, from stage 3): 5 of the 8 conversation rows blind and 70% of the later turns about a named
kind (follow-ups 85.5% -> 92.0%, named kind 81.2% -> 89.5%), and stage 5 (1000 steps, ~9 min, from stage 4): the
same mix with 4 blind rows at a lower rate (follow-ups 93.0%, named kind 91.2%, descriptions 418/419 objects).

Everything is deterministic given --seed (scenes, tokenizer, init, batches) on one toolchain (Debian
bookworm, torch 1.13, Pillow 9.4, sentencepiece 0.1.97) and one thread count (--threads, default 2).

Data. A scene has 1-3 shapes (circle, square, triangle, star) in 6 colours at distinct cells of a 3x3 grid
(no overlaps), varied sizes and jitter, on a light background whose hue never matches a shape. Each scene
comes with a caption and question/answer pairs (which shapes, what colour is the X, where is the X, how
many shapes). Prompts are built with xc2_ref's builders, i.e. exactly what `xc2 chat` sends: upstream
chat() template with the default system prompt, per-part BOS image layout (spec 10.3):
    [BOS] tok("[146]system\\n<meta>[145]\\n[146]user\\n")  [image rows]  [BOS] tok("<question>[145]\\n[146]assistant\\n")
and the text path (spec 10.4) `[1, 1, ...]` for a little text-only chat (greetings). The loss is on the answer
tokens and the closing [UNUSED_TOKEN_145], so greedy generation stops.

Training forward. `Trainer` below is a batched, differentiable copy of xc2_ref.Model's math (same weight
names, same packed wqkv split, RMSNorm with fp32 statistics, RoPE tables from xc2_ref.rope_tables, PLoRA
`y = xW^T + m*(xA^T)B^T*scale` with m = image rows, quick_gelu CLIP layers, exact-GELU projector). For speed
every question about one picture shares the prefix ([BOS] system, image rows): a row of the batch is
`prefix + continuation_1 + ... + continuation_K`, each continuation attends to the prefix and to itself and
starts at the same position (= exactly K separate chat() prompts). Matmuls run under bf16 autocast (oneDNN;
Debian's torch links the reference BLAS, whose fp32 GEMM is ~1 GFLOP/s); master weights, norms and softmax
are fp32. Rows are padded to a multiple of 16 positions (oneDNN builds kernels per shape).

Vision signal. With the LM loss alone a from-scratch ViT learns colours and positions quickly but shapes
(circle/square/triangle/star) very slowly, and the decoder's shape words stay at chance for thousands of
steps. A training-only auxiliary head (a linear layer, not saved) on the ViT output, mean-pooled over the
patches of each 3x3 grid cell (img_size 84, patch 14: 2x2 patches per cell), predicts the cell's colour and
its shape's kind; every step it sees the step's pictures plus --aux-images extra pictures that go through
the ViT only. The saved model is the plain XC2 architecture.

After training the weights are rounded to bf16 (the stored model), the fp32 forward of this file is checked
against xc2_ref.Model on the saved folder, and accuracy is measured with xc2_ref greedy generation on
held-out scenes (after rounding). tools/reference/eval_demo.py compares xc2 with the reference.
Logs: stdout and /tmp/xc2_shapes_train.log.
"""
import argparse
import collections
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time

# OpenMP threads that spin at barriers make 2-thread training ~5x slower as soon as anything else runs on
# the machine; sleeping threads do not change the results. Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io as sio  # noqa: E402
import xc2_ref  # noqa: E402
from make_tiny import make_config, spm_train, write_side_files  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "../.."))

# ============================================================================================
# scenes

KINDS = ["circle", "square", "triangle", "star"]
COLOURS = collections.OrderedDict([
    ("red", (215, 35, 35)), ("green", (35, 160, 55)), ("blue", (35, 75, 215)),
    ("yellow", (240, 205, 25)), ("purple", (135, 50, 175)), ("orange", (245, 135, 20)),
])
# light backgrounds: (rgb, hue family that must not be a shape colour of the scene)
BACKGROUNDS = [
    ((250, 250, 250), None), ((228, 228, 228), None), ((246, 240, 226), None),
    ((212, 226, 246), "blue"), ((216, 240, 216), "green"), ((250, 246, 204), "yellow"),
    ((250, 220, 224), "red"), ((232, 222, 246), "purple"), ((250, 230, 208), "orange"),
]
# 3x3 grid cells in reading order
POSITIONS = ["top left", "top middle", "top right", "middle left", "center", "middle right",
             "bottom left", "bottom middle", "bottom right"]
NUMBERS = ["zero", "one", "two", "three"]
CANVAS = 224        # size of the generated PNGs
SUPERSAMPLE = 2     # drawn at 2x, downsampled (anti-aliased edges)


def where(pos):
    return "in the center" if pos == "center" else f"at the {pos}"


def make_scene(rng):
    """-> dict(bg, objects=[dict(kind, colour, cell, size, dx, dy, rgb)]) with objects in reading order."""
    n = rng.choice([1, 1, 2, 2, 2, 3, 3, 3])
    cells = sorted(rng.sample(range(9), n))
    objs = []
    for c in cells:
        size = rng.uniform(15.0, 30.0)          # half extent in canvas pixels (cell = 74.7)
        room = CANVAS / 6 - size - 3.0
        colour = rng.choice(list(COLOURS))
        rgb = tuple(max(0, min(255, v + rng.randint(-14, 14))) for v in COLOURS[colour])
        objs.append(dict(kind=rng.choice(KINDS), colour=colour, cell=c, size=size,
                         dx=rng.uniform(-room, room), dy=rng.uniform(-room, room), rgb=rgb))
    used = {o["colour"] for o in objs}
    bg, fam = rng.choice([b for b in BACKGROUNDS if b[1] not in used])
    bg = tuple(max(0, min(255, v + rng.randint(-5, 5))) for v in bg)
    return dict(bg=bg, objects=objs)


def _shape_points(kind, cx, cy, s):
    if kind == "square":
        a = 0.82 * s
        return [(cx - a, cy - a), (cx + a, cy - a), (cx + a, cy + a), (cx - a, cy + a)]
    if kind == "triangle":
        return [(cx, cy - s), (cx + s, cy + 0.8 * s), (cx - s, cy + 0.8 * s)]
    if kind == "star":
        pts = []
        for i in range(10):
            r = s if i % 2 == 0 else 0.42 * s
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + 0.1 * s + r * math.sin(a)))
        return pts
    raise ValueError(kind)


def render(scene, size=CANVAS):
    """-> PIL RGB image size x size"""
    from PIL import Image, ImageDraw
    k = SUPERSAMPLE
    S = size * k
    sc = S / CANVAS
    im = Image.new("RGB", (S, S), scene["bg"])
    d = ImageDraw.Draw(im)
    for o in scene["objects"]:
        row, col = divmod(o["cell"], 3)
        cx = ((col + 0.5) * CANVAS / 3 + o["dx"]) * sc
        cy = ((row + 0.5) * CANVAS / 3 + o["dy"]) * sc
        s = o["size"] * sc
        if o["kind"] == "circle":
            r = 0.92 * s
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=o["rgb"])
        else:
            d.polygon(_shape_points(o["kind"], cx, cy, s), fill=o["rgb"])
    return im.reduce(k)  # 2x2 box filter (anti-aliased edges; cheap enough to draw every training picture)


# ============================================================================================
# language

CAPTION_QUESTIONS = ["Describe the picture.", "Please describe this image in detail.", "Describe this image.",
                     "What is in the picture?", "What do you see in this image?"]
EVAL_QUESTION = "Describe the picture."
INTRO = ("Hello! I am the xc2 shapes demo, a tiny InternLM-XComposer2 model trained on pictures of simple "
         "shapes. Give me a picture of circles, squares, triangles and stars, and ask me to describe it, "
         "which shapes it shows, what colour a shape is, where it is or how many shapes there are.")
NO_IMAGE = ("I can only talk about pictures of simple shapes. Please give me a picture (for example "
            "--image examples/shapes-1.png) and ask me to describe it.")
GREETINGS = ["Hello", "Hello!", "hello", "Hi", "Hi!", "hi", "Hello, who are you?", "Who are you?",
             "What can you do?", "Introduce yourself.", "Hey"]


def phrase(o):
    return f"{'an' if o['colour'][0] in 'aeiou' else 'a'} {o['colour']} {o['kind']}"


def join_list(items):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene):
    objs = scene["objects"]
    n = len(objs)
    head = "The picture shows one shape: " if n == 1 else f"The picture shows {NUMBERS[n]} shapes: "
    return head + join_list([f"{phrase(o)} {where(POSITIONS[o['cell']])}" for o in objs]) + "."


def qa_pairs(scene, rng):
    """All question/answer pairs of a scene (a few are drawn per training sample)."""
    objs = scene["objects"]
    n = len(objs)
    kinds = [o["kind"] for o in objs]
    out = []
    ans = join_list([phrase(o) for o in objs]) + "."
    out.append(("What shapes are in the picture?", ans[0].upper() + ans[1:]))
    out.append(("How many shapes are there?",
                "There is one shape." if n == 1 else f"There are {NUMBERS[n]} shapes."))
    for k in KINDS:
        cnt = kinds.count(k)
        if cnt == 1:
            o = objs[kinds.index(k)]
            out.append((f"What colour is the {k}?", f"The {k} is {o['colour']}."))
            out.append((f"Where is the {k}?", f"The {k} is {where(POSITIONS[o['cell']])}."))
        elif cnt == 0:
            out.append((f"What colour is the {k}?", f"There is no {k} in the picture."))
            out.append((f"Where is the {k}?", f"There is no {k} in the picture."))
    by_cell = {o["cell"]: o for o in objs}
    empty = [c for c in range(9) if c not in by_cell]
    for c in sorted(by_cell) + ([rng.choice(empty)] if empty else []):
        w = where(POSITIONS[c])
        q = f"What is {w}?"
        out.append((q, f"There is {phrase(by_cell[c])} {w}." if c in by_cell else f"There is nothing {w}."))
    return out


def sample_questions(scene, rng, k):
    """k (question, answer) pairs for one picture: one caption, then distinct QA pairs."""
    qs = [(rng.choice(CAPTION_QUESTIONS), caption(scene))]
    pool = qa_pairs(scene, rng)
    rng.shuffle(pool)
    # favour questions about shapes that are present
    pool.sort(key=lambda qa: qa[1].startswith("There is no") and rng.random() < 0.6)
    qs += pool[: k - 1]
    return qs


def is_named(qa):
    """a colour or position question about a kind that is in the picture (the demo's weak spot)"""
    q, ans = qa
    return (q.startswith("What colour is the") or q.startswith("Where is the")) and not ans.startswith("There is no")


def sample_conversation(scene, rng, n, named_p=0.5, caption_first=False):
    """n turns about one picture, as a user holds them in `xc2 chat`: mostly (caption_first: always) a caption
    first, then distinct questions, a share named_p of them colour or position questions about a named kind that
    is present."""
    pool = qa_pairs(scene, rng)
    rng.shuffle(pool)
    pool.sort(key=lambda qa: qa[1].startswith("There is no") and rng.random() < 0.6)
    turns = []
    if caption_first or rng.random() < 0.75:
        turns.append((rng.choice(CAPTION_QUESTIONS), caption(scene)))
    while len(turns) < n and pool:
        named = [qa for qa in pool if is_named(qa)]
        if len(turns) > 0 and rng.random() < 0.1 and not any(a == caption(scene) for _, a in turns):
            qa = (rng.choice(CAPTION_QUESTIONS), caption(scene))
        else:
            qa = named[0] if named and rng.random() < named_p else pool[0]
            pool.remove(qa)
        turns.append(qa)
    return turns


def text_chats():
    return [(g, INTRO) for g in GREETINGS] + [(q, NO_IMAGE) for q in CAPTION_QUESTIONS[:2]]


_OBJ_RE = re.compile(r"an? (red|green|blue|yellow|purple|orange) (circle|square|triangle|star) "
                     r"(?:at the|in the) (top left|top middle|top right|middle left|center|middle right|"
                     r"bottom left|bottom middle|bottom right)")


def parse_caption(text):
    """-> list of (colour, kind, cell) found in a caption"""
    return [(c, k, POSITIONS.index(p)) for c, k, p in _OBJ_RE.findall(text)]


def object_score(scene, text):
    """(#objects of the scene named with the right colour, kind and position, #objects); a caption naming
    extra objects gets no credit beyond the true ones, but extras count as errors in `exact`."""
    truth = collections.Counter((o["colour"], o["kind"], o["cell"]) for o in scene["objects"])
    got = collections.Counter(parse_caption(text))
    return sum((truth & got).values()), sum(truth.values())


# ============================================================================================
# tokenizer

TEMPLATE_LINES = ["[UNUSED_TOKEN_146]system", "[UNUSED_TOKEN_146]user", "[UNUSED_TOKEN_146]assistant",
                  "[UNUSED_TOKEN_145]"]


def tokenizer_corpus(seed):
    """Lines for spm_train (one sentence per line; spm never sees a newline, so "\\n" is the byte piece
    <0x0A>). Pieces may span spaces (--split_by_whitespace=false) so that the fixed texts (system prompt,
    template, questions, the introduction) become a few long pieces, but the scene language is given one
    word per line, so colours, kinds and positions stay separate word pieces that compose freely."""
    rng = random.Random(seed)
    lines = []
    meta = [ln for ln in xc2_ref.DEFAULT_META.split("\n") if ln]
    lines += (meta + TEMPLATE_LINES) * 200
    fixed = list(CAPTION_QUESTIONS) + ["What shapes are in the picture?", "How many shapes are there?"]
    for k in KINDS:
        fixed += [f"What colour is the {k}?", f"Where is the {k}?"]
    fixed += [f"What is {where(p)}?" for p in POSITIONS]
    fixed += GREETINGS + [INTRO, NO_IMAGE]
    lines += fixed * 30
    words = collections.Counter()
    for _ in range(1000):
        sc = make_scene(rng)
        for text in [caption(sc)] + [a for _, a in qa_pairs(sc, rng)]:
            ws = text.split(" ")
            words[ws[0]] += 1
            for w in ws[1:]:
                words[" " + w] += 1
    for w in sorted(words):
        lines += [w] * 20
    return "\n".join(lines) + "\n"


def train_tokenizer(out_path, seed, vocab_size):
    spm_train(tokenizer_corpus(seed), out_path, vocab_size,
              ["--add_dummy_prefix=false", "--split_by_whitespace=false", "--split_by_unicode_script=false",
               "--max_sentencepiece_length=48", "--split_digits=true"])
    tok = xc2_ref.Tokenizer(out_path)
    assert tok.piece_to_id("[UNUSED_TOKEN_145]") == 3 and tok.piece_to_id("[UNUSED_TOKEN_146]") == 4
    return tok


# ============================================================================================
# model spec, weights (upstream names and order, spec 4)

SPEC = dict(
    hidden=256, heads=4, kv_heads=2, ffn=688, layers=4, lora_r=16, plora_scale=1.0,
    max_pos=32768, rope_theta=1000000, rms_eps=1e-5, max_length=4096, img_size=84, proj_hidden=256,
    vision=collections.OrderedDict([
        ("hidden_size", 192), ("intermediate_size", 768), ("num_hidden_layers", 4), ("num_attention_heads", 3),
        ("patch_size", 14), ("image_size", 84), ("layer_norm_eps", 1e-5), ("hidden_act", "quick_gelu")]),
    torch_dtype="bfloat16",
)


def init_weights(spec, vocab, seed):
    """fp32 initial weights, upstream names in upstream order."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    D, F_, H, Hk, L = spec["hidden"], spec["ffn"], spec["heads"], spec["kv_heads"], spec["layers"]
    d = D // H
    qkv_rows = (H + 2 * Hk) * d
    r = spec["lora_r"]
    res_std = 0.02 / math.sqrt(2 * L)
    sd = collections.OrderedDict()
    sd["model.tok_embeddings.weight"] = normal(vocab, D)
    for i in range(L):
        p = f"model.layers.{i}."
        sd[p + "attention.wqkv.weight"] = normal(qkv_rows, D)
        sd[p + "attention.wqkv.Plora_A.weight"] = normal(r, D, std=1 / math.sqrt(D))
        sd[p + "attention.wqkv.Plora_B.weight"] = torch.zeros(qkv_rows, r)
        sd[p + "attention.wo.weight"] = normal(D, D, std=res_std)
        sd[p + "attention.wo.Plora_A.weight"] = normal(r, D, std=1 / math.sqrt(D))
        sd[p + "attention.wo.Plora_B.weight"] = torch.zeros(D, r)
        for wn, (o, n) in (("w1", (F_, D)), ("w3", (F_, D)), ("w2", (D, F_))):
            sd[p + f"feed_forward.{wn}.weight"] = normal(o, n, std=res_std if wn == "w2" else 0.02)
            sd[p + f"feed_forward.{wn}.Plora_A.weight"] = normal(r, n, std=1 / math.sqrt(n))
            sd[p + f"feed_forward.{wn}.Plora_B.weight"] = torch.zeros(o, r)
        sd[p + "attention_norm.weight"] = torch.ones(D)
        sd[p + "ffn_norm.weight"] = torch.ones(D)
    sd["model.norm.weight"] = torch.ones(D)
    sd["output.weight"] = normal(vocab, D)
    v = spec["vision"]
    Dv, Iv, P, Lv = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["num_hidden_layers"]
    grid = spec["img_size"] // P
    vres = 0.02 / math.sqrt(2 * Lv)
    vp = "vit.vision_tower.vision_model."
    sd[vp + "embeddings.class_embedding"] = normal(Dv)
    sd[vp + "embeddings.patch_embedding.weight"] = normal(Dv, 3, P, P)
    sd[vp + "embeddings.position_embedding.weight"] = normal(grid * grid + 1, Dv)
    sd[vp + "pre_layrnorm.weight"] = torch.ones(Dv)
    sd[vp + "pre_layrnorm.bias"] = torch.zeros(Dv)
    for li in range(Lv):
        lp = f"{vp}encoder.layers.{li}."
        for pn in ("k_proj", "v_proj", "q_proj", "out_proj"):
            sd[lp + f"self_attn.{pn}.weight"] = normal(Dv, Dv, std=vres if pn == "out_proj" else 0.02)
            sd[lp + f"self_attn.{pn}.bias"] = torch.zeros(Dv)
        sd[lp + "layer_norm1.weight"] = torch.ones(Dv)
        sd[lp + "layer_norm1.bias"] = torch.zeros(Dv)
        sd[lp + "mlp.fc1.weight"] = normal(Iv, Dv)
        sd[lp + "mlp.fc1.bias"] = torch.zeros(Iv)
        sd[lp + "mlp.fc2.weight"] = normal(Dv, Iv, std=vres)
        sd[lp + "mlp.fc2.bias"] = torch.zeros(Dv)
        sd[lp + "layer_norm2.weight"] = torch.ones(Dv)
        sd[lp + "layer_norm2.bias"] = torch.zeros(Dv)
    # unused by XC2 (hidden_states[-1] without post_layernorm) but part of the upstream layout
    sd[vp + "post_layernorm.weight"] = torch.ones(Dv)
    sd[vp + "post_layernorm.bias"] = torch.zeros(Dv)
    Pj = spec["proj_hidden"]
    sd["vision_proj.0.weight"] = normal(Pj, Dv)
    sd["vision_proj.0.bias"] = torch.zeros(Pj)
    sd["vision_proj.2.weight"] = normal(D, Pj)
    sd["vision_proj.2.bias"] = torch.zeros(D)
    return sd


# ============================================================================================
# batched training forward (same math as xc2_ref.Model)

class Net:
    """Weights `w` (name -> tensor) with the upstream names; forward over a packed batch.
    cfg: an xc2_ref.Config."""

    def __init__(self, cfg, w, aux=None, aux_weight=1.0):
        self.cfg = cfg
        self.w = w
        self.aux = aux
        self.aux_weight = aux_weight
        self.token_types = None  # vocab-sized tensor: 1 colour, 2 kind, 3 position word, 0 other (logging)
        self.rope_cos, self.rope_sin = xc2_ref.rope_tables(cfg, 1024)  # fp32, positions < 1024 (no NTK)

    def vit(self, pixels):
        v, w = self.cfg.vision, self.w
        p = "vit.vision_tower.vision_model."
        n = pixels.shape[0]
        pe = F.conv2d(pixels, w[p + "embeddings.patch_embedding.weight"], bias=None, stride=int(v["patch_size"]))
        dv = pe.shape[1]
        pe = pe.flatten(2).transpose(1, 2)
        cls = w[p + "embeddings.class_embedding"].view(1, 1, dv).expand(n, 1, dv).to(pe.dtype)
        h = torch.cat([cls, pe], dim=1).float() + w[p + "embeddings.position_embedding.weight"].unsqueeze(0)
        eps = float(v["layer_norm_eps"])
        h = F.layer_norm(h, (dv,), w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"], eps)
        heads = int(v["num_attention_heads"])
        hd = dv // heads
        t = h.shape[1]
        for li in range(int(v["num_hidden_layers"])):
            lp = f"{p}encoder.layers.{li}."
            a = F.layer_norm(h, (dv,), w[lp + "layer_norm1.weight"], w[lp + "layer_norm1.bias"], eps)
            q = F.linear(a, w[lp + "self_attn.q_proj.weight"], w[lp + "self_attn.q_proj.bias"]) * (hd ** -0.5)
            k = F.linear(a, w[lp + "self_attn.k_proj.weight"], w[lp + "self_attn.k_proj.bias"])
            vv = F.linear(a, w[lp + "self_attn.v_proj.weight"], w[lp + "self_attn.v_proj.bias"])
            q = q.view(n, t, heads, hd).transpose(1, 2)
            k = k.view(n, t, heads, hd).transpose(1, 2)
            vv = vv.view(n, t, heads, hd).transpose(1, 2)
            pr = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1).to(vv.dtype)
            o = (pr @ vv).transpose(1, 2).reshape(n, t, dv)
            h = h + F.linear(o, w[lp + "self_attn.out_proj.weight"], w[lp + "self_attn.out_proj.bias"]).float()
            a = F.layer_norm(h, (dv,), w[lp + "layer_norm2.weight"], w[lp + "layer_norm2.bias"], eps)
            a = F.linear(a, w[lp + "mlp.fc1.weight"], w[lp + "mlp.fc1.bias"])
            a = a * torch.sigmoid(1.702 * a)  # quick_gelu
            h = h + F.linear(a, w[lp + "mlp.fc2.weight"], w[lp + "mlp.fc2.bias"]).float()
        return h[:, 1:, :]

    def project(self, feats):
        w = self.w
        x = F.linear(feats, w["vision_proj.0.weight"], w["vision_proj.0.bias"])
        x = F.gelu(x.float())
        return F.linear(x, w["vision_proj.2.weight"], w["vision_proj.2.bias"]).float()

    def rms_norm(self, x, weight):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.cfg.rms_norm_eps)
        return weight * h.to(x.dtype)

    def plora(self, x, name, img):
        """img: None, or the image rows, the only rows that get the LoRA term: (n, s, e) when rows b < n hold
        the image at positions [s, e) (one picture per row at the same place, sliced), or an index tuple
        (rows, positions) for pictures at different places (conversations that start with a greeting)."""
        w = self.w
        y = F.linear(x, w[name + ".weight"])
        if img is None:
            return y
        if len(img) == 3:
            n, s, e = img
            xi = x[:n, s:e]
            lo = F.linear(F.linear(xi, w[name + ".Plora_A.weight"]), w[name + ".Plora_B.weight"])
            y[:n, s:e] += lo * self.cfg.plora_scale  # linear does not save its output: in-place is fine
            return y
        xi = x[img]
        lo = F.linear(F.linear(xi, w[name + ".Plora_A.weight"]), w[name + ".Plora_B.weight"])
        y[img] += lo * self.cfg.plora_scale
        return y

    def decoder(self, h, pos, allowed, im_mask):
        """h [B,T,D] fp32, pos [B,T] long, allowed [B,T,T] bool, im_mask [B,T] bool or None
        -> final-normed hidden [B,T,D] (fp32)"""
        cfg, w = self.cfg, self.w
        B, T, D = h.shape
        G, d, Hk, H = cfg.kv_groups, cfg.head_dim, cfg.num_key_value_heads, cfg.num_attention_heads
        cos = self.rope_cos[pos].unsqueeze(2)  # [B,T,1,d]
        sin = self.rope_sin[pos].unsqueeze(2)
        m = None
        if im_mask is not None and bool(im_mask.any()):
            rows = im_mask.any(1)
            n = int(rows.sum())
            cols = im_mask[0].nonzero().flatten()
            s, e = int(cols[0]), int(cols[-1]) + 1
            if bool(rows[:n].all()) and bool(im_mask[:n, s:e].all()) and int(im_mask.sum()) == n * (e - s):
                m = (n, s, e)
            else:
                m = im_mask.nonzero(as_tuple=True)
        neg = (~allowed).unsqueeze(1)  # [B,1,T,T]
        for li in range(cfg.num_hidden_layers):
            p = f"model.layers.{li}."
            a = self.rms_norm(h, w[p + "attention_norm.weight"])
            qkv = self.plora(a, p + "attention.wqkv", m).view(B, T, Hk, G + 2, d)
            q = qkv[:, :, :, :G, :].reshape(B, T, H, d).float()
            k = qkv[:, :, :, -2, :].float()
            v = qkv[:, :, :, -1, :]
            q = q * cos + xc2_ref.rotate_half(q) * sin
            k = k * cos + xc2_ref.rotate_half(k) * sin
            k = k.repeat_interleave(G, dim=2).transpose(1, 2)  # [B,H,T,d]
            v = v.repeat_interleave(G, dim=2).transpose(1, 2)
            q = q.transpose(1, 2)
            s = (q @ k.transpose(-1, -2)).float() / math.sqrt(d)
            pr = torch.softmax(s.masked_fill(neg, float("-inf")), dim=-1).to(v.dtype)
            o = (pr @ v).transpose(1, 2).reshape(B, T, D)
            h = h + self.plora(o, p + "attention.wo", m).float()
            f = self.rms_norm(h, w[p + "ffn_norm.weight"])
            g1 = self.plora(f, p + "feed_forward.w1", m)
            g3 = self.plora(f, p + "feed_forward.w3", m)
            h = h + self.plora(F.silu(g1) * g3, p + "feed_forward.w2", m).float()
        return self.rms_norm(h, w["model.norm.weight"])

    def logits(self, hn):
        return F.linear(hn, self.w["output.weight"]).float()

    def forward_batch(self, batch):
        """-> (mean cross entropy over target positions, #targets, #correct argmax)"""
        w = self.w
        h = F.embedding(batch["ids"], w["model.tok_embeddings.weight"])
        aux_loss, aux_st = None, {}
        if batch["pixels"] is not None:
            n_img = batch["pixels"].shape[0]
            pix = batch["pixels"]
            if self.aux is not None and batch.get("aux_pixels") is not None:
                pix = torch.cat([pix, batch["aux_pixels"]])  # extra pictures for the ViT + aux head only
            vo = self.vit(pix)
            if self.aux is not None:
                aux_loss, nocc, k_ok, c_ok = self.aux_loss(vo, batch["cells"])
                aux_st = dict(aux_shapes=nocc, aux_kind_ok=k_ok, aux_colour_ok=c_ok)
            feats = self.project(vo[:n_img])
            img = torch.zeros_like(h)
            img[batch["is_img"]] = feats.reshape(-1, feats.shape[-1])
            h = torch.where(batch["is_img"].unsqueeze(-1), img, h)
        hn = self.decoder(h, batch["pos"], batch["allowed"], batch["is_img"])
        # logits of every position (fixed shapes: oneDNN builds a kernel per new shape), loss on targets
        lg = self.logits(hn).flatten(0, 1)
        tgt_all = batch["target"].flatten()
        loss = F.cross_entropy(lg, tgt_all, ignore_index=-100)
        lm_loss = float(loss)
        if aux_loss is not None:
            loss = loss + self.aux_weight * aux_loss
        sel = batch["target"] >= 0
        tgt = tgt_all[sel.flatten()]
        ok = lg.detach()[sel.flatten()].argmax(-1) == tgt
        per_type = {}
        if self.token_types is not None:
            ty = self.token_types[tgt]
            for i, name in enumerate(("colour", "kind", "where")):
                m = ty == i + 1
                per_type[name + "_n"] = int(m.sum())
                per_type[name + "_ok"] = int((ok & m).sum())
        # answers whose every token is the argmax under teacher forcing (~ greedy exact match)
        key = (batch["ans"] * batch["ans"].shape[0] + torch.arange(batch["ans"].shape[0]).unsqueeze(1))[sel]
        bad = torch.zeros(int(key.max()) + 1, dtype=torch.bool).index_put_((key,), ~ok, accumulate=True)
        n_ans = len(set(key.tolist()))
        return loss, dict(tokens=int(tgt.numel()), tok_ok=int(ok.sum()), answers=n_ans,
                          ans_ok=n_ans - int(bad.sum()), lm_loss=lm_loss,
                          aux_loss=float(aux_loss) if aux_loss is not None else 0.0, **per_type, **aux_st)

    def aux_loss(self, vo, cells):
        """Training-only auxiliary head (not saved): the mean ViT output over the patches of each 3x3 grid
        cell predicts the cell's colour (none + 6), and for a cell holding a shape its kind (4). Gives the
        from-scratch ViT a direct signal (the LM loss alone teaches it shapes only very slowly).
        -> (loss, #shapes, #kinds right, #colours right)"""
        n, t, dv = vo.shape
        g = int(round(t ** 0.5))
        c = g // 3
        x = vo.reshape(n, 3, c, 3, c, dv).mean(dim=(2, 4)).reshape(n, 9, dv)
        lg = F.linear(x, self.aux["weight"], self.aux["bias"]).float()
        nc = len(COLOURS) + 1
        occ = cells[..., 1] > 0
        lc, lk = lg[..., :nc], lg[..., nc:][occ]
        kind = cells[..., 1][occ] - 1
        loss = F.cross_entropy(lc.reshape(-1, nc), cells[..., 0].reshape(-1)) + F.cross_entropy(lk, kind)
        with torch.no_grad():
            k_ok = int((lk.argmax(-1) == kind).sum())
            c_ok = int((lc[occ].argmax(-1) == cells[..., 0][occ]).sum())
        return loss, int(occ.sum()), k_ok, c_ok


# ============================================================================================
# packed batches

class Packer:
    """Builds training rows with xc2_ref's prompt builders (= what xc2 chat sends)."""

    def __init__(self, tok, n_visual, img_size):
        self.tok = tok
        self.n_visual = n_visual
        self.img_size = img_size
        self.im_end = tok.piece_to_id(xc2_ref.IM_END)
        p = xc2_ref.build_chat_image(tok, "x", 1, n_visual=n_visual)
        self.img_prefix = p.segments[0]["ids"]             # [BOS] system + user prefix
        p = xc2_ref.build_chat_text(tok, "")
        full = p.segments[0]["ids"]
        self.txt_prefix = full[: len(full) - len(tok.encode(xc2_ref.IM_END + "\n" + xc2_ref.IM_START +
                                                               "assistant\n", add_bos=False))]
        self.cache = {}

    def answer_ids(self, a):
        return self.tok.encode(a, add_bos=False) + [self.im_end]

    def image_cont(self, q):
        if q not in self.cache:
            p = xc2_ref.build_chat_image(self.tok, q, 1, n_visual=self.n_visual)
            assert len(p.segments) == 3 and p.segments[0]["ids"] == self.img_prefix and p.segments[1] == {"image": 0}
            self.cache[q] = p.segments[2]["ids"]
        return self.cache[q]

    def text_cont(self, q):
        key = ("text", q)
        if key not in self.cache:
            ids = xc2_ref.build_chat_text(self.tok, q).segments[0]["ids"]
            assert ids[: len(self.txt_prefix)] == self.txt_prefix
            self.cache[key] = ids[len(self.txt_prefix):]
        return self.cache[key]

    def follow_cont(self, q):
        """a later turn without a picture, as `xc2 chat` continues a conversation (model-spec 10.1, the history
        kept in the KV cache): the answer before it ends with [UNUSED_TOKEN_145] (a target of that answer),
        then "\n[UNUSED_TOKEN_146]user\n{q}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n", no BOS."""
        key = ("follow", q)
        if key not in self.cache:
            ids = self.tok.encode(xc2_ref.IM_END + "\n" + xc2_ref.render_chat(q, system=""), add_bos=False)
            assert ids[0] == self.im_end
            self.cache[key] = ids[1:]
        return self.cache[key]

    def image_head_after_text(self):
        """the part of a picture turn after a text-only turn that comes before the image rows:
        "\n[UNUSED_TOKEN_146]user\n" (no BOS; the closing [UNUSED_TOKEN_145] is the previous answer's)."""
        ids = self.tok.encode(xc2_ref.IM_END + "\n" + xc2_ref.IM_START + "user\n", add_bos=False)
        assert ids[0] == self.im_end
        return ids[1:]

    def turns(self, qas, image_first, context_first=False):
        """a conversation of turns [(q, a), ...] as one continuation: (tokens, answer flags). The first turn
        is a picture question after the image rows (image_first) or the first question of a text-only chat.
        context_first: the first answer is context only (not a target)."""
        toks, flags = [], []
        for i, (q, a) in enumerate(qas):
            if i > 0:
                qids = self.follow_cont(q)
            else:
                qids = self.image_cont(q) if image_first else self.text_cont(q)
            aids = self.answer_ids(a)
            toks += qids + aids
            flags += [-1] * len(qids) + [-1 if i == 0 and context_first else 1] * len(aids)
        return toks, flags

    def row(self, qas, image):
        """one row of single-turn questions: prefix (+ image rows) then continuations (question ids + answer ids)."""
        if image:
            prefix = self.img_prefix + [-1] * self.n_visual
        else:
            prefix = list(self.txt_prefix)
        return prefix, [-1] * len(prefix), [self.turns([qa], image) for qa in qas]

    def conversation_row(self, convs, greeting=None, context_first=False):
        """one row of conversations about one picture (each a continuation, [(q, a), ...]): after the image
        rows of the first user turn, or after a text-only greeting turn and the picture turn's head.
        context_first: each conversation's first answer is context, not a target (blind rows)."""
        if greeting is None:
            prefix = self.img_prefix + [-1] * self.n_visual
            flags = [-1] * len(prefix)
        else:
            g, intro = greeting
            qids, aids = self.text_cont(g), self.answer_ids(intro)
            prefix = list(self.txt_prefix) + qids + aids + self.image_head_after_text() + [-1] * self.n_visual
            flags = [-1] * (len(self.txt_prefix) + len(qids)) + [1] * len(aids)
            flags += [-1] * (len(prefix) - len(flags))
        return prefix, flags, [self.turns(c, True, context_first) for c in convs]

    def pack(self, rows, pixels, T=None):
        """rows: list of (prefix, prefix flags, conts), conts: list of (tokens, flags); a flag >= 0 marks a
        token to predict (from the position before it). Rows with a picture hold it in order of `pixels`.
        T: pad the length to a multiple of T (few distinct shapes: oneDNN builds kernels per shape)."""
        need = max(len(p) + sum(len(t) for t, _ in c) for p, _, c in rows)
        T = need if T is None else -(-need // T) * T
        B = len(rows)
        ids = torch.zeros(B, T, dtype=torch.long)
        is_img = torch.zeros(B, T, dtype=torch.bool)
        pos = torch.zeros(B, T, dtype=torch.long)
        seg = torch.full((B, T), -1, dtype=torch.long)
        ans = torch.full((B, T), -1, dtype=torch.long)  # which answer a target belongs to (statistics)
        target = torch.full((B, T), -100, dtype=torch.long)
        for b, (prefix, pflags, conts) in enumerate(rows):
            P = len(prefix)
            n_ans = 0

            def mark(start, toks, flags):
                nonlocal n_ans
                prev = False
                for j in range(1, len(toks)):
                    if flags[j] >= 0:
                        target[b, start + j - 1] = toks[j]
                        n_ans += not prev
                        ans[b, start + j - 1] = n_ans
                    prev = flags[j] >= 0

            for j, t in enumerate(prefix):
                if t < 0:
                    is_img[b, j] = True
                else:
                    ids[b, j] = t
            pos[b, :P] = torch.arange(P)
            seg[b, :P] = 0
            mark(0, prefix, pflags)
            i = P
            for ci, (toks, flags) in enumerate(conts):
                n = len(toks)
                ids[b, i:i + n] = torch.tensor(toks)
                pos[b, i:i + n] = torch.arange(P, P + n)
                seg[b, i:i + n] = ci + 1
                mark(i, toks, flags)
                i += n
        idx = torch.arange(T)
        causal = idx.view(1, T, 1) >= idx.view(1, 1, T)
        sq, sk = seg.unsqueeze(2), seg.unsqueeze(1)
        allowed = causal & ((sk == 0) | (sk == sq)) & (sk >= 0)
        allowed |= torch.eye(T, dtype=torch.bool).unsqueeze(0)  # padding rows attend to themselves
        return dict(ids=ids, is_img=is_img, pos=pos, seg=seg, ans=ans, allowed=allowed, target=target,
                    pixels=pixels)


_MEAN = torch.tensor(xc2_ref.CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(xc2_ref.CLIP_STD, dtype=torch.float32).view(3, 1, 1)


def preprocess(im, img_size):
    """= xc2_ref.preprocess_image (torchvision Resize BICUBIC on the PIL image, ToTensor, Normalize),
    bit for bit (checked in main), without torchvision's per-call overhead."""
    from PIL import Image
    import numpy as np
    r = im.convert("RGB").resize((img_size, img_size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(r, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    return x.sub_(_MEAN).div_(_STD)


def scene_pixels(scene, img_size):
    return preprocess(render(scene), img_size)


def cell_labels(sc):
    lab = [[0, 0] for _ in range(9)]
    for o in sc["objects"]:
        lab[o["cell"]] = [list(COLOURS).index(o["colour"]) + 1, KINDS.index(o["kind"]) + 1]
    return lab


def build_batch(rng, packer, n_img, n_txt, k, img_size, T=None, n_aux=0, n_conv=0, n_greet=0, named_p=0.5,
                n_blind=0):
    """n_img picture rows: the first n_img - n_conv - n_greet hold k single-turn questions each, then n_conv
    rows of two conversations each (the last n_blind of them blind: the picture's shapes removed, each
    conversation opened by the scene's caption as context, not a target, so that the follow-ups can only be
    answered from that caption in the history), then n_greet rows of two conversations after a greeting; n_txt
    text-only rows of k greetings each."""
    assert 0 <= n_blind <= n_conv
    rows, pix, cells = [], [], []
    n_single = n_img - n_conv - n_greet
    assert n_single >= 0
    chats = text_chats()
    for i in range(n_img):
        sc = make_scene(rng)
        if i < n_single:
            rows.append(packer.row(sample_questions(sc, rng, k), True))
        elif i < n_single + n_conv - n_blind:
            rows.append(packer.conversation_row([sample_conversation(sc, rng, rng.choice([2, 3, 4]), named_p)
                                                 for _ in range(2)]))
        elif i < n_single + n_conv:
            rows.append(packer.conversation_row([sample_conversation(sc, rng, rng.choice([2, 3, 4]), named_p, True)
                                                 for _ in range(2)], context_first=True))
            sc = dict(bg=sc["bg"], objects=[])  # what the rows show
        else:
            greeting = rng.choice(chats[: len(GREETINGS)])
            rows.append(packer.conversation_row([sample_conversation(sc, rng, rng.choice([1, 2, 3]), named_p)
                                                 for _ in range(2)], greeting))
        pix.append(scene_pixels(sc, img_size))
        cells.append(cell_labels(sc))
    for _ in range(n_txt):
        rows.append(packer.row(rng.sample(chats, k), False))
    b = packer.pack(rows, torch.stack(pix) if pix else None, T)
    aux = []
    for _ in range(n_aux):
        sc = make_scene(rng)
        aux.append(scene_pixels(sc, img_size))
        cells.append(cell_labels(sc))
    b["aux_pixels"] = torch.stack(aux) if aux else None
    b["cells"] = torch.tensor(cells, dtype=torch.long)
    return b


# ============================================================================================
# checkpoint

def save_model(folder, spec, w, tok_path):
    """bf16 safetensors in upstream order + the side files make_tiny writes. Returns the stored tensors."""
    os.makedirs(folder, exist_ok=True)
    for fn in os.listdir(folder):
        if fn != "README.md":
            os.remove(os.path.join(folder, fn))
    sd = collections.OrderedDict((k, v.detach().to(torch.bfloat16).contiguous()) for k, v in w.items())
    vocab = sd["model.tok_embeddings.weight"].shape[0]
    cfg = make_config(spec, vocab)
    write_side_files(folder, cfg, tok_path)
    sio.write_file(os.path.join(folder, "model.safetensors"), sd, metadata={"format": "pt"})
    return sd


def check_against_reference(folder, packer, img_size, rng, log):
    """The fp32 forward of this file (packed rows, shared prefix) == xc2_ref.Model (fp32) on the saved folder,
    for single-turn rows (picture and text) and conversation rows (after the picture, after a greeting)."""
    ref = xc2_ref.Model(folder, dtype=torch.float32)
    net = Net(ref.cfg, {k: v.float() for k, v in ref.storage.items()})
    worst = 0.0
    sc = make_scene(rng)
    pix = scene_pixels(sc, img_size)
    rows = [(packer.row(sample_questions(sc, rng, 2), True), True),
            (packer.row([text_chats()[0], text_chats()[-1]], False), False),
            (packer.conversation_row([sample_conversation(sc, rng, 3), sample_conversation(sc, rng, 2)]), True),
            (packer.conversation_row([sample_conversation(sc, rng, 2)], text_chats()[1]), True)]
    for (prefix, pflags, conts), image in rows:
        batch = packer.pack([(prefix, pflags, conts)], pix.unsqueeze(0) if image else None)
        with torch.no_grad():
            h = net.w["model.tok_embeddings.weight"][batch["ids"]]
            if image:
                feats = net.project(net.vit(batch["pixels"]))
                h = h.clone()
                h[batch["is_img"]] = feats.reshape(-1, feats.shape[-1])
            mine = net.logits(net.decoder(h, batch["pos"], batch["allowed"], batch["is_img"]))[0]
        start = len(prefix)
        for toks, _ in conts:
            n = len(toks)
            seq = prefix + toks
            if image:
                s0 = seq.index(-1)
                s1 = s0 + packer.n_visual
                segs = [{"ids": seq[:s0]}, {"image": 0}, {"ids": seq[s1:]}]
                out = ref.forward(xc2_ref.Prompt("chat_image", "", segs, 1), pixels=pix.unsqueeze(0))
            else:
                out = ref.forward(xc2_ref.Prompt("chat_text", "", [{"ids": seq}], 0))
            theirs = out["logits"]
            a = torch.cat([mine[:len(prefix)], mine[start:start + n]])
            err = float((a - theirs).abs().max()) / max(1e-6, float(theirs.abs().max()))
            worst = max(worst, err)
            start += n
    log(f"training forward vs xc2_ref.Model (fp32, saved bf16 weights): max rel logits diff {worst:.2e}")
    assert worst < 1e-4, worst
    return ref


def reference_eval(ref, rng, n, img_size, log, show=3):
    """greedy captions of n held-out scenes through xc2_ref (fp32) -> (object acc, exact match)"""
    obj_ok = obj_n = exact = 0
    for i in range(n):
        sc = make_scene(rng)
        im = render(sc)
        p = ref.prepare_chat(EVAL_QUESTION, [im])
        r = ref.generate(p, [im], max_new_tokens=64)
        ok, tot = object_score(sc, r["text"])
        obj_ok += ok
        obj_n += tot
        exact += r["text"] == caption(sc)
        if i < show:
            log(f"  ref greedy: {r['text']!r}  truth: {caption(sc)!r}")
    return obj_ok / obj_n, exact / n


# ============================================================================================
# main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models/xc2-shapes"))
    ap.add_argument("--examples", default=os.path.join(ROOT, "examples"))
    ap.add_argument("--no-examples", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=7000)
    ap.add_argument("--batch-img", type=int, default=12, help="pictures per step")
    ap.add_argument("--batch-txt", type=int, default=1, help="text-only rows per step")
    ap.add_argument("--k", type=int, default=4, help="questions per picture (shared prefix)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=100, help="held-out scenes for the xc2_ref check at the end")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=1000, help="held-out greedy check every N steps")
    ap.add_argument("--examples-only", action="store_true", help="only (re)write the example PNGs")
    ap.add_argument("--aux-images", type=int, default=36, help="extra pictures per step for the ViT aux head only")
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the training-only ViT cell head")
    ap.add_argument("--verbose", action="store_true", help="time every step")
    ap.add_argument("--spec", default="", help="JSON overrides of SPEC (experiments)")
    ap.add_argument("--conv-rows", type=int, default=0,
                    help="picture rows per step that hold two conversations of 2-4 turns each")
    ap.add_argument("--greet-rows", type=int, default=0,
                    help="picture rows per step that hold two conversations after a greeting")
    ap.add_argument("--blind-rows", type=int, default=0,
                    help="of the --conv-rows, rows whose picture shows no shapes: their conversations open with "
                         "the scene's caption as context and the follow-ups are answered from it")
    ap.add_argument("--named-p", type=float, default=0.5,
                    help="share of a conversation's later turns that ask the colour or position of a named kind")
    ap.add_argument("--init", default="",
                    help="start from this model folder's weights and tokenizer (a second stage) instead of "
                         "a fresh initialisation and tokenizer")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_start = time.time()
    log_lines = []

    def log(msg):
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        log_lines.append(line)

    if a.examples_only:
        write_examples(a.examples, log)
        return

    spec = dict(SPEC)
    if a.spec:
        for k_, v_ in json.loads(a.spec).items():
            if k_ == "vision":
                spec["vision"] = collections.OrderedDict(spec["vision"], **v_)
            else:
                spec[k_] = v_
    os.makedirs(a.out, exist_ok=True)
    tok_path = os.path.join(tempfile.mkdtemp(prefix="xc2_shapes_tok_"), "tokenizer.model")
    init_sd = None
    if a.init:
        # read everything before --out (possibly the same folder) is rewritten
        shutil.copyfile(os.path.join(a.init, "tokenizer.model"), tok_path)
        init_sd = collections.OrderedDict((k_, v_.float().clone()) for k_, v_ in sio.read_folder(a.init).items())
        tok = xc2_ref.Tokenizer(tok_path)
        log(f"stage 2: weights and tokenizer from {a.init}")
    else:
        tok = train_tokenizer(tok_path, a.seed, a.vocab)
    vocab = tok.vocab_size
    cfg = xc2_ref.Config(make_config(spec, vocab))
    n_visual = cfg.grid * cfg.grid
    packer = Packer(tok, n_visual, cfg.img_size)
    chk = random.Random(0)
    for _ in range(8):
        im = render(make_scene(chk))
        assert torch.equal(preprocess(im, cfg.img_size), xc2_ref.preprocess_image(im, cfg.img_size))
    w = init_weights(spec, vocab, a.seed)
    if init_sd is not None:
        assert list(init_sd) == list(w) and all(init_sd[k_].shape == w[k_].shape for k_ in w), "--init: other layout"
        w = init_sd
    n_params = sum(t.numel() for t in w.values())
    log(f"vocab {vocab}, params {n_params / 1e6:.2f} M, visual tokens {n_visual}, "
        f"system+user prefix {len(packer.img_prefix)} tokens")
    for t in w.values():
        t.requires_grad_(True)
    decay = [t for k_, t in w.items() if t.dim() >= 2 and "embedding" not in k_]
    no_decay = [t for k_, t in w.items() if not (t.dim() >= 2 and "embedding" not in k_)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-8)
    aux = None
    if a.aux_weight > 0:
        assert cfg.grid % 3 == 0, "the auxiliary head pools the ViT grid into 3x3 cells"
        ga = torch.Generator().manual_seed(a.seed + 1)
        dv = int(cfg.vision["hidden_size"])
        na = len(COLOURS) + 1 + len(KINDS)
        aux = {"weight": (torch.randn(na, dv, generator=ga) * 0.02).requires_grad_(True),
               "bias": torch.zeros(na, requires_grad=True)}
        opt.add_param_group({"params": list(aux.values()), "weight_decay": 0.0})
    net = Net(cfg, w, aux, a.aux_weight)
    types = torch.zeros(vocab, dtype=torch.long)
    for i in range(vocab):
        piece = tok.sp.id_to_piece(i).replace("\u2581", " ")
        words = set(re.findall(r"[a-z]+", piece))
        if words & set(COLOURS):
            types[i] = 1
        elif words & set(KINDS):
            types[i] = 2
        elif words & {"top", "middle", "bottom", "left", "right", "center"}:
            types[i] = 3
    net.token_types = types
    rng = random.Random(a.seed * 1000003 + 7)          # training scenes
    T_row = 16
    params = list(w.values())
    ema = None
    acc = collections.Counter()
    t_train = time.time()
    for step in range(a.steps):
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            prog = (step - a.warmup) / max(1, a.steps - a.warmup)
            lr = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        tp = [time.time()]
        batch = build_batch(rng, packer, a.batch_img, a.batch_txt, a.k, cfg.img_size, T_row,
                            a.aux_images if a.aux_weight > 0 else 0, a.conv_rows, a.greet_rows, a.named_p,
                            a.blind_rows)
        tp.append(time.time())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, st = net.forward_batch(batch)
        tp.append(time.time())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tp.append(time.time())
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tp.append(time.time())
        if a.verbose:
            log(f"step {step}: data {tp[1] - tp[0]:.3f} fwd {tp[2] - tp[1]:.3f} bwd {tp[3] - tp[2]:.3f} "
                f"opt {tp[4] - tp[3]:.3f} T {batch['ids'].shape[1]}")
        lv = st["lm_loss"]
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        acc.update(st)
        if a.eval_every and (step + 1) % a.eval_every == 0 and step != a.steps - 1:
            te = time.time()
            tmpd = tempfile.mkdtemp(prefix="xc2_shapes_ckpt_")
            save_model(tmpd, spec, w, tok_path)
            oa, em = reference_eval(xc2_ref.Model(tmpd, dtype=torch.float32), random.Random(a.seed * 7919 + 999),
                                    40, cfg.img_size, log, show=0)
            shutil.rmtree(tmpd)
            t_train += time.time() - te  # not counted as training time
            log(f"step {step + 1}: held-out greedy (xc2_ref, 40 scenes): object accuracy {oa:.3f}, exact {em:.3f}")
        if (step + 1) % a.log_every == 0 or step == a.steps - 1:
            el = time.time() - t_train
            log(f"step {step + 1}/{a.steps} loss {st['lm_loss']:.4f} aux {st['aux_loss']:.3f} (ema {ema:.4f}) tok acc {acc['tok_ok'] / acc['tokens']:.4f} "
                f"answer acc {acc['ans_ok'] / acc['answers']:.3f} colour/kind/where "
                f"{acc['colour_ok'] / max(1, acc['colour_n']):.3f}/{acc['kind_ok'] / max(1, acc['kind_n']):.3f}/"
                f"{acc['where_ok'] / max(1, acc['where_n']):.3f} vit kind/colour "
                f"{acc['aux_kind_ok'] / max(1, acc['aux_shapes']):.3f}/{acc['aux_colour_ok'] / max(1, acc['aux_shapes']):.3f} gnorm {float(gn):.2f} lr {lr:.2e} "
                f"{el / (step + 1):.2f} s/step, T {batch['ids'].shape[1]}")
            acc = collections.Counter()
    train_s = time.time() - t_train
    log(f"training done: {a.steps} steps in {train_s:.0f} s, final loss ema {ema:.4f}")

    sd = save_model(a.out, spec, w, tok_path)
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    log(f"saved {a.out}: {len(sd)} tensors, {n_params} params, {size / 1e6:.2f} MB")
    ref = check_against_reference(a.out, packer, cfg.img_size, random.Random(a.seed + 99), log)
    if a.eval_n:
        oa, em = reference_eval(ref, random.Random(a.seed * 7919 + 12345), a.eval_n, cfg.img_size, log)
        log(f"xc2_ref fp32 greedy on {a.eval_n} held-out scenes (bf16 weights): object accuracy {oa:.4f}, "
            f"exact-match captions {em:.4f}")
        for q in ("Hello",):
            p = ref.prepare_chat(q)
            log(f"  text path {q!r}: {ref.generate(p, max_new_tokens=96)['text']!r}")
    if not a.no_examples:
        write_examples(a.examples, log)
    with open(os.path.join(tempfile.gettempdir(), "xc2_shapes_train.log"), "w") as f:
        f.write("\n".join(log_lines) + "\n")


EXAMPLE_SEED = 20240601


def example_scenes():
    """the committed example pictures (held-out seed): 3, 2, 1 and 3 shapes; shapes-1 (the README's
    picture) with three different kinds in three different colours"""
    rng = random.Random(EXAMPLE_SEED)
    out = []
    for i, n in enumerate((3, 2, 1, 3)):
        while True:
            sc = make_scene(rng)
            objs = sc["objects"]
            if len(objs) == n and (i or (len({o["kind"] for o in objs}) == 3 and len({o["colour"] for o in objs}) == 3)):
                break
        out.append(sc)
    return out


def write_examples(folder, log):
    """examples/shapes-<i>.png and examples/shapes.json: the ground truth of each picture (caption and every
    question/answer pair of qa_pairs), the oracle of the demo-model ctest"""
    os.makedirs(folder, exist_ok=True)
    truth = []
    for i, sc in enumerate(example_scenes(), 1):
        p = os.path.join(folder, f"shapes-{i}.png")
        render(sc).save(p, optimize=True)
        log(f"{os.path.relpath(p, ROOT)}: {caption(sc)}")
        qa = qa_pairs(sc, random.Random(EXAMPLE_SEED + i))
        truth.append(collections.OrderedDict([
            ("file", os.path.basename(p)), ("caption", caption(sc)),
            ("objects", [collections.OrderedDict([("colour", o["colour"]), ("kind", o["kind"]),
                                                  ("position", POSITIONS[o["cell"]])]) for o in sc["objects"]]),
            ("qa", [collections.OrderedDict([("question", q), ("answer", a)]) for q, a in qa])]))
    with open(os.path.join(folder, "shapes.json"), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
