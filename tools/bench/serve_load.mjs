// A bounded load generator for `xc2 serve` on loopback: for each concurrency C, C clients each send
// REQUESTS streamed chat requests one after the other; prints generated tokens/s (usage.completion_tokens over
// the wall time) and the p50 / p99 time to first token. Node 18+ (fetch), no packages.
//   node tools/bench/serve_load.mjs --url http://127.0.0.1:8000 --model xc2-shapes \
//        --concurrency 1,4,8,16 --requests 4 --max-tokens 64 [--image examples/shapes-1.png] [--ignore-eos]
import fs from "node:fs";

const args = { url: "http://127.0.0.1:8000", model: "xc2-shapes", concurrency: "1,4,8,16", requests: "4",
  "max-tokens": "64", image: "", prompt: "", "ignore-eos": false };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in args)) throw new Error(`unknown option --${k}`);
  if (typeof args[k] === "boolean") args[k] = true;
  else args[k] = process.argv[++i];
}
const url = new URL(args.url);
if (!["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) throw new Error("loopback only");

function body(i) {
  const text = args.prompt || ["Describe the picture.", "How many shapes are there?", "Tell me about shapes.",
    "What colour is the circle?"][i % 4];
  const content = [{ type: "text", text }];
  if (args.image) {
    const b64 = fs.readFileSync(args.image).toString("base64");
    content.push({ type: "image_url", image_url: { url: `data:image/png;base64,${b64}` } });
  }
  return JSON.stringify({ model: args.model, stream: true, stream_options: { include_usage: true },
    max_tokens: Number(args["max-tokens"]), temperature: 0, ignore_eos: args["ignore-eos"],
    messages: [{ role: "user", content }] });
}

async function one(i) {
  const t0 = performance.now();
  const res = await fetch(`${args.url}/v1/chat/completions`, { method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${process.env.XC2_API_KEY ?? ""}` },
    body: body(i) });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft = null, tokens = 0, buf = "";
  const dec = new TextDecoder();
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const j = JSON.parse(ev.slice(6));
      if (ttft === null && j.choices?.[0]?.delta?.content) ttft = performance.now() - t0;
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  return { ttft: ttft ?? performance.now() - t0, tokens };
}

const pct = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
console.log("| streams | requests | tokens | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) |");
console.log("|---|---|---|---|---|---|");
for (const c of args.concurrency.split(",").map(Number)) {
  const t0 = performance.now();
  const results = [];
  await Promise.all(Array.from({ length: c }, async (_, w) => {
    for (let r = 0; r < Number(args.requests); r++) results.push(await one(w * 31 + r));
  }));
  const secs = (performance.now() - t0) / 1000;
  const tokens = results.reduce((a, r) => a + r.tokens, 0);
  const ttft = results.map((r) => r.ttft);
  console.log(`| ${c} | ${results.length} | ${tokens} | ${(tokens / secs).toFixed(1)} | ${pct(ttft, 0.5).toFixed(1)} | ` +
    `${pct(ttft, 0.99).toFixed(1)} |`);
}
