// The group chat (`#/group/:id`): its history, and each responder's reply streaming under its
// name. No route lists groups: the demo data has the one below (see cli/src/demo.rs).
import * as api from "../api.js";
import { composer, converse, letGo, message, resume } from "../conversation.js";
import { $, showError } from "../dom.js";

const GROUPS = [{ id: "grp_demo_round_table", name: "Demo: the round table" }];

let groupId = null;

/** Opens group `id`: its history, its members, and a reply still being written. */
export async function show(id) {
  letGo();
  groupId = id;
  const group = GROUPS.find((g) => g.id === id) ?? { id, name: id };
  $("group-title").textContent = group.name;
  $("group-log").replaceChildren();
  showError($("group-error"), null);
  try {
    const page = await api.groupHistory(id);
    if (id !== groupId) return;
    $("group-log").append(...page.messages.map((m) => message(m.isBot ? "assistant" : "user", m.content, m.senderName ?? (m.isBot ? "Companion" : "You"), m.status).li));
    const names = [...new Set(page.messages.filter((m) => m.isBot && m.senderName).map((m) => m.senderName))];
    $("group-members").textContent = names.length ? "Members: " + names.join(", ") + ". Name one to choose who answers." : "";
  } catch (e) {
    showError($("group-error"), e);
  }
  if (id === groupId) resume($("group-form"), $("group-log"), $("group-error"), (signal) => api.groupResume(id, signal), showGroupReplies, () => api.stopGroup(id));
}

/** The responders' replies, each in its bubble under its name; an error text or null. */
async function showGroupReplies(events) {
  const bubbles = new Map();
  try {
    for await (const ev of events) {
      if (ev.type === "message-start") {
        const m = message("assistant", "", ev.name);
        m.li.setAttribute("aria-busy", "true");
        bubbles.set(ev.companionId, m);
        $("group-log").append(m.li);
        m.li.scrollIntoView({ block: "nearest" });
      } else if (ev.type === "text-delta") bubbles.get(ev.companionId)?.append(ev.delta);
      else if (ev.type === "message-end") {
        const m = bubbles.get(ev.companionId);
        m?.li.removeAttribute("aria-busy");
        m?.end(ev.status);
      } else if (ev.type === "error") return "A reply broke off: " + ev.message;
    }
    return null;
  } finally {
    for (const m of bubbles.values()) m.li.removeAttribute("aria-busy");
  }
}

$("group-link").href = "#/group/" + GROUPS[0].id;
composer($("group-form"), $("group-log"));
$("group-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = groupId;
  converse(e.target, $("group-log"), $("group-error"), "You", (prompt, signal) => api.groupStream(id, prompt, signal), showGroupReplies, () => api.stopGroup(id));
});
