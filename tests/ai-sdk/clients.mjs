// Runs the AI SDK's own client code against POST /api/chat/:chatId and prints, as JSON, which
// calls work. Run by tests/integration/ai_sdk.rs once per installed version of the SDK:
//   node clients.mjs <ai|ai5> <config JSON>
// `ai` is the version the tests pinned first, `ai5` the latest ai@5 (an npm alias). The config
// names one chat URL per server the Rust test started:
//   ok       the default scripted reply (`reply`)
//   slow     a long, slow reply (`slowReply`), to stop mid-stream
//   failing  a model that fails after two chunks ("Hello from")
//   down     a model that answers HTTP 500 (our 502)
//   limited  one anonymous request per address per day
// plus `token` (a signed-in user on `ok`) and `slowToken` (one on `slow`), `okBase`/`slowBase`
// (the servers' origins, for the SDK's default `/api/chat` routes), `companion` (the chat's id),
// and one user each on `slow` for resume, reconnect and stop (`resumeToken`, `reconnectToken`,
// `stopToken`).
//
// Every check is a named scenario of one or more SDK calls; it passes only if every call
// answers as a front end would need. Clients:
//   useChat/DefaultChatTransport   the framework-free Chat (AbstractChat) with the default transport
//   useChat/TextStreamChatTransport the same Chat, text transport, with `Accept: text/plain`
//   useCompletion/callCompletionApi both stream protocols
//   readUIMessageStream            a plain fetch, parsed with parseJsonEventStream + uiMessageChunkSchema
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const [pkg, configJson] = process.argv.slice(2);
if (!["ai", "ai5"].includes(pkg) || !configJson) {
  console.error("usage: node clients.mjs <ai|ai5> <config JSON>");
  process.exit(2);
}
const config = JSON.parse(configJson);
const {
  AbstractChat,
  DefaultChatTransport,
  TextStreamChatTransport,
  callCompletionApi,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} = await import(pkg);
const version = JSON.parse(
  readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url)),
).version;

const CHAT = "useChat/DefaultChatTransport";
const TEXT_CHAT = "useChat/TextStreamChatTransport";
const COMPLETION = "useCompletion/callCompletionApi";
const READ = "readUIMessageStream";

const checks = [];
async function check(client, name, fn) {
  try {
    await fn();
    checks.push({ client, name, ok: true });
  } catch (error) {
    checks.push({ client, name, ok: false, error: String(error?.stack ?? error) });
  }
}

// The header names each client sent, to hold against what our CORS preflight allows.
const sentHeaders = {};
const recordingFetch = (client) => async (url, init = {}) => {
  const names = (sentHeaders[client] ??= new Set());
  for (const [name] of new Headers(init.headers)) names.add(name.toLowerCase());
  return fetch(url, init);
};

// Anonymous limits key on the client address, which the app reads from x-forwarded-for: each
// anonymous scenario is its own visitor.
let visitors = 0;
const visitor = () => ({ "x-forwarded-for": `198.51.100.${++visitors}` });
const bearer = (token) => ({ Authorization: `Bearer ${token}` });

const until = async (condition, what) => {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > 10_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

// The state a framework keeps for Chat (React's useState, Vue's ref…): plain fields here.
class State {
  constructor(messages = []) {
    this.status = "ready";
    this.error = undefined;
    this.messages = messages;
  }
  pushMessage = (m) => {
    this.messages = this.messages.concat(m);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (i, m) => {
    this.messages = [...this.messages.slice(0, i), this.snapshot(m), ...this.messages.slice(i + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new State(messages) });
  }
}

const textOf = (message) =>
  (message?.parts ?? [])
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
const lastAssistant = (chat) => [...chat.messages].reverse().find((m) => m.role === "assistant");

// The two transports; the text one says which stream it reads (it posts the very same body).
function chatWith(client, api, headers = {}) {
  if (client === CHAT) {
    return new Chat({ transport: new DefaultChatTransport({ api, headers, fetch: recordingFetch(client) }) });
  }
  return new Chat({
    transport: new TextStreamChatTransport({
      api,
      headers: { Accept: "text/plain", ...headers },
      fetch: recordingFetch(client),
    }),
  });
}

function assertReady(chat) {
  assert.equal(chat.error, undefined, `error: ${chat.error?.message}`);
  assert.equal(chat.status, "ready");
}

let signedIn = 0; // exchanges stored for the `token` user, for the Rust test to count
let disconnected = 0; // replies `slowToken`'s clients went away from (the server finishes them)
const notes = {};

for (const client of [CHAT, TEXT_CHAT]) {
  await check(client, "three turns, anonymous", async () => {
    const chat = chatWith(client, config.ok, visitor());
    for (const text of ["Hi!", "And then?", "Thanks, bye"]) {
      await chat.sendMessage({ text });
      assertReady(chat);
      assert.equal(textOf(lastAssistant(chat)), config.reply);
    }
    assert.deepEqual(
      chat.messages.map((m) => m.role),
      ["user", "assistant", "user", "assistant", "user", "assistant"],
    );
  });

  await check(client, "two turns, signed in", async () => {
    const chat = chatWith(client, config.ok, bearer(config.token));
    for (const text of [`Remember ${client}`, "What did I say?"]) {
      await chat.sendMessage({ text });
      signedIn += 1;
      assertReady(chat);
      assert.equal(textOf(lastAssistant(chat)), config.reply);
    }
  });

  await check(client, "regenerate the last answer", async () => {
    const chat = chatWith(client, config.ok, visitor());
    await chat.sendMessage({ text: "Say something" });
    const first = lastAssistant(chat).id;
    await chat.regenerate();
    assertReady(chat);
    assert.equal(chat.messages.length, 2);
    assert.notEqual(lastAssistant(chat).id, first);
    assert.equal(textOf(lastAssistant(chat)), config.reply);
  });

  // stop() only disconnects: the client keeps what it saw, the server finishes and keeps it all.
  await check(client, "stop() mid-stream keeps the partial answer on the client", async () => {
    const chat = chatWith(client, config.slow, bearer(config.slowToken));
    const sending = chat.sendMessage({ text: "Tell me a long story" });
    await until(() => textOf(lastAssistant(chat)).length > 0, "the first words");
    await chat.stop();
    await sending;
    disconnected += 1;
    assertReady(chat);
    const partial = textOf(lastAssistant(chat));
    assert.ok(config.slowReply.startsWith(partial), partial);
    assert.ok(partial.length < config.slowReply.length, "the reply ran to its end");
  });

  await check(client, "429 over the rate limit is an error, and the chat goes on", async () => {
    const chat = chatWith(client, config.limited, visitor());
    await chat.sendMessage({ text: "first" });
    assertReady(chat);
    await chat.sendMessage({ text: "second" });
    assert.equal(chat.status, "error");
    assert.match(chat.error.message, /rate_limited/);
    chat.clearError();
    assert.equal(chat.status, "ready");
  });

  await check(client, "a model failing mid-stream is an error after the partial text", async () => {
    const chat = chatWith(client, config.failing, visitor());
    await chat.sendMessage({ text: "hello" });
    assert.equal(chat.status, "error");
    if (client === CHAT) {
      assert.equal(chat.error.message, "the model reported an error");
    }
    assert.equal(textOf(lastAssistant(chat)), "Hello from");
  });

  await check(client, "a model that is down is a 502 error", async () => {
    const chat = chatWith(client, config.down, visitor());
    await chat.sendMessage({ text: "hello" });
    assert.equal(chat.status, "error");
    assert.match(chat.error.message, /model_unavailable/);
    assert.equal(lastAssistant(chat), undefined);
  });
}

// Sends each of `texts` in turn, signed in; each is answered with the scripted reply.
const sendSignedIn = async (chat, texts) => {
  for (const text of texts) {
    await chat.sendMessage({ text });
    signedIn += 1;
    assertReady(chat);
    assert.equal(textOf(lastAssistant(chat)), config.reply);
  }
};

// docs/api.md's advice for signed-in users: the server keeps the history, so send the new message only.
await check(CHAT, "two turns, signed in, sending only the new message", async () => {
  const chat = new Chat({
    transport: new DefaultChatTransport({
      api: config.ok,
      headers: () => bearer(config.token),
      prepareSendMessagesRequest: ({ id, messages, trigger }) => ({
        body: { id, trigger, messages: messages.slice(-1) },
      }),
      fetch: recordingFetch(CHAT),
    }),
  });
  await sendSignedIn(chat, ["Only this one", "And only this one"]);
  assert.equal(chat.messages.length, 4);
});

// The AI SDK's resume contract: `resume: true` (here `resumeStream()`, what it calls on mount)
// sends `GET {api}/{id}/stream`; the default routes are `POST /api/chat` with the chat's id in
// the body, so the chat's id is the companion's. The page reloaded: a new Chat, with the history
// the server keeps, resumes the reply in flight from its start and follows it to its end.
const historyOf = async (base, token) => {
  const res = await fetch(`${base}/api/chat/${config.companion}`, { headers: bearer(token) });
  assert.equal(res.status, 200);
  const { messages } = await res.json();
  return messages.map((m) => ({ id: m.id, role: m.role, parts: [{ type: "text", text: m.content }] }));
};
const defaultRoutes = (base, token) =>
  new DefaultChatTransport({ api: `${base}/api/chat`, headers: () => bearer(token), fetch: recordingFetch(CHAT) });

await check(CHAT, "resume after a reload: the reply in flight, from its start, to its end", async () => {
  const before = new Chat({ id: config.companion, transport: defaultRoutes(config.slowBase, config.resumeToken) });
  const sending = before.sendMessage({ text: "Resume me" });
  await until(() => textOf(lastAssistant(before)).length > 0, "the first words");
  const id = lastAssistant(before).id;
  await before.stop(); // the reload: a disconnect
  await sending;
  const after = new Chat({
    id: config.companion,
    transport: defaultRoutes(config.slowBase, config.resumeToken),
    messages: await historyOf(config.slowBase, config.resumeToken),
  });
  assert.deepEqual(after.messages.map((m) => m.role), ["user"], "the reply is not stored yet");
  await after.resumeStream();
  assertReady(after);
  assert.deepEqual(after.messages.map((m) => m.role), ["user", "assistant"]);
  assert.equal(lastAssistant(after).id, id, "the same message, under the id the server stores");
  assert.equal(textOf(lastAssistant(after)), config.slowReply);
  assert.deepEqual(lastAssistant(after).metadata, { status: "finished", stored: true });
  notes.resumed = { id, text: textOf(lastAssistant(after)) };
  // Nothing is in flight any more: a resume is a 204, and the chat stays as it is.
  await after.resumeStream();
  assertReady(after);
  assert.equal(after.messages.length, 2);
});

await check(CHAT, "resume after a reload, anonymous, on the path-style route", async () => {
  const headers = visitor();
  const transport = () =>
    new DefaultChatTransport({
      api: config.slow,
      headers,
      prepareReconnectToStreamRequest: () => ({ api: `${config.slow}/stream` }),
      fetch: recordingFetch(CHAT),
    });
  const before = new Chat({ transport: transport() });
  const sending = before.sendMessage({ text: "Resume me too" });
  await until(() => textOf(lastAssistant(before)).length > 0, "the first words");
  await before.stop();
  await sending;
  const after = new Chat({ transport: transport(), messages: before.messages.slice(0, 1) });
  await after.resumeStream();
  assertReady(after);
  assert.equal(textOf(lastAssistant(after)), config.slowReply);
});

await check(CHAT, "reconnectToStream: null with nothing in flight, else the stream from its start", async () => {
  const transport = defaultRoutes(config.slowBase, config.reconnectToken);
  assert.equal(await transport.reconnectToStream({ chatId: config.companion }), null);
  const chat = new Chat({ id: config.companion, transport });
  const sending = chat.sendMessage({ text: "Reconnect to me" });
  await until(() => textOf(lastAssistant(chat)).length > 0, "the first words");
  const stream = await transport.reconnectToStream({ chatId: config.companion });
  assert.ok(stream, "a stream");
  const reader = stream.getReader();
  const first = (await reader.read()).value;
  assert.deepEqual(first, { type: "start", messageId: lastAssistant(chat).id });
  assert.equal((await reader.read()).value.type, "text-start");
  await reader.cancel();
  await sending;
  assertReady(chat);
  assert.equal(textOf(lastAssistant(chat)), config.slowReply);
});

// The documented stop: POST {api}/{id}/stop with the partial message, then stop() locally.
await check(CHAT, "an explicit stop keeps the partial answer, stored as stopped", async () => {
  const chat = new Chat({ id: config.companion, transport: defaultRoutes(config.slowBase, config.stopToken) });
  const sending = chat.sendMessage({ text: "Stop me" });
  await until(() => textOf(lastAssistant(chat)).length > 0, "the first words");
  const partial = lastAssistant(chat);
  const res = await fetch(`${config.slowBase}/api/chat/${chat.id}/stop`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...bearer(config.stopToken) },
    body: JSON.stringify({ assistantMessage: partial, activeStreamId: partial.id }),
  });
  assert.equal(res.status, 200);
  const stopped = await res.json();
  assert.equal(stopped.status, "stopped");
  assert.equal(stopped.messageId, partial.id);
  assert.equal(stopped.stored, true);
  // The server ended the stream with a finish that says so; stop() then has nothing to abort.
  await sending;
  await chat.stop();
  assertReady(chat);
  assert.deepEqual(lastAssistant(chat).metadata, { status: "stopped", stored: true });
  const text = textOf(lastAssistant(chat));
  assert.ok(text.length > 0 && text.length < config.slowReply.length, text);
  notes.stopped = { id: partial.id, text };
  // Nothing left to stop.
  const again = await fetch(`${config.slowBase}/api/chat/${chat.id}/stop`, {
    method: "POST",
    headers: bearer(config.stopToken),
  });
  assert.equal(again.status, 204);
});

// The persistence guide's shape: only the new message; the server has the history.
await check(CHAT, "two turns, signed in, sending the last message alone ({id, message})", async () => {
  const chat = new Chat({
    id: config.companion,
    transport: new DefaultChatTransport({
      api: `${config.okBase}/api/chat`,
      headers: () => bearer(config.token),
      prepareSendMessagesRequest: ({ id, messages }) => ({
        body: { id, message: messages[messages.length - 1] },
      }),
      fetch: recordingFetch(CHAT),
    }),
  });
  await sendSignedIn(chat, ["Just this", "And just this"]);
  const stored = await historyOf(config.okBase, config.token);
  assert.equal(stored.at(-1).id, lastAssistant(chat).id, "the client's id is the stored row's");
});

// What the front end must know: TextStreamChatTransport posts what DefaultChatTransport posts,
// so without `Accept: text/plain` it is answered with the UI-message stream and shows it raw.
{
  const chat = new Chat({ transport: new TextStreamChatTransport({ api: config.ok, headers: visitor() }) });
  await chat.sendMessage({ text: "no accept header" });
  notes.textTransportWithoutAccept = textOf(lastAssistant(chat)).slice(0, 40);
}

async function complete({ url, prompt, headers = {}, protocol, stopAfterFirstText = false }) {
  let error;
  let controller;
  let seen = "";
  const completion = await callCompletionApi({
    api: url,
    prompt,
    credentials: undefined,
    headers: protocol === "data" ? { Accept: "text/event-stream", ...headers } : headers,
    body: {},
    streamProtocol: protocol,
    setCompletion: (text) => {
      seen = text;
      if (stopAfterFirstText && text) controller?.abort();
    },
    setLoading: () => {},
    setError: (e) => {
      if (e) error = e;
    },
    setAbortController: (c) => {
      if (c) controller = c;
    },
    onFinish: undefined,
    onError: (e) => {
      error = e;
    },
    fetch: recordingFetch(COMPLETION),
  });
  return { completion, error, seen };
}

for (const protocol of ["text", "data"]) {
  await check(COMPLETION, `${protocol} protocol, anonymous`, async () => {
    const r = await complete({ url: config.ok, prompt: "hello", headers: visitor(), protocol });
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.completion, config.reply);
  });

  await check(COMPLETION, `${protocol} protocol, signed in`, async () => {
    const r = await complete({ url: config.ok, prompt: `completion ${protocol}`, headers: bearer(config.token), protocol });
    signedIn += 1;
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.completion, config.reply);
  });

  await check(COMPLETION, `${protocol} protocol, stopped mid-stream`, async () => {
    const r = await complete({
      url: config.slow,
      prompt: "Tell me a long story",
      headers: bearer(config.slowToken),
      protocol,
      stopAfterFirstText: true,
    });
    disconnected += 1;
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.completion, null);
    assert.ok(r.seen.length > 0 && config.slowReply.startsWith(r.seen), r.seen);
    assert.ok(r.seen.length < config.slowReply.length);
  });

  await check(COMPLETION, `${protocol} protocol, 429 over the rate limit`, async () => {
    const headers = visitor();
    const first = await complete({ url: config.limited, prompt: `first ${protocol}`, headers, protocol });
    assert.equal(first.error, undefined, first.error?.message);
    const second = await complete({ url: config.limited, prompt: `second ${protocol}`, headers, protocol });
    assert.match(String(second.error?.message), /rate_limited/);
  });

  await check(COMPLETION, `${protocol} protocol, model failing mid-stream`, async () => {
    const r = await complete({ url: config.failing, prompt: "hello", headers: visitor(), protocol });
    assert.ok(r.error, "no error reported");
    if (protocol === "data") assert.equal(r.error.message, "the model reported an error");
    assert.equal(r.seen, "Hello from");
  });

  await check(COMPLETION, `${protocol} protocol, model down`, async () => {
    const r = await complete({ url: config.down, prompt: "hello", headers: visitor(), protocol });
    assert.match(String(r.error?.message), /model_unavailable/);
  });
}

// A plain fetch of the chat request, read with the SDK's own parsers.
async function read(url, body, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const out = { status: response.status, headers: Object.fromEntries(response.headers.entries()) };
  if (!response.ok) {
    out.body = await response.json();
    return out;
  }
  out.chunkTypes = [];
  out.invalid = [];
  const chunks = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(part, controller) {
        if (!part.success) {
          out.invalid.push(String(part.error));
          return;
        }
        out.chunkTypes.push(part.value.type);
        controller.enqueue(part.value);
      },
    }),
  );
  out.streamErrors = [];
  let message = null;
  for await (const m of readUIMessageStream({
    stream: chunks,
    onError: (e) => out.streamErrors.push(String(e?.message ?? e)),
  })) {
    message = m;
  }
  out.text = textOf(message);
  return out;
}

const chatRequest = (text) => ({
  id: "chat-read",
  trigger: "submit-message",
  messageId: undefined,
  messages: [{ id: "u1", role: "user", parts: [{ type: "text", text }] }],
});

function assertUiStream(r, text) {
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.headers["x-vercel-ai-ui-message-stream"], "v1");
  assert.match(r.headers["content-type"], /^text\/event-stream/);
  assert.deepEqual(r.invalid, []);
  assert.equal(r.chunkTypes[0], "start");
  assert.ok(r.chunkTypes.includes("text-delta"));
  assert.equal(r.text, text);
}

await check(READ, "the chat request, no Accept header", async () => {
  const r = await read(config.ok, chatRequest("read me"), visitor());
  assertUiStream(r, config.reply);
  assert.equal(r.chunkTypes.at(-1), "finish");
  assert.deepEqual(r.streamErrors, []);
});

await check(READ, "a prompt body with Accept: text/event-stream", async () => {
  const r = await read(config.ok, { prompt: "read me" }, { Accept: "text/event-stream", ...visitor() });
  assertUiStream(r, config.reply);
  assert.equal(r.chunkTypes.at(-1), "finish");
});

await check(READ, "a model failing mid-stream ends with an error chunk", async () => {
  const r = await read(config.failing, chatRequest("fail"), visitor());
  assertUiStream(r, "Hello from");
  assert.equal(r.chunkTypes.at(-1), "error");
});

await check(READ, "429 carries Retry-After and the rate-limit headers", async () => {
  const headers = visitor();
  assert.equal((await read(config.limited, chatRequest("one"), headers)).status, 200);
  const r = await read(config.limited, chatRequest("two"), headers);
  assert.equal(r.status, 429);
  assert.equal(r.body.error.code, "rate_limited");
  assert.ok(Number(r.headers["retry-after"]) > 0);
  assert.equal(r.headers["x-ratelimit-remaining"], "0");
});

const clients = {};
for (const c of checks) {
  const entry = (clients[c.client] ??= { passed: 0, total: 0 });
  entry.total += 1;
  if (c.ok) entry.passed += 1;
}
process.stdout.write(
  JSON.stringify({
    package: pkg,
    version,
    clients,
    passed: checks.filter((c) => c.ok).length,
    total: checks.length,
    failures: checks.filter((c) => !c.ok),
    checks: checks.map((c) => `${c.ok ? "ok  " : "FAIL"} ${c.client}: ${c.name}`),
    sentHeaders: Object.fromEntries(Object.entries(sentHeaders).map(([k, v]) => [k, [...v].sort()])),
    signedIn,
    disconnected,
    notes,
  }) + "\n",
);
