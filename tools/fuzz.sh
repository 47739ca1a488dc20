#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz, clang with ASan + UBSan) into build-fuzz/ and runs each for the
# time asked, from seed corpora made of tests/data. A crash stops that harness; its input is kept under
# build-fuzz/crashes/<harness>/ (reproduce: build-fuzz/tests/fuzz/<harness> <file>) and the script exits 1.
#
#   tools/fuzz.sh                 # 60 s per harness, all harnesses
#   tools/fuzz.sh 600 fuzz_zip    # 10 minutes, one harness
#   tools/fuzz.sh --ci            # what CI runs (tools/run_tests.sh): 15 s per harness from a fixed seed, so a
#                                 # run repeats the same inputs
#
# Harnesses: fuzz_safetensors fuzz_zip fuzz_pickle fuzz_config fuzz_image fuzz_tokenizer fuzz_jsonl fuzz_compose
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
seed_args=()
if [[ "$secs" == "--ci" ]]; then
  secs=15
  seed_args=(-seed=1)
fi
shift || true
all=(fuzz_safetensors fuzz_zip fuzz_pickle fuzz_config fuzz_image fuzz_tokenizer fuzz_jsonl fuzz_compose)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

tools/install_deps.sh --fuzz
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXC2_FUZZ=ON -DXC2_WITH_CUDA=OFF \
  -DXC2_BUILD_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >/dev/null

# Seed corpora (small files only: libFuzzer mutates faster on short inputs).
seed() {  # $1 harness, then files
  local d=build-fuzz/corpus/$1
  shift
  mkdir -p "$d"
  for f in "$@"; do
    [[ -f "$f" && $(stat -c %s "$f") -le 262144 ]] && cp -f "$f" "$d/$(echo "$f" | tr '/' '_')"
  done
  return 0
}
seed fuzz_safetensors tests/data/io/*.safetensors tests/data/io/sharded/*.safetensors tests/data/golden/images/*.safetensors
seed fuzz_zip tests/data/io/*.bin
mkdir -p build-fuzz/corpus/fuzz_pickle
/usr/bin/python3 - <<'PY'
import glob, os, zipfile
for p in glob.glob("tests/data/io/*.bin"):
    try:
        with zipfile.ZipFile(p) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    open(os.path.join("build-fuzz/corpus/fuzz_pickle", os.path.basename(p) + ".pkl"), "wb").write(z.read(n))
    except zipfile.BadZipFile:
        pass
PY
seed fuzz_config tests/data/models/*/config.json models/*/config.json
seed fuzz_image tests/data/images/* examples/*.png
seed fuzz_tokenizer tests/data/models/tiny-a/tokenizer.model tests/data/models/tiny-b/tokenizer.model
mkdir -p build-fuzz/corpus/fuzz_jsonl build-fuzz/corpus/fuzz_compose
printf '{"path": "a.png", "caption": "A red circle.", "ms": 1.5}' > build-fuzz/corpus/fuzz_jsonl/record
printf '{"path": "x\\udcff.png", "error": "bad"}' > build-fuzz/corpus/fuzz_jsonl/escaped
printf '# Title\n\nFirst paragraph.\n\n![a red circle](img/a.png)\n\nSecond paragraph.\n\n> image: a placeholder\n' \
  > build-fuzz/corpus/fuzz_compose/article

status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/crashes/$t" "build-fuzz/work/$t"
  cp -n build-fuzz/corpus/"$t"/* "build-fuzz/work/$t/" 2>/dev/null || true
  log=build-fuzz/$t.log
  if build-fuzz/tests/fuzz/"$t" "build-fuzz/work/$t" "${seed_args[@]}" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 \
      -timeout=20 -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$t/" >"$log" 2>&1; then
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    echo "$t: ok, ${secs} s, ${runs} executions"
  else
    echo "$t: FAILED (log: $log, input in build-fuzz/crashes/$t/)"
    grep -E "ERROR|SUMMARY" "$log" | head -5 || true
    status=1
  fi
done
exit $status
