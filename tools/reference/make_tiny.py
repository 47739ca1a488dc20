#!/usr/bin/python3
"""Deterministic generator of the tiny IXC2 test checkpoints under tests/data/models/ (see README.md).

  tiny-a/      bf16, model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
  tiny-a-bin/  the same tensors as pytorch_model-0000{1,2}-of-00002.bin + pytorch_model.bin.index.json
  tiny-b/      f16, model.safetensors
  tiny-b-bin/  the same tensors as pytorch_model.bin

Every folder also holds config.json, generation_config.json, tokenizer.model, tokenizer_config.json and
special_tokens_map.json. Tensor names and order follow the upstream layout (spec 4). Weights are drawn
from a seeded torch.Generator in fp32, rounded once to the storage dtype, and stored.
Tokenizers are trained with spm_train (BPE, byte fallback) on the corpus embedded below.
"""
import argparse
import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io as sio  # noqa: E402
import xc2_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "../.."))

# --------------------------------------------------------------------------------------------
# tokenizer corpus (one sentence per line for spm_train)

CORPUS_EN = """\
Please describe this image in detail.
please write an article based on the images. Title: my favorite animal.
The image features a quote by Oscar Wilde, "Live life with no excuses, travel with no regret," set against a backdrop of a breathtaking sunset.
What is in the picture? There is a red square, a green circle and a blue line on a colourful gradient.
A small cat is sleeping on the sofa while the rain falls outside the window.
The quick brown fox jumps over the lazy dog. The five boxing wizards jump quickly.
Describe the colours, the shapes and the objects you can see in the image.
Write a short poem about the sea, the wind and the stars above the harbour.
How many animals are there in this photo, and what are they doing?
Giant pandas live in the mountains of central China and eat bamboo for most of the day.
Bamboo grows very fast; some species can grow almost one metre in a single day.
My favorite animal is the panda because it is calm, gentle and funny to watch.
Compare the two images and explain what is different between them.
The model reads the text and the images, then writes an answer for the user.
It is designed to be helpful, honest, and harmless, and it answers in the language of the user.
Thank you! Could you also summarise the article in three sentences?
In the morning we walked along the river, and in the evening we cooked dinner together.
The weather today is sunny with a light breeze; tomorrow it will be cloudy and cold.
Science, art, history and music are all part of a good education.
She said: "I don't know, but I'll find out." He replied: "That's fine, we're not in a hurry."
Numbers like 3.14159, 2024, 42 and 1,000,000 appear in many documents.
The answer is yes. The answer is no. Maybe the answer is somewhere in between.
An interleaved article mixes paragraphs of text with pictures placed at the right places.
Choose the best picture for each paragraph and explain your choice briefly.
"""

CORPUS_ZH = """\
请详细描述这张图片。
这张图片展示了一只大熊猫坐在竹林里吃竹子。
今天天气很好，我们一起去公园散步吧。
我最喜欢的动物是大熊猫，因为它们非常可爱。
上海人工智能实验室开发了浦语·灵笔多模态大模型。
请根据图片写一篇文章，标题是我最喜欢的动物。
中文和英文都可以用来和模型交流。
春天来了，花儿开了，小鸟在树上唱歌。
给定文章 根据上述文章，选择适合插入图像的行
适合插入图像的行是
给出适合在后插入的图像对应的标题。
标题是
后插入图像对应的标题是
根据给定上下文和候选图像，选择合适的配图：
候选图像包括:
最合适的图是
改写以下段落：
基于以下素材：
扩写以下段落：
缩写以下段落：
在以下两段中插入一段。
第一段：
第二段：
插入段的大纲：
现在后插入图像对应的标题是
这是一个测试句子，用来检查分词器是否正确。
北京是中国的首都，长江是中国最长的河流。
"""

CORPUS_CODE = """\
def main(argv):
    for i in range(10):
        print(f"value = {i * 2}")
    return 0
int main(int argc, char** argv) { return argc > 1 ? 0 : 1; }
if (x != nullptr && y->size() >= 4) { std::vector<int> v{1, 2, 3}; }
{"name": "tiny", "dtype": "bf16", "layers": [1, 2, 3]}
x = [a + b for a, b in zip(xs, ys)]  # list comprehension
SELECT id, name FROM users WHERE age >= 18 ORDER BY name;
$ ./build/xc2 chat --model m --image cat.jpg --prompt "<ImageHere>Describe this image."
<Seg0> <Seg1> <Seg2> <Seg3> <Seg4> <Seg5> <Seg6> <Seg7> <Seg8> <Seg9> <Seg10>
A.<image> B.<image> C.<image> D.<image>
<ImageHere>Please describe this image in detail.
<ImageHere> <ImageHere>please write an article based on the images.
"""

CORPUS_EMOJI = """\
I love pizza 🍕 and coffee ☕ in the morning 🌅.
Great job! 👍 🎉 😀 😂 ❤️
Weather: ☀️ 🌧️ ❄️ 🌈
"""

TEMPLATE_LINES = [
    "[UNUSED_TOKEN_146]system",
    "[UNUSED_TOKEN_146]user",
    "[UNUSED_TOKEN_146]assistant",
    "[UNUSED_TOKEN_145]",
    "[UNUSED_TOKEN_146]user Please describe this image in detail.[UNUSED_TOKEN_145]",
    "[UNUSED_TOKEN_146]assistant The image shows a panda.[UNUSED_TOKEN_145]",
]


def corpus_text():
    lines = []
    for block in (CORPUS_EN, CORPUS_ZH, CORPUS_CODE, CORPUS_EMOJI):
        lines += block.splitlines()
    lines += TEMPLATE_LINES
    for meta in (xc2_ref.DEFAULT_META, xc2_ref.COMPOSE_META):
        lines += [ln for ln in meta.split("\n") if ln]
    # repeat the most common prompt material so BPE merges it
    common = xc2_ref.DEFAULT_META.split("\n") + TEMPLATE_LINES[:4] + [
        "Please describe this image in detail.", "请详细描述这张图片。"]
    lines += common * 3
    return "\n".join(lines) + "\n"


TOKENIZERS = {
    # name: extra spm_train flags
    "tiny-a": {"vocab_size": 1000, "add_dummy_prefix": "true", "split_digits": "true",
               "allow_whitespace_only_pieces": "true"},
    "tiny-b": {"vocab_size": 800, "add_dummy_prefix": "false", "split_digits": "false",
               "allow_whitespace_only_pieces": "false"},
}


def spm_train(corpus, out_path, vocab_size, extra_flags):
    """A SentencePiece BPE model with byte fallback, ids <unk>=0 <s>=1 </s>=2, the chat markers as user pieces
    (ids 3, 4), an identity normaliser, single-threaded and unshuffled (deterministic), trained on `corpus`
    and written to out_path. extra_flags: the settings that differ between models (["--add_dummy_prefix=..."])."""
    with tempfile.TemporaryDirectory() as td:
        with open(os.path.join(td, "corpus.txt"), "w", encoding="utf-8") as f:
            f.write(corpus)
        cmd = [
            "spm_train", "--input=corpus.txt", "--model_prefix=tokenizer", "--model_type=bpe",
            f"--vocab_size={vocab_size}", "--byte_fallback=true", "--character_coverage=1.0",
            "--user_defined_symbols=[UNUSED_TOKEN_145],[UNUSED_TOKEN_146]",
            "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
            "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
            *extra_flags,
            "--num_threads=1", "--shuffle_input_sentence=false", "--input_sentence_size=0",
            "--max_sentence_length=8192", "--minloglevel=2",
        ]
        subprocess.run(cmd, cwd=td, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.copyfile(os.path.join(td, "tokenizer.model"), out_path)


def train_tokenizer(name, out_path):
    spec = TOKENIZERS[name]
    spm_train(corpus_text(), out_path, spec["vocab_size"],
              [f"--add_dummy_prefix={spec['add_dummy_prefix']}", f"--split_digits={spec['split_digits']}",
               f"--allow_whitespace_only_pieces={spec['allow_whitespace_only_pieces']}"])
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=out_path)
    for s in ("[UNUSED_TOKEN_146]", "[UNUSED_TOKEN_145]"):
        assert sp.encode(s, out_type=str) in ([s], ["▁", s]), (s, sp.encode(s, out_type=str))
        assert sp.encode(s.join(["a", "b"]), out_type=str).count(s) == 1
    assert (sp.piece_to_id("<unk>"), sp.piece_to_id("<s>"), sp.piece_to_id("</s>")) == (0, 1, 2)
    assert sp.piece_to_id("[UNUSED_TOKEN_145]") == 3  # make_weights scales output row 3
    return sp.get_piece_size()


# --------------------------------------------------------------------------------------------
# model specs

MODELS = {
    "tiny-a": dict(
        seed=1234, dtype=torch.bfloat16, torch_dtype="bfloat16", layout="sharded2",
        hidden=256, heads=2, kv_heads=1, ffn=512, layers=2, lora_r=8, plora_scale=2.0,
        max_pos=32768, rope_theta=1000000, rms_eps=1e-5, max_length=4096,
        img_size=56, proj_hidden=256,
        vision=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                    patch_size=14, image_size=42, layer_norm_eps=1e-5, hidden_act="quick_gelu"),
        store_native_pos=True, lm_head_scale=6.0, stop_row_gain=1.6,
    ),
    "tiny-b": dict(
        seed=5678, dtype=torch.float16, torch_dtype="float16", layout="single",
        hidden=256, heads=4, kv_heads=2, ffn=384, layers=3, lora_r=16, plora_scale=1.0,
        max_pos=64, rope_theta=10000, rms_eps=1e-6, max_length=1024,
        img_size=28, proj_hidden=192,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                    patch_size=14, image_size=28, layer_norm_eps=1e-6, hidden_act="quick_gelu"),
        store_native_pos=False, lm_head_scale=6.0, stop_row_gain=1.6,
    ),
}


def make_config(spec, vocab):
    return collections.OrderedDict([
        ("architectures", ["InternLMXComposer2ForCausalLM"]),
        ("attn_implementation", "eager"),
        ("auto_map", collections.OrderedDict([
            ("AutoConfig", "configuration_internlm_xcomposer2.InternLMXcomposer2Config"),
            ("AutoModel", "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM"),
            ("AutoModelForCausalLM", "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM")])),
        ("bias", False),
        ("bos_token_id", 1),
        ("eos_token_id", 2),
        ("hidden_act", "silu"),
        ("hidden_size", spec["hidden"]),
        ("img_size", spec["img_size"]),
        ("initializer_range", 0.02),
        ("intermediate_size", spec["ffn"]),
        ("max_length", spec["max_length"]),
        ("max_position_embeddings", spec["max_pos"]),
        ("model_type", "internlmxcomposer2"),
        ("num_attention_heads", spec["heads"]),
        ("num_hidden_layers", spec["layers"]),
        ("num_key_value_heads", spec["kv_heads"]),
        ("pad_token_id", 2),
        ("plora_scale", spec["plora_scale"]),
        ("rms_norm_eps", spec["rms_eps"]),
        ("rope_scaling", collections.OrderedDict([("factor", 1.0), ("type", "dynamic")])),
        ("rope_theta", spec["rope_theta"]),
        ("tie_word_embeddings", False),
        ("torch_dtype", spec["torch_dtype"]),
        ("transformers_version", "4.33.1"),
        ("use_cache", False),
        ("vision_config", collections.OrderedDict(spec["vision"])),
        ("vocab_size", vocab),
    ])


def make_weights(spec, vocab):
    """Upstream names and order (spec 4). Returns OrderedDict of tensors in the storage dtype."""
    g = torch.Generator().manual_seed(spec["seed"])
    dt = spec["dtype"]

    def randn(*shape, std=1.0, mean=0.0):
        return (torch.randn(*shape, generator=g) * std + mean).to(dt)

    def linear(out_f, in_f, gain=1.0):
        return randn(out_f, in_f, std=gain / in_f ** 0.5)

    def norm(n, noise=0.1):
        return randn(n, std=noise, mean=1.0)

    D, F_, H, Hk = spec["hidden"], spec["ffn"], spec["heads"], spec["kv_heads"]
    d = D // H
    qkv_rows = (H + 2 * Hk) * d
    r = spec["lora_r"]
    sd = collections.OrderedDict()
    sd["model.tok_embeddings.weight"] = randn(vocab, D, std=1.0)
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        sd[p + "attention.wqkv.weight"] = linear(qkv_rows, D)
        sd[p + "attention.wqkv.Plora_A.weight"] = linear(r, D)
        sd[p + "attention.wqkv.Plora_B.weight"] = linear(qkv_rows, r, gain=0.5)
        sd[p + "attention.wo.weight"] = linear(D, D)
        sd[p + "attention.wo.Plora_A.weight"] = linear(r, D)
        sd[p + "attention.wo.Plora_B.weight"] = linear(D, r, gain=0.5)
        for wn, (o, n) in (("w1", (F_, D)), ("w3", (F_, D)), ("w2", (D, F_))):
            sd[p + f"feed_forward.{wn}.weight"] = linear(o, n)
            sd[p + f"feed_forward.{wn}.Plora_A.weight"] = linear(r, n)
            sd[p + f"feed_forward.{wn}.Plora_B.weight"] = linear(o, r, gain=0.5)
        sd[p + "attention_norm.weight"] = norm(D)
        sd[p + "ffn_norm.weight"] = norm(D)
    sd["model.norm.weight"] = norm(D)
    head = torch.randn(vocab, D, generator=g) * (spec["lm_head_scale"] / D ** 0.5)
    # larger rows for the stop tokens (</s> = 2, [UNUSED_TOKEN_145] = 3) so some greedy runs stop early
    head[2] *= spec["stop_row_gain"]
    head[3] *= spec["stop_row_gain"]
    sd["output.weight"] = head.to(dt)

    v = spec["vision"]
    Dv, Iv, P = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    native = v["image_size"] // P
    grid = spec["img_size"] // P
    rows = (native if spec["store_native_pos"] else grid) ** 2 + 1
    vp = "vit.vision_tower.vision_model."
    sd[vp + "embeddings.class_embedding"] = randn(Dv, std=0.5)
    sd[vp + "embeddings.patch_embedding.weight"] = randn(Dv, 3, P, P, std=1.0 / (3 * P * P) ** 0.5)
    sd[vp + "embeddings.position_embedding.weight"] = randn(rows, Dv, std=0.5)
    sd[vp + "pre_layrnorm.weight"] = norm(Dv)
    sd[vp + "pre_layrnorm.bias"] = randn(Dv, std=0.1)
    for li in range(v["num_hidden_layers"]):
        lp = f"{vp}encoder.layers.{li}."
        for pn in ("k_proj", "v_proj", "q_proj", "out_proj"):
            sd[lp + f"self_attn.{pn}.weight"] = linear(Dv, Dv)
            sd[lp + f"self_attn.{pn}.bias"] = randn(Dv, std=0.1)
        sd[lp + "layer_norm1.weight"] = norm(Dv)
        sd[lp + "layer_norm1.bias"] = randn(Dv, std=0.1)
        sd[lp + "mlp.fc1.weight"] = linear(Iv, Dv)
        sd[lp + "mlp.fc1.bias"] = randn(Iv, std=0.1)
        sd[lp + "mlp.fc2.weight"] = linear(Dv, Iv)
        sd[lp + "mlp.fc2.bias"] = randn(Dv, std=0.1)
        sd[lp + "layer_norm2.weight"] = norm(Dv)
        sd[lp + "layer_norm2.bias"] = randn(Dv, std=0.1)
    sd[vp + "post_layernorm.weight"] = norm(Dv)
    sd[vp + "post_layernorm.bias"] = randn(Dv, std=0.1)
    Pj = spec["proj_hidden"]
    sd["vision_proj.0.weight"] = linear(Pj, Dv)
    sd["vision_proj.0.bias"] = randn(Pj, std=0.1)
    sd["vision_proj.2.weight"] = linear(D, Pj)
    sd["vision_proj.2.bias"] = randn(D, std=0.1)
    return sd


def torch_save(path, tensors):
    # each tensor gets its own storage (no shared views), deterministic zip
    od = collections.OrderedDict((k, v.clone().contiguous()) for k, v in tensors.items())
    torch.save(od, path)


def write_side_files(folder, cfg, tok_path):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    gen = collections.OrderedDict([("_from_model_config", True), ("bos_token_id", 1), ("eos_token_id", 2),
                                   ("max_length", cfg["max_length"]), ("pad_token_id", 2),
                                   ("transformers_version", "4.33.1"), ("use_cache", False)])
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    tc = collections.OrderedDict([
        ("auto_map", {"AutoTokenizer": ["tokenization_internlm_xcomposer2.InternLMXComposer2Tokenizer", None]}),
        ("bos_token", "<s>"), ("clean_up_tokenization_spaces", False), ("eos_token", "</s>"),
        ("model_max_length", 1000000000000000019884624838656), ("pad_token", "</s>"),
        ("padding_side", "right"), ("tokenizer_class", "InternLMXComposer2Tokenizer"), ("unk_token", "<unk>"),
    ])
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
        f.write("\n")
    stm = collections.OrderedDict([("bos_token", "<s>"), ("eos_token", "</s>"), ("pad_token", "</s>"),
                                   ("unk_token", "<unk>")])
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(stm, f, indent=2)
        f.write("\n")
    if os.path.abspath(tok_path) != os.path.abspath(os.path.join(folder, "tokenizer.model")):
        shutil.copyfile(tok_path, os.path.join(folder, "tokenizer.model"))


def clean_folder(folder):
    if os.path.isdir(folder):
        for fn in os.listdir(folder):
            os.remove(os.path.join(folder, fn))
    os.makedirs(folder, exist_ok=True)


def make_model(name, out_root):
    spec = MODELS[name]
    folder = os.path.join(out_root, name)
    bin_folder = os.path.join(out_root, name + "-bin")
    clean_folder(folder)
    clean_folder(bin_folder)
    tok_path = os.path.join(folder, "tokenizer.model")
    vocab = train_tokenizer(name, tok_path)
    cfg = make_config(spec, vocab)
    sd = make_weights(spec, vocab)
    write_side_files(folder, cfg, tok_path)
    write_side_files(bin_folder, cfg, tok_path)
    if spec["layout"] == "sharded2":
        sio.write_sharded(folder, sd, 2, prefix="model")
        sio.write_sharded(bin_folder, sd, 2, prefix="pytorch_model", ext="bin", saver=torch_save)
    else:
        sio.write_file(os.path.join(folder, "model.safetensors"), sd, metadata={"format": "pt"})
        torch_save(os.path.join(bin_folder, "pytorch_model.bin"), sd)
    # self-check: both formats load to identical tensors, names and order preserved
    a = xc2_ref.load_state_dict(folder)
    b = xc2_ref.load_state_dict(bin_folder)
    assert list(a) == list(sd) == list(b)
    for k in sd:
        assert a[k].dtype == b[k].dtype == spec["dtype"] and torch.equal(a[k], sd[k]) and torch.equal(b[k], sd[k]), k
    n_params = sum(t.numel() for t in sd.values())
    for fd in (folder, bin_folder):
        size = sum(os.path.getsize(os.path.join(fd, f)) for f in os.listdir(fd))
        print(f"{os.path.relpath(fd, ROOT)}: {len(sd)} tensors, {n_params} params, vocab {vocab}, "
              f"{size / 1e6:.2f} MB")
        assert size < 10e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/data/models"))
    ap.add_argument("--models", default="tiny-a,tiny-b")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.models.split(","):
        make_model(name, os.path.abspath(args.out))


if __name__ == "__main__":
    main()
