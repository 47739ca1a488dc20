#!/usr/bin/env bash
# xc2 serve driven with curl (ctest label `serve`): answers equal `xc2 chat --greedy`, streaming, malformed
# requests with their statuses and error JSON (and memory that stays flat), prefix-cache hits on a second
# turn, the API key, file:// images inside --image-root only, 413, 429 and a disconnecting client.
#   tests/serve/curl_test.sh XC2_BINARY SOURCE_DIR
XC2=$1 SRC=$2
source "$SRC/tests/serve/lib.sh"
cd "$WORK"

json_get() {  # json_get FILE PYTHON_EXPR (with j = the parsed file)
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# chat_body FILE TEXT [IMAGE_URL] [EXTRA_JSON_FIELDS]: a request body with one user message.
chat_body() {
  python3 - "$@" <<'EOF'
import json, sys
out, text = sys.argv[1], sys.argv[2]
url = sys.argv[3] if len(sys.argv) > 3 else ""
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else {}
content = [{"type": "text", "text": text}]
if url:
    content.append({"type": "image_url", "image_url": {"url": url}})
body = {"model": "xc2-shapes", "temperature": 0, "messages": [{"role": "user", "content": content}]}
body.update(extra)
json.dump(body, open(out, "w"))
EOF
}

post() {  # post BODY_FILE OUT_FILE [curl options...] -> prints the HTTP status
  local body=$1 out=$2
  shift 2
  curl -s -o "$out" -w '%{http_code}' "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
    --data-binary @"$body" "$@"
}

IMG1="$SRC/examples/shapes-1.png"
DATA1="data:image/png;base64,$(base64 -w0 "$IMG1")"

start_server

# 1. A data-URI image question: the answer of `xc2 chat --greedy`; streamed chunks join to the same text.
want=$(greedy_answer "$IMG1" "Describe the picture.")
[[ -n "$want" ]] || fail "xc2 chat gave no answer"
chat_body q1.json "Describe the picture." "$DATA1"
[[ $(post q1.json a1.json) == 200 ]] || fail "image question: $(cat a1.json)"
got=$(json_get a1.json 'j["choices"][0]["message"]["content"]')
[[ "$got" == "$want" ]] || fail "image question: got '$got', want '$want'"
[[ $(json_get a1.json 'j["choices"][0]["finish_reason"]') == stop ]] || fail "finish_reason: $(cat a1.json)"
[[ $(json_get a1.json 'j["object"]') == chat.completion ]] || fail "object: $(cat a1.json)"
[[ $(json_get a1.json 'j["usage"]["completion_tokens"] > 0 and j["usage"]["total_tokens"] == j["usage"]["prompt_tokens"] + j["usage"]["completion_tokens"]') == True ]] ||
  fail "usage: $(cat a1.json)"
chat_body q1s.json "Describe the picture." "$DATA1" '{"stream": true, "stream_options": {"include_usage": true}}'
[[ $(post q1s.json s1.txt -N) == 200 ]] || fail "stream: $(cat s1.txt)"
python3 - s1.txt "$want" <<'EOF' || fail "streamed answer"
import json, sys
events = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert events[-1] == "[DONE]", events[-1]
chunks = [json.loads(e) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
assert text == sys.argv[2], (text, sys.argv[2])
finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
assert finishes == ["stop"], finishes
assert chunks[-1]["usage"]["completion_tokens"] > 0, chunks[-1]
assert len(chunks) > 3, "not streamed in pieces"
EOF

# A stop string: the answer is cut before its first occurrence, finish_reason "stop".
chat_body q1stop.json "Describe the picture." "$DATA1" '{"stop": [" a ", "zzz"]}'
[[ $(post q1stop.json a1stop.json) == 200 ]] || fail "stop: $(cat a1stop.json)"
python3 - a1stop.json "$want" <<'EOF' || fail "stop string: $(cat a1stop.json)"
import json, sys
j = json.load(open(sys.argv[1]))
want = sys.argv[2]
assert " a " in want
assert j["choices"][0]["message"]["content"] == want[:want.index(" a ")], j
assert j["choices"][0]["finish_reason"] == "stop", j
EOF

# 2. Malformed requests: each gets its status and an OpenAI error JSON; three rounds, memory stays flat.
TINY_PNG_B64=$(printf 'not an image at all' | base64 -w0)
cat >bad.txt <<EOF
400|{not json
400|[1, 2, 3]
400|{"messages": [{"role": "user", "content": "hi"}]}
400|{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
400|{"model": 7, "messages": [{"role": "user", "content": "hi"}]}
400|{"model": "xc2-shapes"}
400|{"model": "xc2-shapes", "messages": []}
400|{"model": "xc2-shapes", "messages": "hi"}
400|{"model": "xc2-shapes", "messages": [{"role": "robot", "content": "hi"}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user"}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": 5}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}
400|{"model": "xc2-shapes", "messages": [{"role": "assistant", "content": "hi"}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "n": 2}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "stop": [1]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "tools": []}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}}]}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,$TINY_PNG_B64"}}]}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "<ImageHere> what is this?"}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": "$(printf 'shape %.0s' $(seq 1 6000))"}]}
400|{"model": "xc2-shapes", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "$DATA1"}}, {"type": "image_url", "image_url": {"url": "$DATA1"}}, {"type": "image_url", "image_url": {"url": "$DATA1"}}, {"type": "image_url", "image_url": {"url": "$DATA1"}}, {"type": "image_url", "image_url": {"url": "$DATA1"}}]}]}
EOF
# A 4 MiB body that is valid base64 but not an image: a leak of request bodies would show in the memory.
python3 - big_bad.json <<'EOF'
import base64, json, os, sys
url = "data:image/png;base64," + base64.b64encode(os.urandom(3 << 20)).decode()
json.dump({"model": "xc2-shapes", "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": url}}]}]}, open(sys.argv[1], "w"))
EOF
echo "400|@big_bad.json" >>bad.txt
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status"; }
for round in 1 2 3 4 5 6; do
  n=0
  : >statuses.txt
  while IFS= read -r line; do
    n=$((n + 1))
    body=${line#*|}
    if [[ "$body" == @* ]]; then cp "${body#@}" bad.json; else printf '%s' "$body" >bad.json; fi
    echo "${line%%|*} $(post bad.json "bad.$n.out") ${line:0:150}" >>statuses.txt
  done <bad.txt
  # Each status as expected, each body an OpenAI error JSON.
  python3 - statuses.txt <<'EOF' || fail "malformed requests, round $round"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) >= 30, len(lines)
for n, line in enumerate(lines, 1):
    want, got, what = line.split(" ", 2)
    assert want == got, f"request {n}: status {got}, want {want}: {what}"
    e = json.load(open(f"bad.{n}.out"))["error"]
    assert isinstance(e["message"], str) and e["message"], (n, e)
    assert e["type"] == "invalid_request_error", (n, e)
    assert "param" in e and "code" in e, (n, e)
EOF
  # Rounds 1-2 warm the allocator and the server's threads up; rounds 3-6 (~20 MiB of bodies) may not grow it
  # by more than 8 MiB.
  if [[ $round == 2 ]]; then rss_warm=$(rss); fi
  [[ -z "${XC2_SERVE_TEST_VERBOSE:-}" ]] || echo "round $round: $(rss) kB" >&2
done
rss_end=$(rss)
((rss_end - rss_warm < 8192)) || fail "memory grew from $rss_warm kB to $rss_end kB over four rounds of malformed requests"
# The model by its id; another id is a 404 with error JSON.
[[ $(curl -s -o m.out -w '%{http_code}' "$BASE/v1/models/xc2-shapes") == 200 ]] || fail "/v1/models/xc2-shapes"
[[ $(json_get m.out 'j["id"]') == xc2-shapes ]] || fail "/v1/models/xc2-shapes body: $(cat m.out)"
[[ $(curl -s -o m.out -w '%{http_code}' "$BASE/v1/models/gpt-4") == 404 ]] || fail "/v1/models/gpt-4"
[[ $(json_get m.out 'j["error"]["code"]') == model_not_found ]] || fail "/v1/models/gpt-4 body: $(cat m.out)"
# Unknown endpoint and wrong method: error JSON too.
[[ $(curl -s -o nf.out -w '%{http_code}' "$BASE/v1/nothing") == 404 ]] || fail "404"
json_get nf.out 'j["error"]["message"]' >/dev/null || fail "404 body: $(cat nf.out)"
[[ $(curl -s -o nf.out -w '%{http_code}' "$BASE/v1/chat/completions") == 404 ]] || fail "GET on the chat endpoint"
json_get nf.out 'j["error"]["message"]' >/dev/null || fail "GET on the chat endpoint: $(cat nf.out)"
# Then a good request still works.
[[ $(post q1.json a1b.json) == 200 ]] || fail "good request after the bad ones: $(cat a1b.json)"
[[ $(json_get a1b.json 'j["choices"][0]["message"]["content"]') == "$want" ]] || fail "answer after the bad ones"

# 3. A second conversation turn reuses the first turn's KV blocks (prefix cache, seen in /metrics).
chat_body t1.json "Hello"
[[ $(post t1.json t1.out) == 200 ]] || fail "turn 1: $(cat t1.out)"
hits0=$(metric xc2_prefix_cache_hits_total)
python3 - t1.out t2.json <<'EOF'
import json, sys
answer = json.load(open(sys.argv[1]))["choices"][0]["message"]["content"]
json.dump({"model": "xc2-shapes", "temperature": 0, "messages": [
    {"role": "user", "content": "Hello"}, {"role": "assistant", "content": answer},
    {"role": "user", "content": "What can you do?"}]}, open(sys.argv[2], "w"))
EOF
[[ $(post t2.json t2.out) == 200 ]] || fail "turn 2: $(cat t2.out)"
hits1=$(metric xc2_prefix_cache_hits_total)
((hits1 > hits0)) || fail "the second turn did not hit the prefix cache ($hits0 -> $hits1)"
hit_positions=$(metric xc2_prefix_cache_hit_positions_total)
((hit_positions > 0)) || fail "no positions reused"
stop_server

# 4. --api-key, --image-root, --max-body, and 429 with one slot and no queue.
mkdir -p root/sub
cp "$IMG1" root/sub/one.png
start_server --api-key sekret --image-root "$WORK/root" --max-body 65536 --max-batch 1 --max-queue 0 --grace 0.5 --kv-budget 40000
chat_body k.json "Describe the picture." "file://$WORK/root/sub/one.png"
[[ $(post k.json k.out) == 401 ]] || fail "no key: want 401, got $(cat k.out)"
[[ $(json_get k.out 'j["error"]["code"]') == invalid_api_key ]] || fail "401 body: $(cat k.out)"
[[ $(post k.json k.out -H 'Authorization: Bearer wrong') == 401 ]] || fail "wrong key: want 401"
[[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/models") == 401 ]] || fail "/v1/models without a key"
[[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/health") == 200 ]] || fail "/health needs no key"
[[ $(post k.json k.out -H 'Authorization: Bearer sekret') == 200 ]] || fail "file:// image: $(cat k.out)"
[[ $(json_get k.out 'j["choices"][0]["message"]["content"]') == "$want" ]] || fail "file:// image answer"
chat_body k2.json "Describe the picture." "file://$WORK/root/../root/sub/../../$(basename "$WORK")/bad.txt"
[[ $(post k2.json k2.out -H 'Authorization: Bearer sekret') == 400 ]] || fail "a file outside the root: $(cat k2.out)"
chat_body big.json "$(head -c 70000 /dev/zero | tr '\0' 'a')"
[[ $(post big.json big.out -H 'Authorization: Bearer sekret') == 413 ]] || fail "body too large: want 413"
[[ $(json_get big.out 'j["error"]["code"]') == request_too_large ]] || fail "413 body: $(cat big.out)"
# One long stream takes the only slot; the next request gets 429; the stream's client goes away and its
# slot is freed.
chat_body long.json "Hello" "" '{"stream": true, "ignore_eos": true, "max_tokens": 30000}'
curl -sN "$BASE/v1/chat/completions" -H 'Authorization: Bearer sekret' -H 'Content-Type: application/json' \
  --data-binary @long.json >long.out &
curl_pid=$!
for _ in $(seq 1 300); do
  [[ "$(metric xc2_running_batch_size)" == 1 ]] && break
  sleep 0.05
done
[[ "$(metric xc2_running_batch_size)" == 1 ]] || fail "the long stream did not start"
[[ $(post t1.json q.out -H 'Authorization: Bearer sekret') == 429 ]] || fail "queue full: want 429, got $(cat q.out)"
[[ $(json_get q.out 'j["error"]["code"]') == queue_full ]] || fail "429 body: $(cat q.out)"
kill "$curl_pid"
wait "$curl_pid" 2>/dev/null || true
for _ in $(seq 1 300); do
  [[ "$(metric xc2_running_batch_size)" == 0 ]] && break
  sleep 0.05
done
[[ "$(metric xc2_running_batch_size)" == 0 ]] || fail "the disconnected stream kept its slot"
(($(metric xc2_requests_cancelled_total) >= 1)) || fail "the disconnected stream was not cancelled"
[[ $(post t1.json q.out -H 'Authorization: Bearer sekret') == 200 ]] || fail "after the disconnect: $(cat q.out)"
# The same without streaming: the server notices the closed connection while it waits for the answer.
cancelled0=$(metric xc2_requests_cancelled_total)
chat_body long_plain.json "Hello" "" '{"ignore_eos": true, "max_tokens": 30000}'
curl -s "$BASE/v1/chat/completions" -H 'Authorization: Bearer sekret' -H 'Content-Type: application/json' \
  --data-binary @long_plain.json >/dev/null &
curl_pid=$!
for _ in $(seq 1 300); do
  [[ "$(metric xc2_running_batch_size)" == 1 ]] && break
  sleep 0.05
done
[[ "$(metric xc2_running_batch_size)" == 1 ]] || fail "the long request did not start"
kill "$curl_pid"
wait "$curl_pid" 2>/dev/null || true
for _ in $(seq 1 300); do
  [[ "$(metric xc2_running_batch_size)" == 0 ]] && break
  sleep 0.05
done
[[ "$(metric xc2_running_batch_size)" == 0 ]] || fail "the disconnected non-streaming request kept its slot"
(($(metric xc2_requests_cancelled_total) > cancelled0)) || fail "the disconnected non-streaming request was not cancelled"
# SIGTERM with a stream in flight: the stream ends (cancelled after --grace) with [DONE], the server exits 0.
curl -sN "$BASE/v1/chat/completions" -H 'Authorization: Bearer sekret' -H 'Content-Type: application/json' \
  --data-binary @long.json >long2.out &
curl_pid=$!
for _ in $(seq 1 300); do
  [[ "$(metric xc2_running_batch_size)" == 1 ]] && break
  sleep 0.05
done
stop_server
wait "$curl_pid" || fail "the in-flight stream's client failed at shutdown"
[[ "$(tail -n 2 long2.out | head -n 1)" == "data: [DONE]" ]] || fail "the in-flight stream did not end with [DONE]"
grep -q '"finish_reason":"cancelled"' long2.out || fail "the in-flight stream was not cancelled at the grace period"
echo "PASS"
