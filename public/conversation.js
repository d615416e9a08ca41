// What the chat and the group chat share: message bubbles, a composer that streams a reply in
// (Send waits, Stop is offered), resuming a reply in flight, and holding Send after a 429.
//
// A reply runs to its end on the server whether or not this page stays: leaving or reloading only
// disconnects, and opening the chat again resumes the reply in flight (GET …/stream) from its
// start. Stop asks the server to stop it (POST …/stop); what was said is kept, marked stopped.
import { h, showError } from "./dom.js";

const composers = []; // [form, log] of each view that converses
let streaming = null; // the AbortController of the reply being streamed
let replying = null; // the reply in flight: {stop(), messageId}, for the Stop button

/** A message bubble: `append` adds streamed text, `end` marks how it ended (stopped…). */
export function message(role, text, who, status) {
  const body = h("p", { className: "text" }, text);
  const ended = h("span", { className: "ended" });
  const end = (s) => {
    ended.textContent = s && s !== "finished" ? `(${s})` : "";
  };
  end(status);
  const li = h("li", { className: "msg " + role }, who ? h("strong", { className: "who" }, who) : null, body, ended);
  return { li, append: (t) => body.append(t), end };
}

/** The reply in flight learnt its id (the stream's start): Stop names it. */
export function noteReplyId(messageId) {
  if (replying) replying.messageId = messageId;
}

/** The id of the reply in flight, once its stream said it. */
export const replyId = () => replying?.messageId;

/** While a reply streams into `form`'s log: Send waits, Stop is offered. */
function busy(form, log, on, stop) {
  form.querySelector("button[type=submit]").disabled = on;
  const stopButton = form.querySelector(".stop");
  stopButton.hidden = !on;
  stopButton.disabled = false;
  if (on) log.setAttribute("aria-busy", "true");
  else log.removeAttribute("aria-busy");
  replying = on ? { stop, messageId: null } : null;
}

/** Runs `show` over the parts of a stream (a reply, or one resumed), holding the composer. */
async function follow(form, log, errorEl, open, show, stop) {
  const controller = (streaming = new AbortController());
  busy(form, log, true, stop);
  let retryAfter = null;
  try {
    const parts = await open(controller.signal);
    if (parts) {
      const result = await show(parts);
      if (result) showError(errorEl, new Error(result));
    }
  } catch (e) {
    if (e.name !== "AbortError") {
      showError(errorEl, e);
      if (e.status === 429) retryAfter = e.retryAfter ?? 60;
    }
  } finally {
    if (streaming === controller) {
      streaming = null;
      busy(form, log, false);
    }
  }
  if (retryAfter !== null) {
    const send = form.querySelector("button[type=submit]");
    send.disabled = true;
    holdSend(send, retryAfter, errorEl);
  }
}

/** Leaving a view: its stream is let go (the server finishes the reply regardless). */
export function letGo() {
  streaming?.abort();
  streaming = null;
  for (const [form, log] of composers) busy(form, log, false);
}

/** Sends the form's prompt and lets `show` display the reply. */
export async function converse(form, log, errorEl, you, send, show, stop) {
  const input = form.elements.prompt;
  const prompt = input.value.trim();
  if (!prompt || streaming) return;
  showError(errorEl, null);
  const mine = message("user", prompt, you).li;
  log.append(mine);
  mine.scrollIntoView({ block: "nearest" });
  input.value = "";
  await follow(form, log, errorEl, (signal) => send(prompt, signal), show, stop);
}

/** Resumes the reply in flight in this chat, if there is one (a 204 says there is none). */
export function resume(form, log, errorEl, open, show, stop) {
  if (streaming) return;
  follow(form, log, errorEl, open, show, stop);
}

/** After a 429: the button stays off until the limit's window allows another message. */
function holdSend(button, seconds, errorEl) {
  const until = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      button.disabled = false;
      return showError(errorEl, null);
    }
    errorEl.textContent = `Too many messages. You can send again in ${left} s.`;
    setTimeout(tick, 1000);
  };
  tick();
}

/** Makes `form` a composer writing into `log`: its Stop button, and Enter to send. */
export function composer(form, log) {
  composers.push([form, log]);
  // Stop asks the server; the stream then ends on its own, with what was said, marked stopped.
  const button = form.querySelector(".stop");
  button.addEventListener("click", async () => {
    if (!replying) return;
    button.disabled = true;
    try {
      await replying.stop();
    } catch (e) {
      showError(form.previousElementSibling, e);
      button.disabled = false;
    }
  });
  // Enter sends, Shift+Enter is a new line.
  form.elements.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
}
