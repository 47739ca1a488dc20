#!/usr/bin/env bash
# xc2 serve driven by the official `openai` npm package (ctest label `serve`): computes each case's
# `xc2 chat --greedy` answer, starts the server and runs openai_client_test.mjs against it.
#   tests/serve/openai_test.sh XC2_BINARY SOURCE_DIR NODE_DIR
# NODE_DIR holds package.json, package-lock.json and node_modules (`npm ci`, the serve_npm_ci fixture).
# No node or no openai package is a failure, never a skip.
XC2=$1 SRC=$2 NODE_DIR=$3
source "$SRC/tests/serve/lib.sh"
command -v node >/dev/null || fail "node is not installed (tools/install_deps.sh installs it)"
[[ -f "$NODE_DIR/node_modules/openai/package.json" ]] ||
  fail "the openai package is missing in $NODE_DIR (npm ci failed: see the serve_npm_ci test)"

ex="$SRC/examples"
questions=("Describe the picture." "How many shapes are there?")
cases=()
for img in shapes-1 shapes-2 shapes-3 shapes-4; do
  for q in "${questions[@]}"; do
    cases+=("$ex/$img.png|$q")
  done
done
{
  echo "["
  sep=""
  for c in "${cases[@]}"; do
    img=${c%%|*} q=${c#*|}
    want=$(greedy_answer "$img" "$q")
    [[ -n "$want" ]] || fail "xc2 chat gave no answer for $img / $q"
    python3 -c 'import json, sys; print(sys.argv[1] + json.dumps({"image": sys.argv[2], "question": sys.argv[3], "want": sys.argv[4]}))' \
      "$sep" "$img" "$q" "$want"
    sep=","
  done
  echo "]"
} >"$WORK/cases.json"

start_server --max-batch 8
[[ "$SRC/tests/serve" -ef "$NODE_DIR" ]] || cp "$SRC/tests/serve/openai_client_test.mjs" "$NODE_DIR/"
node "$NODE_DIR/openai_client_test.mjs" "$BASE" "$WORK/cases.json" || fail "the openai client test failed"
stop_server
echo "PASS"
