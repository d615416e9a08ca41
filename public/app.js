// The page: the dashboard, one companion's chat, the demo group chat, and (signed in) the
// viewer's own companions with an edit form. Views are chosen by the URL's hash.
import * as api from "./api.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 12;
const SEARCH_DEBOUNCE_MS = 250;
// No route lists groups; the demo data has this one (see cli/src/demo.rs).
const GROUPS = [{ id: "grp_demo_round_table", name: "Demo: the round table" }];

/** An element with attributes/properties and children (strings become text). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k in el && !k.startsWith("aria") && k !== "role") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children.flat().filter((c) => c != null));
  return el;
}

function showError(el, error) {
  el.textContent = error ? error.message || String(error) : "";
  el.hidden = !error;
}

// --- Avatars ---------------------------------------------------------------------------------

function placeholder(name) {
  const initials = name.split(/\s+/).slice(0, 2).map((w) => w[0] ?? "").join("").toUpperCase();
  let hue = 0;
  for (const c of name) hue = (hue * 31 + c.codePointAt(0)) % 360;
  return h("span", { className: "avatar ph", style: `--hue:${hue}`, "aria-hidden": "true" }, initials);
}

/**
 * Whether a stored avatar URL keeps the server's rule: an absolute https: URL on a named host,
 * no credentials, no port. Which hosts are allowed is the page's Content-Security-Policy's
 * img-src (AVATAR_HOSTS): an image it refuses is never fetched, and shows as initials.
 */
function allowedAvatar(src) {
  let url;
  try {
    url = new URL(src);
  } catch {
    return null;
  }
  const host = url.hostname;
  const ipLiteral = host.startsWith("[") || /^[\d.]+$/.test(host);
  // Special-use names never resolve on the internet (the demo data's .invalid): don't even ask.
  const specialUse = /\.(invalid|test|example|localhost|local)$/.test(host);
  if (url.protocol !== "https:" || url.username || url.password || url.port || ipLiteral || specialUse || !host.includes(".")) return null;
  return url;
}

/** The image, or generated initials when it breaks the rule or fails. Decorative: the name is always beside it. */
function avatar(card) {
  const ph = placeholder(card.name);
  const url = card.src ? allowedAvatar(card.src) : null;
  if (!url) return ph;
  // No Referer: an image host learns nothing of which page or companion a viewer looked at.
  const img = h("img", { className: "avatar", src: url.href, alt: "", loading: "lazy", width: 56, height: 56, referrerPolicy: "no-referrer" });
  img.addEventListener("error", () => img.replaceWith(ph), { once: true });
  return img;
}

// Cards seen, so a chat opened from a link (or reloaded) can show the companion's name.
const CARDS_KEY = "gcbb.cards";
const cards = new Map(Object.entries(api.readStored(sessionStorage, CARDS_KEY) ?? {}));
function keepCards(list) {
  for (const c of list) cards.set(c.id, { id: c.id, name: c.name, src: c.src });
  api.store(sessionStorage, CARDS_KEY, Object.fromEntries([...cards].slice(-200)));
}

// --- Dashboard --------------------------------------------------------------------------------

const state = { categoryId: "", q: "", page: 1 };
let categories = [];
let loadSeq = 0;
let firstGrid = true;

function readDashboardHash() {
  const query = new URLSearchParams(location.hash.split("?")[1] ?? "");
  state.categoryId = query.get("category") ?? "";
  state.q = query.get("q") ?? "";
  state.page = Math.max(1, Number(query.get("page")) || 1);
  $("q").value = state.q;
}

function writeDashboardHash() {
  const query = new URLSearchParams();
  if (state.categoryId) query.set("category", state.categoryId);
  if (state.q) query.set("q", state.q);
  if (state.page > 1) query.set("page", state.page);
  const hash = "#/" + (query.size ? "?" + query : "");
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

async function loadDashboard() {
  const seq = ++loadSeq;
  writeDashboardHash();
  $("grid").setAttribute("aria-busy", "true");
  try {
    const result = await api.dashboard({ ...state, pageSize: PAGE_SIZE });
    if (seq !== loadSeq) return; // a newer load is on its way
    renderDashboard(result.body);
    renderStatus(result);
  } catch (e) {
    if (seq !== loadSeq) return;
    $("grid").replaceChildren();
    $("total").textContent = "";
    $("status").textContent = "Dashboard failed: " + e.message;
  } finally {
    if (seq === loadSeq) $("grid").removeAttribute("aria-busy");
  }
}

function renderStatus({ status, xCache, serverTiming, ms }) {
  const timing = (serverTiming ?? "")
    .split(",")
    .map((t) => t.trim().match(/^(\w+);dur=([\d.]+)/))
    .filter(Boolean)
    .map(([, name, dur]) => `${name} ${Number(dur).toFixed(1)} ms`)
    .join(", ");
  $("status").textContent =
    `Dashboard, last load: ${status === 304 ? "304 Not Modified (ETag)" : status} · X-Cache ${xCache ?? "–"}` +
    ` · Server-Timing ${timing || "–"} · ${Math.round(ms)} ms in the browser`;
}

/** The chips are built once per set of categories, so the one a keyboard user pressed keeps focus. */
function renderChips(list) {
  if (JSON.stringify(list) !== JSON.stringify(categories)) {
    categories = list;
    $("chips").replaceChildren(
      ...[{ id: "", name: "All" }, ...list].map((c) =>
        h("button", { type: "button", className: "chip", value: c.id, onclick: () => {
          state.categoryId = c.id;
          state.page = 1;
          loadDashboard();
        } }, c.name),
      ),
    );
  }
  for (const chip of $("chips").children) chip.setAttribute("aria-pressed", String(chip.value === state.categoryId));
}

function renderDashboard(page) {
  renderChips(page.categories);
  const names = new Map(categories.map((c) => [c.id, c.name]));
  const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
  $("total").textContent =
    `${page.totalIsEstimate ? "About " : ""}${page.total} companion${page.total === 1 ? "" : "s"}` +
    (page.totalIsEstimate ? " (an estimate)" : "");
  $("total").classList.toggle("estimate", page.totalIsEstimate);
  keepCards(page.companions);
  const me = api.currentUser();
  $("grid").replaceChildren(
    ...page.companions.map((c) => {
      // The cards carry no owner id: a private card listed to me is mine, and the demo data
      // names owners by their id.
      const mine = me && (c.private || c.userName === me);
      return h("li", { className: "card" },
        h("a", { href: "#/chat/" + encodeURIComponent(c.id), className: "card-link" },
          avatar(c),
          h("span", { className: "name" }, c.name)),
        h("span", { className: "meta" }, "by " + c.userName),
        h("span", { className: "meta" }, names.get(c.categoryId) ?? "Uncategorized"),
        h("span", { className: "meta" }, `${c.messageCount} message${c.messageCount === 1 ? "" : "s"}`),
        c.private ? h("span", { className: "badge" }, "Private") : null,
        mine ? h("button", { type: "button", className: "edit", "aria-label": "Edit " + c.name, onclick: () => openEdit(c) }, "Edit") : null,
      );
    }),
  );
  if (!page.companions.length) $("grid").append(h("li", { className: "empty" }, "No companion matches."));
  $("page-info").textContent = `Page ${page.page} of ${pages}`;
  $("prev").disabled = page.page <= 1;
  $("next").disabled = page.page >= pages;
  if (firstGrid) {
    firstGrid = false;
    performance.mark("gcbb:first-grid");
    performance.measure("gcbb:time-to-first-grid", { start: 0, end: "gcbb:first-grid" });
  }
}

let searchTimer;
$("q").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const q = $("q").value.trim().slice(0, 64);
    if (q === state.q) return;
    state.q = q;
    state.page = 1;
    loadDashboard();
  }, SEARCH_DEBOUNCE_MS);
});
$("search").addEventListener("submit", (e) => e.preventDefault());
for (const [id, step, other] of [["prev", -1, "next"], ["next", 1, "prev"]]) {
  $(id).addEventListener("click", async () => {
    state.page += step;
    await loadDashboard();
    // On the first or last page the pressed button turns off; keep the keyboard in the pager.
    if ($(id).disabled && [document.body, $(id)].includes(document.activeElement)) $(other).focus();
  });
}

// --- Edit (signed in, own companions) -----------------------------------------------------------

let editing = null;

function openEdit(card) {
  editing = card;
  const form = $("edit-form");
  form.reset();
  showError($("edit-error"), null);
  $("edit-title").textContent = "Edit " + card.name;
  form.elements.name.value = card.name;
  form.elements.src.value = card.src;
  form.elements.categoryId.replaceChildren(...categories.map((c) => h("option", { value: c.id }, c.name)));
  form.elements.categoryId.value = card.categoryId;
  form.elements.private.checked = !!card.private;
  $("edit").showModal();
}

$("edit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (e.submitter?.value === "cancel") return $("edit").close();
  const f = e.target.elements;
  const changes = {};
  if (f.name.value.trim() !== editing.name) changes.name = f.name.value.trim();
  if (f.src.value.trim() !== editing.src) changes.src = f.src.value.trim();
  if (f.instructions.value.trim()) changes.instructions = f.instructions.value;
  if (f.categoryId.value !== editing.categoryId) changes.categoryId = f.categoryId.value;
  if (f.private.checked !== !!editing.private) changes.private = f.private.checked;
  if (!Object.keys(changes).length) return $("edit").close();
  try {
    const saved = await api.editCompanion(editing.id, changes);
    $("edit").close();
    await loadDashboard();
    $("status").prepend(`Saved ${saved.name}${saved.private ? " (private: hidden from everyone else)" : ""}. `);
  } catch (err) {
    showError($("edit-error"), err);
  }
});

// --- Chat ----------------------------------------------------------------------------------------
// A reply runs to its end on the server whether or not this page stays: leaving or reloading only
// disconnects, and opening the chat again resumes the reply in flight (GET …/stream) from its
// start. Stop asks the server to stop it (POST …/stop); what was said is kept, marked stopped.

let chatId = null;
let chatCursor = null;
let streaming = null; // the AbortController of the reply being streamed
let replying = null; // the reply in flight: {stop(), messageId}, for the Stop button

function message(role, text, who, status) {
  const body = h("p", { className: "text" }, text);
  const ended = h("span", { className: "ended" });
  const end = (s) => {
    ended.textContent = s && s !== "finished" ? `(${s})` : "";
  };
  end(status);
  const li = h("li", { className: "msg " + role }, who ? h("strong", { className: "who" }, who) : null, body, ended);
  return { li, append: (t) => body.append(t), end };
}

async function openChat(id) {
  letGo();
  chatId = id;
  chatCursor = null;
  const card = cards.get(id) ?? { name: id, src: "" };
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
  if (id === chatId) resume($("chat-form"), $("chat-log"), $("chat-error"), (signal) => api.chatResume(id, signal), showChatReply, () => api.stopChat(id, replying?.messageId));
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

$("older").addEventListener("click", loadHistory);

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
function letGo() {
  streaming?.abort();
  streaming = null;
  for (const [form, log] of [[$("chat-form"), $("chat-log")], [$("group-form"), $("group-log")]]) busy(form, log, false);
}

/** Sends the form's prompt and lets `show` display the reply. */
async function converse(form, log, errorEl, you, send, show, stop) {
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
function resume(form, log, errorEl, open, show, stop) {
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
      if (part.type === "start" && replying) replying.messageId = part.messageId;
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

$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = chatId;
  converse(e.target, $("chat-log"), $("chat-error"), null, (prompt, signal) => api.chatStream(id, prompt, signal), showChatReply, () => api.stopChat(id, replying?.messageId));
});

// Stop asks the server; the stream then ends on its own, with what was said, marked stopped.
for (const form of [$("chat-form"), $("group-form")]) {
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
}

// --- Group chat ----------------------------------------------------------------------------------

let groupId = null;

async function openGroup(id) {
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

$("group-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = groupId;
  converse(e.target, $("group-log"), $("group-error"), "You", (prompt, signal) => api.groupStream(id, prompt, signal), showGroupReplies, () => api.stopGroup(id));
});

// Enter sends, Shift+Enter is a new line.
for (const form of [$("chat-form"), $("group-form")]) {
  form.elements.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
}

// --- Views and account -------------------------------------------------------------------------

let firstRoute = true;

/** The id in a route, or null when it can't be one (malformed %-encoding, odd characters). */
function routeId(raw) {
  try {
    const id = decodeURIComponent(raw);
    return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}

function route() {
  let [, view, raw] = location.hash.match(/^#\/(chat|group)\/([^?]*)/) ?? [];
  const id = view ? routeId(raw) : null;
  if (view && !id) view = "notfound";
  for (const v of ["dashboard", "chat", "group", "notfound"]) $("view-" + v).hidden = v !== (view ?? "dashboard");
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.getAttribute("href") === "#/" ? !view : location.hash.startsWith(a.getAttribute("href"));
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "chat") openChat(id);
  else if (view === "group") openGroup(id);
  else if (view === "notfound") streaming?.abort();
  else {
    readDashboardHash();
    loadDashboard();
  }
  // After a navigation (not the first load), a keyboard or screen-reader user lands on the view.
  if (!firstRoute) document.querySelector("section:not([hidden]) h1")?.focus();
  firstRoute = false;
}

async function setUpAccount() {
  const users = await api.devUsers().catch(() => null);
  if (!users) return;
  const select = $("user");
  select.append(...users.map((u) => h("option", { value: u }, u)));
  select.value = api.currentUser() ?? "";
  $("account").hidden = false;
  select.addEventListener("change", async () => {
    try {
      await api.signIn(select.value || null);
    } catch (e) {
      $("status").textContent = "Sign-in failed: " + e.message;
    }
    select.value = api.currentUser() ?? "";
    route();
  });
}

/** The backend's own view of its database and cache, in the footer. */
async function showHealth() {
  const check = (c) => (c.ok ? `${c.latencyMs.toFixed(1)} ms` : c.error);
  try {
    const r = await api.health();
    $("health").textContent =
      `Backend ${r.status} · database ${check(r.database)} · cache ${r.cache.backend ?? ""} ${check(r.cache)} · v${r.version}`;
  } catch (e) {
    $("health").textContent = "Backend unreachable: " + e.message;
  }
}

$("group-link").href = "#/group/" + GROUPS[0].id;
// After the page's own work: the health check must not delay the first grid.
window.addEventListener("load", showHealth, { once: true });
window.addEventListener("hashchange", route);
// Anonymous, the first dashboard request goes out at once. With a stored session the account
// check comes first: gcbb dev may have restarted with a new key, making the stored token a 401.
if (api.currentUser()) setUpAccount().then(route);
else {
  route();
  setUpAccount();
}
