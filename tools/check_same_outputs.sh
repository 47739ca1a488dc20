#!/usr/bin/env bash
# Runs a fixed set of xc2 commands (logits, greedy and seeded sampled chat, a two-turn session, batched
# captions, compose) on the tiny test models and the demo model with two binaries, and compares every
# output byte for byte. For refactors that must not change a single bit on the CPU:
#
#   git worktree add /tmp/xc2-base HEAD~1 && (cd /tmp/xc2-base && tools/build.sh)
#   tools/check_same_outputs.sh /tmp/xc2-base/build/xc2 build/xc2
#
# Exit 0 when all outputs are identical, 1 otherwise (the differing files are named).
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BASE_XC2 NEW_XC2" >&2; exit 2; }
base=$1 new=$2
out=$(mktemp -d /tmp/xc2-same.XXXXXX)
trap 'rm -rf "$out"' EXIT

models=(tests/data/models/tiny-a tests/data/models/tiny-a-bin tests/data/models/tiny-b models/xc2-shapes)
img1=examples/shapes-1.png img2=examples/shapes-2.png

# Timings differ from run to run: drop them from the JSON outputs.
strip_times() { sed -E 's/, "timings_ms": \{[^}]*\}//; s/, "ms": [0-9.e+-]+//'; }

run_all() {  # $1 = binary, $2 = output folder
  local x=$1 d=$2 i=0
  mkdir -p "$d"
  for m in "${models[@]}"; do
    i=$((i + 1))
    local o=(-m "$m" --device cpu -t 2 -q)
    "$x" logits "${o[@]}" -i "$img1" "Describe the picture." --out "$d/$i-logits-img.npy" 2>"$d/$i-logits-img.err"
    "$x" logits "${o[@]}" -i "$img1" -i "$img2" "<ImageHere> and <ImageHere>: which has more shapes?" \
      --out "$d/$i-logits-2img.npy" 2>"$d/$i-logits-2img.err"
    "$x" logits "${o[@]}" "Hello, how are you today?" --out "$d/$i-logits-text.npy" 2>"$d/$i-logits-text.err"
    "$x" logits "${o[@]}" --raw "Hello world" --out "$d/$i-logits-raw.npy" 2>"$d/$i-logits-raw.err"
    "$x" chat "${o[@]}" --greedy --format json -n 40 --seed 1 -i "$img1" "Describe the picture." 2>&1 |
      strip_times >"$d/$i-greedy.json"
    "$x" chat "${o[@]}" --format json -n 40 --seed 7 -i "$img2" "How many shapes are there?" 2>&1 |
      strip_times >"$d/$i-sample.json"
    "$x" chat "${o[@]}" --greedy --format json -n 40 --seed 1 --ignore-eos "Tell me a story." 2>&1 |
      strip_times >"$d/$i-text.json"
    printf '/image %s\nDescribe the picture.\nWhere is the circle?\n' "$img1" |
      "$x" chat "${o[@]}" --greedy -n 24 >"$d/$i-session.txt" 2>&1
    "$x" caption "${o[@]}" -n 24 -b 3 --no-progress "$img1" "$img2" examples/shapes-3.png 2>&1 |
      strip_times >"$d/$i-caption.jsonl"
  done
  "$x" compose -m models/xc2-shapes --device cpu -t 2 -q --seed 3 "Write about shapes." \
    --out "$d/compose.md" >"$d/compose.out" 2>&1
}

run_all "$base" "$out/base"
run_all "$new" "$out/new"
status=0
for f in "$out"/base/*; do
  n="$out/new/$(basename "$f")"
  if ! cmp -s "$f" "$n"; then
    echo "differs: $(basename "$f")"
    status=1
  fi
done
[ "$(ls "$out/base" | wc -l)" -eq "$(ls "$out/new" | wc -l)" ] || { echo "different sets of outputs"; status=1; }
[ $status -eq 0 ] && echo "all $(ls "$out/base" | wc -l) outputs identical"
exit $status
