#!/usr/bin/python3
"""Held-out evaluation of the demo model (models/xc2-shapes) through the xc2 binary and through the
PyTorch reference.

    /usr/bin/python3 tools/reference/eval_demo.py build-demo/xc2 [--model models/xc2-shapes] [--n 200]

Generates --n scenes with the evaluation seed (different from the training stream and from the
committed examples), writes them as PNGs to a temporary folder, captions them with
`xc2 caption --prompt "Describe the picture." --list ...` (greedy) and with xc2_ref (fp32, greedy, the
same prompt, the same PNG files), and prints:
  * object-level accuracy: the fraction of the scenes' shapes named in the caption with the right colour,
    kind and position (parsed from the caption text);
  * exact-match caption accuracy (the caption equals the ground-truth sentence);
  * how many of the --n greedy outputs are identical between xc2 and the reference (text and token
    count); for every disagreement, the token ids of both (xc2 chat --format json) and where they diverge.
With --qa it also asks every scene one question (how many / what colour / where) and scores the answers.
With --multiturn it instead holds one conversation per scene through `xc2 chat --greedy` reading messages
from stdin (history in the KV cache, as the README's REPL): `/image PATH`, "Describe the picture.", then two
follow-up questions (one about the colour or position of a named kind present in the picture, one drawn from
all of the scene's questions); every other scene starts with a greeting. It scores the first answer's objects
and the follow-ups exactly, overall and for the colour/position-of-a-named-kind questions (xc2), and holds the first
--ref-n conversations through the reference too (the token layout of a session, as train_demo.py trains on it).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_demo as td  # noqa: E402
import xc2_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "../.."))
EVAL_SEED = 777001


def eval_scenes(n, seed=EVAL_SEED):
    rng = random.Random(seed)
    return [td.make_scene(rng) for _ in range(n)]


def qa_for(scene, rng):
    """one question per scene, cycling through the kinds of question; -> (question, expected answer)"""
    pairs = td.qa_pairs(scene, rng)
    present = [p for p in pairs if not p[1].startswith("There is no")]
    return rng.choice(present)


XC2_ARGS = []  # --xc2-arg


def run_xc2_caption(xc2, model, paths, question, max_new, threads, workdir):
    lst = os.path.join(workdir, "list.txt")
    out = os.path.join(workdir, "xc2.jsonl")
    with open(lst, "w") as f:
        f.write("\n".join(paths) + "\n")
    if os.path.exists(out):
        os.remove(out)
    cmd = [xc2, "caption", "--model", model, "--prompt", question, "--list", lst, "--out", out,
           "--no-progress", "-n", str(max_new), "--threads", str(threads), "-q"] + XC2_ARGS
    t = time.time()
    subprocess.run(cmd, check=True)
    dt = time.time() - t
    res = {}
    with open(out) as f:
        for line in f:
            j = json.loads(line)
            if "error" in j:
                raise RuntimeError(f"xc2 failed on {j['path']}: {j['error']}")
            res[j["path"]] = j
    return res, dt


def xc2_chat_tokens(xc2, model, path, question, max_new, threads):
    cmd = [xc2, "chat", "--model", model, "--image", path, "--greedy", "--format", "json", "-n", str(max_new),
           "--threads", str(threads), "-q"] + XC2_ARGS + ["--", question]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def multiturn_conversation(scene, path, rng, greet):
    """-> (stdin lines, [(kind, question, expected answer) per message]); kind: caption, greeting, named, other"""
    pairs = td.qa_pairs(scene, rng)
    named = [p for p in pairs if (p[0].startswith("What colour is the") or p[0].startswith("Where is the"))
             and not p[1].startswith("There is no")]
    lines, msgs = [], []
    if greet:
        lines.append("Hello")
        msgs.append(("greeting", "Hello", None))
    lines += [f"/image {path}", "Describe the picture."]
    msgs.append(("caption", "Describe the picture.", td.caption(scene)))
    first = rng.choice(named) if named else rng.choice(pairs)
    second = rng.choice([p for p in pairs if p != first])
    for kind, (q, want) in (("named" if named else "other", first), ("other", second)):
        lines.append(q)
        msgs.append((kind, q, want))
    return lines, msgs


class RefSession:
    """The same conversation through xc2_ref: the token sequence `xc2 chat` keeps in its KV cache (the layout
    train_demo.Packer trains on: each later turn continues after the previous answer with
    "[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]user\n...", no BOS before it), the whole sequence prefilled again for
    every turn, greedy with the repetition penalty over the prompt only while no picture was given (text path)."""

    def __init__(self, ref):
        self.ref = ref
        self.packer = td.Packer(ref.tok, ref.n_visual, ref.cfg.img_size)
        self.seq, self.pixels = [], None

    def ask(self, query, image=None, max_new=96):
        pk = self.packer
        if not self.seq:
            if image is None:
                self.seq = pk.txt_prefix + pk.text_cont(query)
            else:
                self.seq = pk.img_prefix + [-1] * pk.n_visual + pk.image_cont(query)
        elif image is None:
            self.seq += [pk.im_end] + pk.follow_cont(query)
        else:
            assert self.pixels is None, "one picture per conversation"
            self.seq += [pk.im_end] + pk.image_head_after_text() + [-1] * pk.n_visual + pk.image_cont(query)
        if image is not None:
            self.pixels = self.ref.pixels([image])
        if self.pixels is None:
            prompt = xc2_ref.Prompt("chat_text", "", [{"ids": list(self.seq)}], 0)
        else:
            s0 = self.seq.index(-1)
            s1 = s0 + pk.n_visual
            prompt = xc2_ref.Prompt("chat_image", "", [{"ids": self.seq[:s0]}, {"image": 0}, {"ids": self.seq[s1:]}], 1)
        r = self.ref.generate(prompt, pixels=self.pixels, max_new_tokens=max_new,
                              penalty_includes_prompt=self.pixels is None)
        toks = answer_tokens(self.ref, r)
        self.seq += toks
        return r["text"]


def run_multiturn(a, scenes, paths):
    rng = random.Random(a.seed + 2)
    objs = {False: [0, 0], True: [0, 0]}  # after a greeting or not: objects named right, objects
    follow = {"named": [0, 0], "other": [0, 0]}
    shown = 0
    if a.no_reference:
        a.ref_n = 0
    ref = xc2_ref.Model(a.model, dtype=torch.float32) if a.ref_n else None
    n_ref = same_ref = 0
    for i, (sc, p) in enumerate(zip(scenes, paths)):
        greet = i % 2 == 1
        lines, msgs = multiturn_conversation(sc, p, rng, greet)
        cmd = [a.xc2, "chat", "--model", a.model, "--greedy", "-n", str(a.max_new_tokens), "--threads",
               str(a.threads), "-q"] + XC2_ARGS
        out = subprocess.run(cmd, input="\n".join(lines) + "\n", check=True, capture_output=True, text=True).stdout
        answers = out.split("\n")
        if i < a.ref_n:
            rs, lines_i = RefSession(ref), iter(lines)
            image, ref_answers = None, []
            for ln in lines_i:
                if ln.startswith("/image "):
                    image = ln[len("/image "):]
                    continue
                ref_answers.append(rs.ask(ln, image, a.max_new_tokens))
                image = None
            n_ref += 1
            if ref_answers == answers[:len(ref_answers)]:
                same_ref += 1
            else:
                print(f"  scene {i}: xc2 and the reference differ: xc2 {answers[:len(ref_answers)]!r} ref {ref_answers!r}")
        for k, (kind, q, want) in enumerate(msgs):
            got = answers[k] if k < len(answers) else ""
            if kind == "caption":
                ok, tot = td.object_score(sc, got)
                objs[greet][0] += ok
                objs[greet][1] += tot
            elif kind in follow:
                follow[kind][0] += got == want
                follow[kind][1] += 1
                if got != want and shown < a.show:
                    shown += 1
                    print(f"  scene {i}: {q!r} -> {got!r} (want {want!r})")
    n_f = follow["named"][1] + follow["other"][1]
    ok_f = follow["named"][0] + follow["other"][0]
    print(f"\n{a.n} conversations (seed {a.seed}), xc2 chat --greedy with history, model {a.model}")
    for greet, (ok, tot) in objs.items():
        print(f"  caption object-level accuracy {'after a greeting' if greet else 'as the first message'}: "
              f"{ok}/{tot} = {ok / max(tot, 1):.4f}")
    print(f"  follow-up questions exact {ok_f}/{n_f} = {ok_f / max(n_f, 1):.4f}; colour/position of a named kind "
          f"{follow['named'][0]}/{follow['named'][1]} = {follow['named'][0] / max(follow['named'][1], 1):.4f}")
    if n_ref:
        print(f"  conversations whose every answer is identical through xc2 and the reference (fp32, same token "
              f"layout): {same_ref}/{n_ref}")
    return 0


def answer_tokens(ref, r):
    """reference tokens without the trailing stop token (xc2 reports that one as stop_reason)"""
    t = list(r["tokens"])
    if t and t[-1] in ref.stop_ids():
        t.pop()
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("xc2", help="path of the xc2 binary")
    ap.add_argument("--model", default=os.path.join(ROOT, "models/xc2-shapes"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--question", default=td.EVAL_QUESTION)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qa", action="store_true", help="also one question per scene (how many/colour/where)")
    ap.add_argument("--multiturn", action="store_true",
                    help="instead: one conversation per scene with follow-up questions (xc2 chat with history)")
    ap.add_argument("--ref-n", type=int, default=20,
                    help="--multiturn: also hold the first N conversations through the reference and compare")
    ap.add_argument("--keep", default="", help="write the PNGs here instead of a temporary folder")
    ap.add_argument("--show", type=int, default=5, help="print this many example captions")
    ap.add_argument("--no-reference", action="store_true", help="score xc2 only (no PyTorch generation)")
    ap.add_argument("--xc2-arg", action="append", default=[],
                    help="extra argument for every xc2 command (repeatable), e.g. --xc2-arg=--exact")
    a = ap.parse_args()
    XC2_ARGS.extend(a.xc2_arg)
    torch.set_num_threads(a.threads)
    scenes = eval_scenes(a.n, a.seed)
    workdir = a.keep or tempfile.mkdtemp(prefix="xc2_eval_demo_")
    os.makedirs(workdir, exist_ok=True)
    paths = []
    for i, sc in enumerate(scenes):
        p = os.path.join(workdir, f"scene-{i:03d}.png")
        td.render(sc).save(p)
        paths.append(p)
    if a.multiturn:
        return run_multiturn(a, scenes, paths)

    xres, x_dt = run_xc2_caption(a.xc2, a.model, paths, a.question, a.max_new_tokens, a.threads, workdir)
    if a.no_reference:
        ok = tot = ex = 0
        for sc, p in zip(scenes, paths):
            o, t_ = td.object_score(sc, xres[p]["caption"])
            ok, tot, ex = ok + o, tot + t_, ex + (xres[p]["caption"] == td.caption(sc))
        print(f"\n{a.n} held-out scenes (seed {a.seed}), question {a.question!r}, greedy, model {a.model}"
              + (f", xc2 {' '.join(XC2_ARGS)}" if XC2_ARGS else ""))
        print(f"  xc2: object-level accuracy {ok}/{tot} = {ok / tot:.4f}, exact-match captions {ex}/{a.n} = "
              f"{ex / a.n:.4f}; time {x_dt:.1f} s ({a.threads} threads)")
        json.dump({p: xres[p]["caption"] for p in paths}, open(os.path.join(workdir, "captions.json"), "w"))
        return 0
    ref = xc2_ref.Model(a.model, dtype=torch.float32)
    t = time.time()
    rres = []
    for p in paths:
        pr = ref.prepare_chat(a.question, [p])
        rres.append(ref.generate(pr, [p], max_new_tokens=a.max_new_tokens))
    r_dt = time.time() - t

    stats = {"xc2": [0, 0, 0], "ref": [0, 0, 0]}  # objects ok, objects, exact
    same, diffs = 0, []
    for i, (sc, p) in enumerate(zip(scenes, paths)):
        truth = td.caption(sc)
        xt = xres[p]["caption"]
        rt = rres[i]["text"]
        for name, text in (("xc2", xt), ("ref", rt)):
            ok, tot = td.object_score(sc, text)
            stats[name][0] += ok
            stats[name][1] += tot
            stats[name][2] += text == truth
        if xt == rt and xres[p]["generated_tokens"] == len(answer_tokens(ref, rres[i])):
            same += 1
        else:
            diffs.append(i)
        if i < a.show:
            print(f"{os.path.basename(p)}: truth {truth!r}\n    xc2 {xt!r}\n    ref {rt!r}")

    print(f"\n{a.n} held-out scenes (seed {a.seed}), question {a.question!r}, greedy, model {a.model}"
          + (f", xc2 {' '.join(XC2_ARGS)}" if XC2_ARGS else ""))
    for name in ("xc2", "ref"):
        ok, tot, ex = stats[name]
        print(f"  {name}: object-level accuracy {ok}/{tot} = {ok / tot:.4f}, exact-match captions "
              f"{ex}/{a.n} = {ex / a.n:.4f}")
    print(f"  identical greedy outputs xc2 vs reference: {same}/{a.n}")
    print(f"  time: xc2 caption {x_dt:.1f} s ({a.threads} threads), reference fp32 {r_dt:.1f} s")
    for i in diffs:
        p = paths[i]
        j = xc2_chat_tokens(a.xc2, a.model, p, a.question, a.max_new_tokens, a.threads)
        rt = answer_tokens(ref, rres[i])
        k = next((n for n, (u, v) in enumerate(zip(j["tokens"], rt)) if u != v), min(len(j["tokens"]), len(rt)))
        margin = rres[i]["margins"][k] if k < len(rres[i]["margins"]) else float("nan")
        print(f"  DIFF {p}: first differing generated token {k} (xc2 {j['tokens'][k:k + 3]}, ref {rt[k:k + 3]}); "
              f"reference top-1 margin there {margin:.4g}\n    xc2 {j['text']!r}\n    ref {rres[i]['text']!r}")

    if a.qa:
        rng = random.Random(a.seed + 1)
        ok_x = ok_r = same_qa = 0
        for sc, p in zip(scenes, paths):
            q, want = qa_for(sc, rng)
            j = xc2_chat_tokens(a.xc2, a.model, p, q, a.max_new_tokens, a.threads)
            r = ref.generate(ref.prepare_chat(q, [p]), [p], max_new_tokens=a.max_new_tokens)
            ok_x += j["text"] == want
            ok_r += r["text"] == want
            same_qa += j["tokens"] == answer_tokens(ref, r)
        print(f"  questions (one per scene): xc2 exact {ok_x}/{a.n}, reference exact {ok_r}/{a.n}, "
              f"identical tokens {same_qa}/{a.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
