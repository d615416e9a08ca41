// Incremental server-sent events: yields each event's `data` as soon as its blank line arrives,
// so a reply shows while it streams. Both of our streams (the AI SDK UI-message stream and the
// group chat events) put one JSON value, or [DONE], in one `data:` line per event.

/** Yields the data of each event of `body` (a ReadableStream of bytes). */
export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // CRLF is folded on the whole buffer, so a pair split across two chunks still folds.
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = dataOf(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (data !== null) yield data;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The `data` field of one event block, or null when it has none (comments, keep-alives). */
function dataOf(block) {
  const lines = block
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(l.startsWith("data: ") ? 6 : 5));
  return lines.length ? lines.join("\n") : null;
}
