#!/usr/bin/env bash
# Installs the Debian packages xc2 needs (idempotent: only missing packages are installed).
#   tools/install_deps.sh              build and test dependencies (with cpp-httplib for xc2 serve, node and npm
#                                      for its tests)
#   tools/install_deps.sh --reference  also the Python packages of tools/reference (PyTorch reference)
#   tools/install_deps.sh --fuzz       also clang and libFuzzer (tools/fuzz.sh)
set -euo pipefail

pkgs=(build-essential cmake pkg-config git libstb-dev nlohmann-json3-dev libsentencepiece-dev
      libcli11-dev googletest libgtest-dev libwebp-dev libjpeg62-turbo-dev libcpp-httplib-dev curl python3)
# The xc2 serve tests drive the server with the openai npm package (tests/serve, `npm ci`): node and npm from
# Debian unless some node is there already (e.g. NodeSource's, which brings its own npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  pkgs+=(nodejs npm)
fi
if [[ "${1:-}" == "--fuzz" ]]; then
  pkgs+=(clang libclang-rt-14-dev)
fi
if [[ "${1:-}" == "--reference" ]]; then
  pkgs+=(python3 python3-torch python3-numpy python3-pil python3-sentencepiece python3-torchvision sentencepiece)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "xc2: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
