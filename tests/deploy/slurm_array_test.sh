#!/usr/bin/env bash
# tools/deploy/slurm-caption.sh run as 3 simulated Slurm array tasks on this machine (ctest label `deploy`):
# one task killed part-way and rerun (requeued) continues its part; merge-captions.sh then covers every input
# image exactly once, with the captions of one unsharded `xc2 caption` run.
#   tests/deploy/slurm_array_test.sh XC2_BINARY SOURCE_DIR
set -euo pipefail
XC2=$1 SRC=$2
WORK=$(mktemp -d /tmp/xc2-slurm-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
export XC2 XC2_MODEL="$SRC/models/xc2-shapes" SLURM_CPUS_PER_TASK=2
cd "$WORK"
mkdir imgs
for i in $(seq 1 10); do cp "$SRC/examples/shapes-$(((i - 1) % 4 + 1)).png" "imgs/img-$i.png"; done
printf 'not an image' >imgs/broken.png
ls "$PWD"/imgs/*.png >list.txt
n_inputs=$(wc -l <list.txt)

# Task 2 first runs on a list cut short (as if killed after its first images), then is requeued on the full list.
head -n 4 list.txt >short.txt
SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_COUNT=3 "$SRC/tools/deploy/slurm-caption.sh" short.txt out -n 24 \
  || fail "task 2 (cut short)"
before=$(wc -l <out/part-2-of-3.jsonl)
((before >= 1)) || fail "task 2 wrote nothing before it was cut short"
cp out/part-2-of-3.jsonl part2-before.jsonl
for k in 1 2 3; do
  SLURM_ARRAY_TASK_ID=$k SLURM_ARRAY_TASK_COUNT=3 "$SRC/tools/deploy/slurm-caption.sh" list.txt out -n 24 \
    || fail "task $k"
done
# The requeued task kept its finished records byte for byte.
head -c "$(stat -c %s part2-before.jsonl)" out/part-2-of-3.jsonl | cmp - part2-before.jsonl || fail "part 2 rewritten"
(($(wc -l <out/part-2-of-3.jsonl) > before)) || fail "the requeued task 2 added nothing"
"$SRC/tools/deploy/merge-captions.sh" out/part-*-of-3.jsonl >merged.jsonl
"$XC2" caption --list list.txt --out whole.jsonl -n 24 --threads 2 --no-progress -q || [[ $? -eq 1 ]] ||
  fail "the unsharded run"
python3 - list.txt merged.jsonl whole.jsonl "$n_inputs" <<'PY' || fail "merged output"
import json, sys
inputs = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()]
merged = [json.loads(l) for l in open(sys.argv[2])]
whole = {r["path"]: r for r in map(json.loads, open(sys.argv[3]))}
paths = [r["path"] for r in merged]
assert len(inputs) == int(sys.argv[4]) == 11, inputs
assert sorted(paths) == sorted(inputs), (sorted(set(inputs) - set(paths)), len(paths), len(set(paths)))
for r in merged:
    w = whole[r["path"]]
    assert ("caption" in r) == ("caption" in w), (r, w)
    if "caption" in r:
        assert r["caption"] == w["caption"], (r, w)
assert sum("error" in r for r in merged) == 1, "the broken image is one error record"
PY
echo PASS
