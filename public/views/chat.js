// One companion's chat (`#/chat/:id`): the signed-in viewer's history, paged back on demand, and
// the companion's reply streaming in (the AI SDK UI-message stream).
import * as api from "../api.js";
import { avatar } from "../avatar.js";
import { seenCard } from "../cards.js";
import { composer, converse, letGo, message, noteReplyId, replyId, resume } from "../conversation.js";
import { $, showError } from "../dom.js";

let chatId = null;
let chatCursor = null;

/** Opens the chat with companion `id`, resuming a reply still being written. */
export async function show(id) {
  letGo();
  chatId = id;
  chatCursor = null;
  const card = seenCard(id) ?? { name: id, src: "" };
  $("chat-title").textContent = card.name;
  $("chat-avatar").replaceChildren(avatar(card));
  $("chat-log").replaceChildren();
  $("older").hidden = true;
  showError($("chat-error"), null);
  const me = api.currentUser();
  $("chat-note").textContent = me
    ? `Signed in as ${me}: this conversation is kept.`
    : "Anonymous: nothing is kept. Sign in to keep your history.";
  if (me) await loadHistory();
  // A reply still being written (this page was reloaded, or left and opened again) goes on here.
  if (id === chatId) resume($("chat-form"), $("chat-log"), $("chat-error"), (signal) => api.chatResume(id, signal), showChatReply, () => api.stopChat(id, replyId()));
}

async function loadHistory() {
  const id = chatId;
  try {
    const page = await api.chatHistory(id, chatCursor);
    if (id !== chatId) return;
    $("chat-log").prepend(...page.messages.map((m) => message(m.role, m.content, null, m.status).li));
    chatCursor = page.nextCursor;
    $("older").hidden = !chatCursor;
  } catch (e) {
    showError($("chat-error"), e);
  }
}

/** A companion's reply (the UI-message stream) in a new bubble; an error text or null. */
async function showChatReply(parts) {
  const reply = message("assistant", "");
  reply.li.setAttribute("aria-busy", "true");
  let ended = false;
  try {
    for await (const part of parts) {
      if (!reply.li.isConnected) {
        $("chat-log").append(reply.li);
        reply.li.scrollIntoView({ block: "nearest" });
      }
      if (part.type === "start") noteReplyId(part.messageId);
      else if (part.type === "text-delta") reply.append(part.delta);
      else if (part.type === "error") return "The reply broke off: " + part.errorText;
      else if (part.type === "finish") {
        ended = true;
        reply.end(part.messageMetadata?.status);
      }
    }
    return ended ? null : "The reply ended without finishing.";
  } finally {
    reply.li.removeAttribute("aria-busy");
  }
}

$("older").addEventListener("click", loadHistory);
composer($("chat-form"), $("chat-log"));
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = chatId;
  converse(e.target, $("chat-log"), $("chat-error"), null, (prompt, signal) => api.chatStream(id, prompt, signal), showChatReply, () => api.stopChat(id, replyId()));
});
