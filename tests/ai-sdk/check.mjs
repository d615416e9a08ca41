// Reads one of our chat streams with the AI SDK's own client code and prints what it saw as
// JSON. Run by tests/integration/chat.rs:
//   node check.mjs <text|data> <url> <prompt> [bearer-token]
// `text`: callCompletionApi with streamProtocol "text" (what useCompletion does by default).
// `data`: callCompletionApi with streamProtocol "data" (the UI-message stream), then the same
//         response once more through parseJsonEventStream + uiMessageChunkSchema and
//         readUIMessageStream, to report every chunk type and the assembled message.
import {
  callCompletionApi,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from "ai";

const [mode, url, prompt, token] = process.argv.slice(2);
const headers = {};
if (token) headers.Authorization = `Bearer ${token}`;
if (mode === "data") headers.Accept = "text/event-stream";

const out = { mode };
let error;
out.completion = await callCompletionApi({
  api: url,
  prompt,
  credentials: undefined,
  headers,
  body: {},
  streamProtocol: mode,
  setCompletion: () => {},
  setLoading: () => {},
  setError: () => {},
  setAbortController: () => {},
  onFinish: undefined,
  onError: (e) => {
    error = e;
  },
  fetch: undefined,
});
out.error = error ? String(error.message ?? error) : null;

if (mode === "data") {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify({ prompt }),
  });
  out.status = response.status;
  out.headers = Object.fromEntries(response.headers.entries());
  const chunkTypes = [];
  const invalid = [];
  const chunks = parseJsonEventStream({
    stream: response.body,
    schema: uiMessageChunkSchema,
  }).pipeThrough(
    new TransformStream({
      transform(part, controller) {
        if (!part.success) {
          invalid.push(String(part.error));
          return;
        }
        chunkTypes.push(part.value.type);
        controller.enqueue(part.value);
      },
    }),
  );
  let message = null;
  const streamErrors = [];
  for await (const m of readUIMessageStream({
    stream: chunks,
    onError: (e) => streamErrors.push(String(e?.message ?? e)),
  })) {
    message = m;
  }
  out.chunkTypes = chunkTypes;
  out.invalid = invalid;
  out.streamErrors = streamErrors;
  out.text = (message?.parts ?? [])
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
}
process.stdout.write(JSON.stringify(out) + "\n");
