// xc2 serve driven by the official `openai` npm package (pinned by tests/serve/package-lock.json).
//   node openai_client_test.mjs BASE_URL CASES_JSON
// CASES_JSON: [{"image": path or "", "question": ..., "want": the `xc2 chat --greedy` answer}, ...]
import fs from "node:fs";
import OpenAI from "openai";

const [base, casesFile] = process.argv.slice(2);
const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0 });
let failures = 0;

function check(ok, what) {
  if (!ok) {
    failures++;
    console.error(`FAIL: ${what}`);
  }
}

function messages(c) {
  const content = [{ type: "text", text: c.question }];
  if (c.image) {
    const b64 = fs.readFileSync(c.image).toString("base64");
    content.push({ type: "image_url", image_url: { url: `data:image/png;base64,${b64}` } });
  }
  return [{ role: "user", content }];
}

async function ask(c) {
  const r = await client.chat.completions.create({ model: "xc2-shapes", temperature: 0, messages: messages(c) });
  return r.choices[0].message.content;
}

async function askStreamed(c, extra = {}, onChunk = null) {
  const stream = await client.chat.completions.create({
    model: "xc2-shapes", temperature: 0, messages: messages(c), stream: true, ...extra,
  });
  let text = "";
  let n = 0;
  let finish = null;
  for await (const chunk of stream) {
    n++;
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
    if (onChunk && onChunk(n, stream) === false) break;
  }
  return { text, n, finish };
}

async function metric(name) {
  const body = await (await fetch(`${base}/metrics`)).text();
  const line = body.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? NaN : Number(line.split(" ")[1]);
}

async function waitFor(pred, what) {
  for (let i = 0; i < 600; i++) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  check(false, what);
  return false;
}

// 1. One image question: the answer and the streamed answer equal `xc2 chat --greedy`.
{
  const c = cases[0];
  const got = await ask(c);
  check(got === c.want, `image question: got ${JSON.stringify(got)}, want ${JSON.stringify(c.want)}`);
  const s = await askStreamed(c);
  check(s.text === c.want, `streamed: got ${JSON.stringify(s.text)}`);
  check(s.n > 3, `streamed in ${s.n} chunks`);
  check(s.finish === "stop", `finish_reason ${s.finish}`);
  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === "xc2-shapes", "models.list");
}

// 2. Eight concurrent clients with different pictures and questions (half streamed) each get their answer.
{
  const results = await Promise.all(cases.map((c, i) => (i % 2 ? ask(c) : askStreamed(c).then((s) => s.text))));
  results.forEach((got, i) => check(got === cases[i].want,
    `concurrent client ${i} (${cases[i].question}): got ${JSON.stringify(got)}, want ${JSON.stringify(cases[i].want)}`));
}

// 3. A client that aborts mid-stream frees its slot while the others go on.
{
  const cancelled0 = await metric("xc2_requests_cancelled_total");
  const long = askStreamed(cases[1], { ignore_eos: true, max_tokens: 4000 }, (n, stream) => {
    if (n >= 3) {
      stream.controller.abort();
      return false;
    }
    return true;
  });
  const others = Promise.all([ask(cases[2]), askStreamed(cases[3]).then((s) => s.text)]);
  const l = await long;
  check(l.n === 3, `the aborting client read ${l.n} chunks`);
  const [a, b] = await others;
  check(a === cases[2].want, `other client during the abort: ${JSON.stringify(a)}`);
  check(b === cases[3].want, `other streamed client during the abort: ${JSON.stringify(b)}`);
  await waitFor(async () => (await metric("xc2_running_batch_size")) === 0, "the aborted stream kept its slot");
  check((await metric("xc2_requests_cancelled_total")) > cancelled0, "the aborted stream was not cancelled");
  check((await metric("xc2_client_disconnects_total")) >= 1, "no disconnect counted");
  check((await ask(cases[0])) === cases[0].want, "a request after the abort");
}

// 4. Errors come back as the SDK's typed errors with the status.
{
  try {
    await client.chat.completions.create({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] });
    check(false, "an unknown model was accepted");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400, `unknown model: ${e}`);
    check(/unknown model/.test(e.message), `unknown model message: ${e.message}`);
  }
  try {
    await client.chat.completions.create({ model: "xc2-shapes", n: 3, messages: [{ role: "user", content: "hi" }] });
    check(false, "n = 3 was accepted");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.param === "n", `n = 3: ${e}`);
  }
}

if (failures) {
  console.error(`${failures} failure(s)`);
  process.exit(1);
}
console.log("PASS");
