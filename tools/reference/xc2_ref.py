#!/usr/bin/python3
"""Independent PyTorch reference of InternLM-XComposer2 (IXC2), written from docs/model-spec.md.

Library use:
    import xc2_ref
    m = xc2_ref.Model("tests/data/models/tiny-a", dtype=torch.float64)
    p = m.prepare_chat("Describe this image.", images=["img.png"])      # prompt, spec 10
    out = m.forward(p, images=["img.png"])                               # all intermediate tensors
    res = m.generate(p, images=["img.png"], max_new_tokens=64)           # greedy, spec 11
CLI:
    xc2_ref.py generate --model DIR [--image P ...] [--dtype f32] "query"
    xc2_ref.py tokenize --model DIR "text"

Semantics implemented (section numbers refer to model-spec.md):
  * config.json with the xc2 extension keys `vision_config` (defaults CLIP ViT-L/14-336) and
    `plora_scale` (default 1.0), spec 2-3.
  * Weights from safetensors (single / sharded + index) or PyTorch .bin (single / sharded + index).
  * Preprocessing spec 8.5 (PIL convert('RGB'), torchvision Resize((S,S), BICUBIC), ToTensor,
    Normalize(CLIP mean/std)), fp32.
  * Position table rule spec 8.3; CLIP ViT spec 8.1; projector spec 8.4 (exact erf GELU).
  * InternLM2 decoder spec 4.2, 5, 6 with PLoRA spec 7, dynamic NTK RoPE.
  * Tokenizer = HF slow tokenizer semantics (see class Tokenizer).
  * Prompts spec 10 and 12 (see prepare_* functions), greedy/sampling spec 11.
  * Compute dtypes: float64 and float32 (weights upcast exactly from storage; RMSNorm statistics,
    softmax and logits in float64 when computing in float64, else float32), and bfloat16 / float16
    (weights cast to that dtype, activations follow the upstream eager casting rules: RMSNorm fp32
    stats then cast back before the weight multiply, softmax fp32, logits .float()).
  * RoPE cos/sin tables are always computed in fp32 exactly like upstream (inv_freq, t*inv_freq,
    cos, sin in fp32) and then cast to the compute dtype, in every compute dtype.
"""
import argparse
import collections
import json
import math
import os
import re
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISION_DEFAULTS = collections.OrderedDict([
    ("hidden_size", 1024), ("intermediate_size", 4096), ("num_hidden_layers", 24),
    ("num_attention_heads", 16), ("patch_size", 14), ("image_size", 336),
    ("layer_norm_eps", 1e-5), ("hidden_act", "quick_gelu"),
])

# spec 10.2: default meta_instruction of chat() (no trailing newline)
DEFAULT_META = (
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is developed by "
    "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user "
    "such as English and 中文.\n"
    "- InternLM-XComposer (浦语·灵笔) is capable of comprehending and articulating responses effectively based on "
    "the provided image.")

# spec 10.2: text-only meta of the composition demo (ends in "\n")
COMPOSE_META = (
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a conversational language model that is developed by "
    "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user "
    "such as English and 中文.\n")

IM_START = "[UNUSED_TOKEN_146]"
IM_END = "[UNUSED_TOKEN_145]"
IMAGE_MARKER = "<ImageHere>"
COMPOSE_MARKER = "<image>"


# ============================================================================================
# config and weights

class Config:
    def __init__(self, d):
        self.raw = d
        self.hidden_size = int(d["hidden_size"])
        self.intermediate_size = int(d["intermediate_size"])
        self.num_hidden_layers = int(d["num_hidden_layers"])
        self.num_attention_heads = int(d["num_attention_heads"])
        self.num_key_value_heads = int(d.get("num_key_value_heads", self.num_attention_heads))
        self.vocab_size = int(d["vocab_size"])
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(d.get("rope_theta", 10000.0))
        self.rope_scaling = d.get("rope_scaling")
        self.max_position_embeddings = int(d.get("max_position_embeddings", 2048))
        self.max_length = int(d.get("max_length", 4096))
        self.bos_token_id = int(d.get("bos_token_id", 1))
        self.eos_token_id = int(d.get("eos_token_id", 2))
        self.pad_token_id = int(d.get("pad_token_id", 2))
        self.bias = bool(d.get("bias", False))
        if self.bias:
            raise ValueError("bias=true is not supported (XC2 has no LLM biases)")
        self.img_size = int(d.get("img_size", 224))
        v = collections.OrderedDict(VISION_DEFAULTS)
        v.update(d.get("vision_config") or {})
        self.vision = v
        self.plora_scale = float(d.get("plora_scale", 1.0))
        self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim * self.num_attention_heads != self.hidden_size:
            raise ValueError("hidden_size not divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads not divisible by num_key_value_heads")
        self.kv_groups = self.num_attention_heads // self.num_key_value_heads
        self.grid = self.img_size // int(v["patch_size"])
        self.native_grid = int(v["image_size"]) // int(v["patch_size"])
        rs = self.rope_scaling
        if rs is None:
            self.rope_type, self.rope_factor = None, 1.0
        else:
            self.rope_type, self.rope_factor = rs.get("type"), float(rs.get("factor", 1.0))
            if self.rope_type not in ("dynamic", None):
                raise ValueError(f"rope_scaling type {self.rope_type} not supported")


def load_config(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return Config(json.load(f))


def quantization_config(folder):
    """GPTQ settings of a folder: config.json's quantization_config, else quantize_config.json, else None."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        q = json.load(f).get("quantization_config")
    qp = os.path.join(folder, "quantize_config.json")
    if q is None and os.path.exists(qp):
        with open(qp, encoding="utf-8") as f:
            q = json.load(f)
    return q


def load_state_dict(folder):
    """Weights in file order: storage dtype, except GPTQ linears, dequantized to float64 `.weight` tensors."""
    sd = _load_stored(folder)
    q = quantization_config(folder)
    if q is None:
        return sd
    import gptq
    return collections.OrderedDict(gptq.dequantize_state_dict(sd, q, load_config(folder).num_hidden_layers))


def _load_stored(folder):
    """Weights in storage dtype, in file order. safetensors preferred, then PyTorch .bin."""
    if (os.path.exists(os.path.join(folder, "model.safetensors.index.json"))
            or os.path.exists(os.path.join(folder, "model.safetensors"))):
        return safetensors_io.read_folder(folder)
    idx = os.path.join(folder, "pytorch_model.bin.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        out = collections.OrderedDict()
        for fn in dict.fromkeys(wm.values()):
            sd = torch.load(os.path.join(folder, fn), map_location="cpu")
            out.update(sd)
        return out
    p = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(p):
        return collections.OrderedDict(torch.load(p, map_location="cpu"))
    raise FileNotFoundError(f"no checkpoint in {folder}")


def resize_pos_table(table, native_grid, grid):
    """spec 8.3. table: [rows, C] in storage dtype. Returns a table with grid^2+1 rows."""
    rows, c = table.shape
    if rows == grid * grid + 1:
        return table
    if rows != native_grid * native_grid + 1:
        raise ValueError(f"position table has {rows} rows; expected {grid * grid + 1} or "
                         f"{native_grid * native_grid + 1}")
    orig_dtype = table.dtype
    cls = table[:1]
    pos = table[1:].float().reshape(1, native_grid, native_grid, c).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(grid, grid), mode="bicubic", align_corners=False)
    pos = pos.permute(0, 2, 3, 1).reshape(grid * grid, c)
    pos = pos.half().to(orig_dtype)
    return torch.cat([cls, pos], dim=0)


# ============================================================================================
# preprocessing (spec 8.5)

def load_rgb(path_or_image):
    from PIL import Image
    if isinstance(path_or_image, Image.Image):
        return path_or_image.convert("RGB")
    with Image.open(path_or_image) as im:
        return im.convert("RGB")


def preprocess_image(path_or_image, size):
    """-> float32 [3, size, size]"""
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode
    im = load_rgb(path_or_image)
    tf = T.Compose([
        T.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    return tf(im)


# ============================================================================================
# tokenizer

class Tokenizer:
    """HF slow-tokenizer semantics of InternLMXComposer2Tokenizer (transformers ~4.33), as chosen
    for xc2:

    encode(text, add_bos):
      1. split `text` on the literal special-token strings "<s>", "</s>", "<unk>" (scanning left to
         right; at a position only one of them can match); each match becomes its id (1, 2, 0);
         NO whitespace is stripped around them; empty chunks are skipped;
      2. every other chunk is encoded separately with SentencePiece:
         ids += [sp.piece_to_id(p) for p in sp.encode(chunk, out_type=str)]
         (the tokenizer.model's normalizer, e.g. add_dummy_prefix, applies to each chunk);
      3. add_bos -> [1] + ids (also for the empty string, which gives [1]).
    decode(ids, skip_special_tokens=True, clean_up=True):
      1. drop the ids of "<s>", "</s>", "<unk>" (only those; [UNUSED_TOKEN_14x] are kept);
      2. text = sp.decode(pieces of the remaining ids) (one call for the whole list);
      3. upstream convert_tokens_to_string then calls transformers' clean_up_tokenization
         unconditionally: replaces " ." "." , " ?" "?", " !" "!", " ," ",", " ' " "'", " n't" "n't",
         " 'm" "'m", " 's" "'s", " 've" "'ve", " 're" "'re" (in this order). clean_up=False skips it.
      (upstream's _maybe_add_prefix_space + [1:] is a no-op: a str is never in its set of ints.)
    """
    SPECIALS = ("<s>", "</s>", "<unk>")

    def __init__(self, model_file):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        self.special_ids = {s: self.sp.piece_to_id(s) for s in self.SPECIALS}
        assert self.special_ids == {"<s>": 1, "</s>": 2, "<unk>": 0}, self.special_ids
        self.bos_id = 1
        self.eos_id = 2
        self._split_re = re.compile("(" + "|".join(re.escape(s) for s in self.SPECIALS) + ")")

    @property
    def vocab_size(self):
        return self.sp.get_piece_size()

    def piece_to_id(self, piece):
        return self.sp.piece_to_id(piece)

    def split_specials(self, text):
        return [c for c in self._split_re.split(text) if c != ""]

    def encode(self, text, add_bos=True):
        ids = [self.bos_id] if add_bos else []
        for chunk in self.split_specials(text):
            if chunk in self.special_ids:
                ids.append(self.special_ids[chunk])
            else:
                ids.extend(self.sp.piece_to_id(p) for p in self.sp.encode(chunk, out_type=str))
        return ids

    @staticmethod
    def clean_up_tokenization(s):
        return (s.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
                .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s")
                .replace(" 've", "'ve").replace(" 're", "'re"))

    def decode(self, ids, skip_special_tokens=True, clean_up=True):
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            drop = set(self.special_ids.values())
            ids = [i for i in ids if i not in drop]
        if not ids:
            return ""
        if skip_special_tokens:
            text = self.sp.decode([self.sp.id_to_piece(i) for i in ids])
        else:
            # upstream: special tokens are emitted literally, with a space before a run of them
            text, cur, prev_special = "", [], False
            specials = set(self.SPECIALS)
            for p in (self.sp.id_to_piece(i) for i in ids):
                if p in specials:
                    if not prev_special:
                        text += " "
                    text += self.sp.decode(cur) + p
                    cur, prev_special = [], True
                else:
                    cur.append(p)
                    prev_special = False
            text += self.sp.decode(cur)
            text = " " + text  # _maybe_add_prefix_space ...
            text = text[1:]    # ... then [1:]
        return self.clean_up_tokenization(text) if clean_up else text


# ============================================================================================
# prompts (spec 10, 12)

def render_chat(query, history=(), system=DEFAULT_META):
    """spec 10.1 template text (without any BOS)."""
    s = ""
    if system:
        s += f"{IM_START}system\n{system}{IM_END}\n"
    for q, a in history:
        s += f"{IM_START}user\n{q}{IM_END}\n{IM_START}assistant\n{a}{IM_END}\n"
    s += f"{IM_START}user\n{query}{IM_END}\n{IM_START}assistant\n"
    return s


def place_markers(query, n_images, marker=IMAGE_MARKER):
    """xc2 rule (spec 10.3): no marker in the query -> one marker per image at the start of the
    query joined by single spaces; otherwise the number of markers must equal n_images."""
    k = query.count(marker)
    if k == 0:
        if n_images == 0:
            return query
        return " ".join([marker] * n_images) + query
    if k != n_images:
        raise ValueError(f"query has {k} {marker} markers but {n_images} images were given")
    return query


class Prompt:
    """segments: list of {"ids": [...]} / {"image": k} (optionally {"image": k, "length": n} when
    truncated). path: chat_image | chat_text | compose."""

    def __init__(self, path, text, segments, n_images):
        self.path = path
        self.text = text
        self.segments = segments
        self.n_images = n_images

    def positions(self, n_visual):
        """tokens list with -1 at image rows, and image spans [[start, length], ...]"""
        toks, spans = [], []
        for s in self.segments:
            if "ids" in s:
                toks.extend(s["ids"])
            else:
                n = s.get("length", n_visual)
                spans.append([len(toks), n])
                toks.extend([-1] * n)
        return toks, spans

    def to_json(self):
        return {"path": self.path, "text": self.text, "segments": self.segments, "n_images": self.n_images}


def _truncate(segments, max_length, n_visual):
    out, total = [], 0
    for s in segments:
        if total >= max_length:
            break
        room = max_length - total
        if "ids" in s:
            ids = s["ids"][:room]
            out.append({"ids": ids})
            total += len(ids)
        else:
            n = s.get("length", n_visual)
            if n > room:
                out.append({"image": s["image"], "length": room})
                total += room
            else:
                out.append(dict(s))
                total += n
    return out


def build_chat_image(tok, query, n_images, history=(), system=DEFAULT_META, max_length=4096, n_visual=None):
    """chat() with images (spec 10.3): split on <ImageHere>, BOS on every non-empty part,
    image k after part k, truncation to max_length positions."""
    query = place_markers(query, n_images)
    text = render_chat(query, history, system)
    parts = text.split(IMAGE_MARKER)
    if len(parts) != n_images + 1:
        raise ValueError(f"prompt has {len(parts) - 1} {IMAGE_MARKER} markers but {n_images} images")
    segs = []
    for idx, part in enumerate(parts):
        if part:
            segs.append({"ids": tok.encode(part, add_bos=True)})
        if idx < n_images:
            segs.append({"image": idx})
    if n_visual is not None:
        segs = _truncate(segs, max_length, n_visual)
    return Prompt("chat_image", text, segs, n_images)


def build_chat_text(tok, query, history=(), system=DEFAULT_META):
    """chat() without image (spec 10.4): literal '<s>' + template, tokenized with BOS ->
    [1, 1, im_start, ...]. No truncation (upstream has none on this path)."""
    text = "<s>" + render_chat(query, history, system)
    return Prompt("chat_text", text, [{"ids": tok.encode(text, add_bos=True)}], 0)


def text2instruction(text, with_meta=False, assistant_prefix=""):
    """composition demo (spec 12.1)."""
    s = ""
    if with_meta:
        s += f"{IM_START}system\n{COMPOSE_META}{IM_END}\n"
    s += f"{IM_START}user\n{text}{IM_END}\n{IM_START}assistant\n"
    return s + assistant_prefix


def build_compose(tok, instruction, n_images, with_meta=False, assistant_prefix="", max_length=4096,
                  n_visual=None):
    """composition demo interleave (spec 12.1): images given as <image> markers (xc2 rule: none in the
    instruction -> ('<image> ' * n).strip() prepended, spec 12.2); split on '<image>'; BOS only on the
    first non-empty part; each non-empty part tokenized; truncation to max_length."""
    k = instruction.count(COMPOSE_MARKER)
    if k == 0 and n_images:
        instruction = ("<image> " * n_images).strip() + instruction
    elif k != n_images:
        raise ValueError(f"instruction has {k} {COMPOSE_MARKER} markers but {n_images} images")
    text = text2instruction(instruction, with_meta, assistant_prefix)
    parts = text.split(COMPOSE_MARKER)
    segs, need_bos = [], True
    for idx, part in enumerate(parts):
        if part:
            segs.append({"ids": tok.encode(part, add_bos=need_bos)})
            need_bos = False
        if idx < n_images:
            segs.append({"image": idx})
    if n_visual is not None:
        segs = _truncate(segs, max_length, n_visual)
    return Prompt("compose", text, segs, n_images)


# ============================================================================================
# model

def _rope_inv_freq(theta, dim):
    # upstream: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), fp32
    return 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))


def rope_tables(cfg, kv_len):
    """fp32 cos/sin [kv_len, head_dim] exactly as InternLM2DynamicNTKScalingRotaryEmbedding would
    hold them when asked for seq_len = kv_len: base' when kv_len > max_position_embeddings."""
    d = cfg.head_dim
    base = cfg.rope_theta
    if cfg.rope_type == "dynamic" and kv_len > cfg.max_position_embeddings:
        f = cfg.rope_factor
        base = base * ((f * kv_len / cfg.max_position_embeddings) - (f - 1)) ** (d / (d - 2))
    inv_freq = _rope_inv_freq(base, d)
    t = torch.arange(kv_len, dtype=inv_freq.dtype)
    freqs = torch.einsum("i,j->ij", t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _act(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu",):
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unsupported vision hidden_act {name}")


class Model:
    def __init__(self, folder, dtype=torch.float64, state_dict=None, zero_plora=False, tokenizer=True):
        self.folder = folder
        self.cfg = load_config(folder)
        self.dtype = dtype
        self.stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        tk = os.path.join(folder, "tokenizer.model")
        self.tok = Tokenizer(tk) if tokenizer and os.path.exists(tk) else None
        sd = state_dict if state_dict is not None else load_state_dict(folder)
        self.storage = sd
        cfg = self.cfg
        vp = "vit.vision_tower.vision_model."
        pos_key = vp + "embeddings.position_embedding.weight"
        sd = collections.OrderedDict(sd)
        sd[pos_key] = resize_pos_table(sd[pos_key], cfg.native_grid, cfg.grid)
        if zero_plora:
            for k in list(sd):
                if ".Plora_" in k:
                    sd[k] = torch.zeros_like(sd[k])
        self.w = {k: v.to(dtype) for k, v in sd.items()}
        self.pos_table = sd[pos_key]  # storage dtype, after the resize rule
        self.n_visual = cfg.grid * cfg.grid
        if self.tok is not None:
            self.im_end_id = self.tok.piece_to_id(IM_END)
        # LoRA rank from the checkpoint
        self.lora_rank = self.w["model.layers.0.attention.wqkv.Plora_A.weight"].shape[0]

    # ---------------------------------------------------------------- vision (spec 8)
    def vit(self, pixels):
        """pixels [N,3,S,S] fp32 -> [N, g^2, Dv] (hidden_states[-1], CLS dropped, no post-LN)."""
        v = self.cfg.vision
        w = self.w
        p = "vit.vision_tower.vision_model."
        x = pixels.to(self.dtype)
        n = x.shape[0]
        pe = F.conv2d(x, w[p + "embeddings.patch_embedding.weight"], bias=None, stride=int(v["patch_size"]))
        dv = pe.shape[1]
        pe = pe.flatten(2).transpose(1, 2)  # [N, g^2, Dv], row-major over the grid
        cls = w[p + "embeddings.class_embedding"].view(1, 1, dv).expand(n, 1, dv)
        h = torch.cat([cls, pe], dim=1)
        pos = w[p + "embeddings.position_embedding.weight"]
        if pos.shape[0] != h.shape[1]:
            raise ValueError(f"position table rows {pos.shape[0]} != tokens {h.shape[1]}")
        h = h + pos.unsqueeze(0)
        eps = float(v["layer_norm_eps"])
        h = F.layer_norm(h, (dv,), w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"], eps)
        heads = int(v["num_attention_heads"])
        hd = dv // heads
        act = _act(v["hidden_act"])
        for li in range(int(v["num_hidden_layers"])):
            lp = f"{p}encoder.layers.{li}."
            r = h
            a = F.layer_norm(h, (dv,), w[lp + "layer_norm1.weight"], w[lp + "layer_norm1.bias"], eps)
            q = F.linear(a, w[lp + "self_attn.q_proj.weight"], w[lp + "self_attn.q_proj.bias"]) * (hd ** -0.5)
            k = F.linear(a, w[lp + "self_attn.k_proj.weight"], w[lp + "self_attn.k_proj.bias"])
            vv = F.linear(a, w[lp + "self_attn.v_proj.weight"], w[lp + "self_attn.v_proj.bias"])
            t = h.shape[1]
            q = q.view(n, t, heads, hd).transpose(1, 2)
            k = k.view(n, t, heads, hd).transpose(1, 2)
            vv = vv.view(n, t, heads, hd).transpose(1, 2)
            s = q @ k.transpose(-1, -2)
            pr = torch.softmax(s, dim=-1)
            o = (pr @ vv).transpose(1, 2).reshape(n, t, dv)
            o = F.linear(o, w[lp + "self_attn.out_proj.weight"], w[lp + "self_attn.out_proj.bias"])
            h = r + o
            r = h
            a = F.layer_norm(h, (dv,), w[lp + "layer_norm2.weight"], w[lp + "layer_norm2.bias"], eps)
            a = F.linear(a, w[lp + "mlp.fc1.weight"], w[lp + "mlp.fc1.bias"])
            a = F.linear(act(a), w[lp + "mlp.fc2.weight"], w[lp + "mlp.fc2.bias"])
            h = r + a
        return h[:, 1:, :]

    def project(self, feats):
        w = self.w
        x = F.linear(feats, w["vision_proj.0.weight"], w["vision_proj.0.bias"])
        x = F.gelu(x)  # exact erf
        return F.linear(x, w["vision_proj.2.weight"], w["vision_proj.2.bias"])

    def pixels(self, images):
        return torch.stack([preprocess_image(im, self.cfg.img_size) for im in images]) if images else None

    # ---------------------------------------------------------------- decoder (spec 5-7)
    def rms_norm(self, x, weight):
        dt = x.dtype
        h = x.to(self.stat_dtype)
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.cfg.rms_norm_eps)
        return weight * h.to(dt)

    def plora(self, x, name, mask):
        w = self.w
        y = F.linear(x, w[name + ".weight"])
        if mask is not None and bool(mask.any()):
            part = x[mask]
            t = F.linear(part, w[name + ".Plora_A.weight"])  # rounded to the activation dtype
            y = y.clone()
            y[mask] += F.linear(t, w[name + ".Plora_B.weight"]) * self.cfg.plora_scale
        return y

    def split_qkv(self, qkv):
        """spec 4.2: [T, (Hk*(G+2)*d)] -> q [T,H,d], k [T,Hk,d], v [T,Hk,d]"""
        cfg = self.cfg
        t = qkv.shape[0]
        g, d, hk = cfg.kv_groups, cfg.head_dim, cfg.num_key_value_heads
        x = qkv.view(t, hk, g + 2, d)
        q = x[:, :, :g, :].reshape(t, hk * g, d)
        k = x[:, :, -2, :]
        v = x[:, :, -1, :]
        return q, k, v

    def embed_tokens(self, ids):
        return self.w["model.tok_embeddings.weight"][torch.tensor(ids, dtype=torch.long)]

    def decoder(self, h, im_mask=None, cache=None, collect=False, last_only=False, dump=None):
        """h: [T, D] new rows in compute dtype at positions [past, past+T), past = cached length.
        cache: None (no cache) or a dict {"k": [per layer], "v": [...], "len": int}, updated in place.
        Returns (logits [T,V] in stat dtype, list of hidden states after each layer if collect);
        last_only: logits of the last row only ([1,V]), as a generation loop needs.
        dump: None or a callable(name, layer, tensor) given every named intermediate (the names of
        `xc2 logits --dump`; layer -1 outside the layers), each as a 2-D [rows, cols] tensor."""
        def cb(name, layer, x):
            if dump is not None:
                dump(name, layer, x.reshape(x.shape[0], -1))
        cfg = self.cfg
        w = self.w
        t = h.shape[0]
        past = cache["len"] if cache is not None else 0
        kv_len = past + t
        cos, sin = rope_tables(cfg, kv_len)
        cos = cos[past:kv_len].to(self.dtype).unsqueeze(1)  # [T,1,d]
        sin = sin[past:kv_len].to(self.dtype).unsqueeze(1)
        if im_mask is not None:
            im_mask = im_mask.bool()
        hs = []
        causal = torch.ones(t, kv_len, dtype=torch.bool).tril(diagonal=past)
        cb("input", -1, h)
        for li in range(cfg.num_hidden_layers):
            p = f"model.layers.{li}."
            a = self.rms_norm(h, w[p + "attention_norm.weight"])
            cb("attn_norm", li, a)
            qkv = self.plora(a, p + "attention.wqkv", im_mask)
            cb("qkv", li, qkv)
            q, k, v = self.split_qkv(qkv)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            cb("q_rope", li, q)
            if cache is not None:
                if len(cache["k"]) > li:
                    k = torch.cat([cache["k"][li], k], dim=0)
                    v = torch.cat([cache["v"][li], v], dim=0)
                    cache["k"][li], cache["v"][li] = k, v
                else:
                    cache["k"].append(k)
                    cache["v"].append(v)
            rep = cfg.kv_groups
            kk = k.repeat_interleave(rep, dim=1).transpose(0, 1)  # [H, kv_len, d]
            vv = v.repeat_interleave(rep, dim=1).transpose(0, 1)
            qq = q.transpose(0, 1)                                # [H, T, d]
            s = (qq @ kk.transpose(1, 2)) / math.sqrt(cfg.head_dim)
            s = s.masked_fill(~causal, float("-inf"))
            pr = torch.softmax(s, dim=-1, dtype=self.stat_dtype).to(self.dtype)
            o = (pr @ vv).transpose(0, 1).reshape(t, cfg.hidden_size)
            cb("attn_out", li, o)
            ao = self.plora(o, p + "attention.wo", im_mask)
            cb("attn_proj", li, ao)
            h = h + ao
            cb("ffn_inp", li, h)
            f = self.rms_norm(h, w[p + "ffn_norm.weight"])
            cb("ffn_norm", li, f)
            g1 = self.plora(f, p + "feed_forward.w1", im_mask)
            cb("ffn_gate", li, g1)
            g3 = self.plora(f, p + "feed_forward.w3", im_mask)
            cb("ffn_up", li, g3)
            act = F.silu(g1) * g3
            cb("ffn_act", li, act)
            fo = self.plora(act, p + "feed_forward.w2", im_mask)
            cb("ffn_out", li, fo)
            h = h + fo
            cb("layer_out", li, h)
            if collect:
                hs.append(h)
        if cache is not None:
            cache["len"] = kv_len
        x = self.rms_norm(h[-1:] if last_only else h, w["model.norm.weight"])
        cb("final_norm", -1, x)
        logits = F.linear(x, w["output.weight"]).to(self.stat_dtype)
        cb("logits", -1, logits)
        return logits, hs

    # ---------------------------------------------------------------- prompts
    def prepare_chat(self, query, images=(), history=(), system=DEFAULT_META):
        n = len(images)
        if n:
            return build_chat_image(self.tok, query, n, history, system, self.cfg.max_length, self.n_visual)
        return build_chat_text(self.tok, query, history, system)

    def prepare_compose(self, instruction, images=(), with_meta=False, assistant_prefix=""):
        return build_compose(self.tok, instruction, len(images), with_meta, assistant_prefix,
                             self.cfg.max_length, self.n_visual)

    # ---------------------------------------------------------------- forward
    def embed_prompt(self, prompt, images=(), pixels=None):
        """-> dict with pixels, vit_out, proj_out, h0 [T,D], im_mask [T] (bool), tokens, spans"""
        out = {}
        if prompt.n_images:
            if pixels is None:
                pixels = self.pixels(images)
            assert pixels.shape[0] == prompt.n_images
            out["pixels"] = pixels
            out["vit_out"] = self.vit(pixels)
            out["proj_out"] = self.project(out["vit_out"])
        rows, mask = [], []
        for s in prompt.segments:
            if "ids" in s:
                rows.append(self.embed_tokens(s["ids"]))
                mask += [False] * len(s["ids"])
            else:
                feats = out["proj_out"][s["image"]]
                feats = feats[: s.get("length", feats.shape[0])]
                rows.append(feats)
                mask += [True] * feats.shape[0]
        out["h0"] = torch.cat(rows, dim=0)
        out["im_mask"] = torch.tensor(mask, dtype=torch.bool)
        out["tokens"], out["spans"] = prompt.positions(self.n_visual)
        return out

    def forward(self, prompt, images=(), pixels=None, dump=None):
        out = self.embed_prompt(prompt, images, pixels)
        # upstream text path passes an all-False mask (no LoRA); same as None
        logits, hs = self.decoder(out["h0"], out["im_mask"], collect=True, dump=dump)
        out["hidden"] = [out["h0"]] + hs
        out["logits"] = logits
        return out

    # ---------------------------------------------------------------- generation (spec 11)
    def stop_ids(self):
        return [self.cfg.eos_token_id if self.tok is None else self.tok.eos_id, self.im_end_id]

    def generate(self, prompt, images=(), pixels=None, max_new_tokens=64, repetition_penalty=1.005,
                 ignore_eos=False, use_cache=True, do_sample=False, temperature=1.0, top_k=50, top_p=1.0,
                 seed=0, penalty_includes_prompt=None):
        """HF generate semantics. Image path / compose: repetition penalty over generated tokens only;
        chat_text: over prompt ids too (override with penalty_includes_prompt).
        use_cache=True: KV cache (HF use_cache=True); with dynamic NTK each new position p is rotated
        with the base for kv_len = p+1 while cached keys keep their rotation. use_cache=False
        recomputes the whole sequence each step (all positions rotated with the base for the current
        length). Identical unless the length exceeds max_position_embeddings.
        Returns dict(tokens, margins, text)."""
        emb = self.embed_prompt(prompt, images, pixels)
        if penalty_includes_prompt is None:
            penalty_includes_prompt = prompt.path == "chat_text"
        seq = [t for t in emb["tokens"] if t >= 0] if penalty_includes_prompt else []
        stops = set(self.stop_ids())
        gen, margins = [], []
        gen_rng = torch.Generator().manual_seed(seed)
        cache = {"k": [], "v": [], "len": 0} if use_cache else None
        logits, _ = self.decoder(emb["h0"], emb["im_mask"], cache=cache)
        h_all = emb["h0"]
        for step in range(max_new_tokens):
            scores = logits[-1].clone()
            scores = apply_repetition_penalty(scores, seq, repetition_penalty)
            if do_sample:
                nxt = sample(scores, temperature, top_k, top_p, gen_rng)
            else:
                top2 = torch.topk(scores, 2)
                margins.append(float(top2.values[0] - top2.values[1]))
                nxt = int(torch.argmax(scores))  # first maximum -> lowest id on ties
            gen.append(nxt)
            seq.append(nxt)
            if nxt in stops and not ignore_eos:
                break
            if step == max_new_tokens - 1:
                break
            e = self.embed_tokens([nxt])
            if use_cache:
                logits, _ = self.decoder(e, None, cache=cache)
            else:
                h_all = torch.cat([h_all, e], dim=0)
                mask = torch.cat([emb["im_mask"], torch.zeros(h_all.shape[0] - emb["im_mask"].shape[0],
                                                              dtype=torch.bool)])
                logits, _ = self.decoder(h_all, mask)
        text = self.tok.decode(gen, skip_special_tokens=True).split(IM_END)[0] if self.tok else None
        return {"tokens": gen, "margins": margins, "text": text}

    # ---------------------------------------------------------------- beam search
    def beam_search(self, prompt, images=(), pixels=None, num_beams=3, max_new_tokens=64, repetition_penalty=1.005,
                    length_penalty=1.0, extra_stops=(), penalty_includes_prompt=None):
        """Hugging Face generate(num_beams=N, do_sample=False) as upstream chat() ran it (transformers 4.33,
        early_stopping=False), written from that algorithm:
        - the sequence HF holds in input_ids: the prompt ids on the input_ids path (chat_text), nothing on
          the inputs_embeds path (images); its length is cur_len, and it counts for the length penalty;
        - each step, per live beam: scores = log_softmax(logits), then the repetition penalty on the ids of
          that beam's input_ids (log-probs are <= 0: multiplied by the penalty), plus the beam's running score;
        - the 2N best (beam, token) pairs over all beams, best first (ties: lower beam, then lower id);
          walking them in order, a stop token of rank < N closes a hypothesis (beam's ids without the stop
          token, score sum / len(ids) ** length_penalty), other tokens extend the beam until N beams exist;
        - a hypothesis list keeps the N best; done once it holds N and its worst score >= best candidate
          score this step / cur_len ** length_penalty (cur_len before the step's token);
        - stop when done or after max_new_tokens tokens; unfinished beams then join the hypotheses with their
          scores; the answer is the best hypothesis (the later one among equal scores).
        A zero length (a stop token first on the inputs_embeds path, where HF divides by zero) counts as 1.
        Returns dict(tokens (generated ids, stop token excluded), score, stop (the stop id or None))."""
        emb = self.embed_prompt(prompt, images, pixels)
        if penalty_includes_prompt is None:
            penalty_includes_prompt = prompt.path == "chat_text"
        prefix = [t for t in emb["tokens"] if t >= 0] if penalty_includes_prompt else []
        stops = set(self.stop_ids()) | set(extra_stops)
        n = num_beams
        cache = {"k": [], "v": [], "len": 0}
        logits, _ = self.decoder(emb["h0"], emb["im_mask"], cache=cache, last_only=True)
        beams = [{"tokens": [], "score": 0.0, "cache": cache, "logits": logits[-1]}]
        hyps = []  # [score, tokens, stop]
        worst = 1e9

        def norm(length):
            return float(max(length, 1)) ** length_penalty

        def add(tokens, sum_logprobs, stop):
            nonlocal worst
            score = sum_logprobs / norm(len(prefix) + len(tokens))
            if len(hyps) < n or score > worst:
                hyps.append([score, tokens, stop])
                if len(hyps) > n:
                    order = sorted((h[0], i) for i, h in enumerate(hyps))
                    del hyps[order[0][1]]
                    worst = order[1][0]
                else:
                    worst = min(score, worst)

        done = False
        generated = 0
        while True:
            cur_len = len(prefix) + generated
            cands = []
            for b, beam in enumerate(beams):
                lp = torch.log_softmax(beam["logits"].to(torch.float64), dim=-1)
                lp = apply_repetition_penalty(lp, prefix + beam["tokens"], repetition_penalty)
                total = lp + beam["score"]
                top = torch.topk(total, min(2 * n, total.numel()))
                for v, t in zip(top.values.tolist(), top.indices.tolist()):
                    cands.append((v, b, t))
            cands.sort(key=lambda c: (-c[0], c[1], c[2]))
            cands = cands[: 2 * n]
            nxt = []
            for rank, (v, b, t) in enumerate(cands):
                if t in stops:
                    if rank >= n:
                        continue
                    add(list(beams[b]["tokens"]), v, t)
                else:
                    nxt.append((b, t, v))
                if len(nxt) == n:
                    break
            if len(hyps) >= n:
                done = done or worst >= cands[0][0] / norm(cur_len)
            generated += 1
            if done or generated >= max_new_tokens:
                beams = [{"tokens": beams[b]["tokens"] + [t], "score": v} for b, t, v in nxt]
                break
            new = []
            for b, t, v in nxt:
                parent = beams[b]["cache"]
                c = {"k": list(parent["k"]), "v": list(parent["v"]), "len": parent["len"]}
                lg, _ = self.decoder(self.embed_tokens([t]), None, cache=c, last_only=True)
                new.append({"tokens": beams[b]["tokens"] + [t], "score": v, "cache": c, "logits": lg[-1]})
            beams = new
        if not done:
            for beam in beams:
                add(beam["tokens"], beam["score"], None)
        best = sorted(hyps, key=lambda h: h[0])[-1]
        return {"tokens": best[1], "score": best[0], "stop": best[2]}


def apply_repetition_penalty(scores, seq, penalty):
    """HF RepetitionPenaltyLogitsProcessor: once per distinct id in seq; <0 -> *p, else /p."""
    if penalty == 1.0 or not seq:
        return scores
    idx = torch.tensor(sorted(set(seq)), dtype=torch.long)
    s = scores[idx]
    s = torch.where(s < 0, s * penalty, s / penalty)
    scores = scores.clone()
    scores[idx] = s
    return scores


def sample(scores, temperature=1.0, top_k=50, top_p=1.0, generator=None):
    """HF order: (repetition penalty already applied) -> temperature -> top-k -> top-p -> softmax ->
    multinomial. Not bit-comparable across frameworks."""
    scores = scores.float().clone()
    if temperature != 1.0:
        scores = scores / temperature
    if top_k and top_k > 0:
        k = min(top_k, scores.numel())
        kth = torch.topk(scores, k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sl, si = torch.sort(scores, descending=False)
        cp = sl.softmax(dim=-1).cumsum(dim=-1)
        remove = cp <= (1 - top_p)
        remove[-1:] = False
        rm = torch.zeros_like(remove).scatter(0, si, remove)
        scores = scores.masked_fill(rm, float("-inf"))
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


# ============================================================================================
# CLI

DTYPES = {"f64": torch.float64, "f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="chat() with greedy decoding (or sampling)")
    g.add_argument("--model", required=True)
    g.add_argument("--image", action="append", default=[])
    g.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    g.add_argument("--system", default=None, help="system text (default: spec 10.2 meta)")
    g.add_argument("--no-system", action="store_true")
    g.add_argument("--compose", action="store_true", help="composition-demo prompt (<image> markers)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--repetition-penalty", type=float, default=1.005)
    g.add_argument("--ignore-eos", action="store_true")
    g.add_argument("--sample", action="store_true")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=50)
    g.add_argument("--top-p", type=float, default=0.8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--show-ids", action="store_true")
    g.add_argument("query")
    t = sub.add_parser("tokenize", help="print ids of a string (with BOS)")
    t.add_argument("--model", required=True)
    t.add_argument("--no-bos", action="store_true")
    t.add_argument("text")
    a = ap.parse_args(argv)
    if a.cmd == "tokenize":
        tok = Tokenizer(os.path.join(a.model, "tokenizer.model"))
        print(json.dumps(tok.encode(a.text, add_bos=not a.no_bos)))
        return 0
    torch.set_num_threads(a.threads)
    m = Model(a.model, dtype=DTYPES[a.dtype])
    if a.compose:
        p = m.prepare_compose(a.query, a.image)
    else:
        system = "" if a.no_system else (DEFAULT_META if a.system is None else a.system)
        p = m.prepare_chat(a.query, a.image, system=system)
    r = m.generate(p, a.image, max_new_tokens=a.max_new_tokens, repetition_penalty=a.repetition_penalty,
                   ignore_eos=a.ignore_eos, do_sample=a.sample, temperature=a.temperature, top_k=a.top_k,
                   top_p=a.top_p, seed=a.seed)
    if a.show_ids:
        print(json.dumps(r["tokens"]), file=sys.stderr)
    print(r["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
