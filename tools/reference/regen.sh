#!/usr/bin/env bash
# Regenerates everything under tests/data/{images,models,golden} from the scripts in tools/reference/.
# Deterministic: running it twice gives byte-identical files (checked with sha256sum on Debian bookworm,
# Python 3.11, torch 1.13, Pillow 9.4, sentencepiece 0.1.97). Needs: tools/install_deps.sh --reference
#   tools/reference/regen.sh            regenerate + run the reference self-tests
#   tools/reference/regen.sh --verify   regenerate twice and compare sha256 of all outputs
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0

gen() {
  $PY tools/reference/make_test_images.py
  $PY tools/reference/make_jpeg_goldens.py
  $PY tools/reference/make_tiny.py
  $PY tools/reference/make_golden.py
  $PY tools/reference/make_tiny_quant.py
  $PY tools/reference/make_golden.py --what forward --models quant
  $PY tools/reference/make_beam_goldens.py
  $PY tools/reference/make_beam_goldens.py --demo
}
sums() { find tests/data/images tests/data/models tests/data/golden -type f -print0 | sort -z | xargs -0 sha256sum; }

gen
$PY tools/reference/test_ref.py
if [[ "${1:-}" == "--verify" ]]; then
  sums > /tmp/xc2_regen_1.sha256
  gen > /dev/null
  sums > /tmp/xc2_regen_2.sha256
  diff /tmp/xc2_regen_1.sha256 /tmp/xc2_regen_2.sha256 && echo "regen.sh: deterministic ($(wc -l < /tmp/xc2_regen_1.sha256) files)"
fi
