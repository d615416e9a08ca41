// The backend's routes, and the session. Personal calls carry `Authorization: Bearer`, never a
// cookie: the CDN would serve a cached public page to a request that only has a cookie.
import { sseData } from "./sse.js";

/** An answer in the backend's error shape `{"error":{"code","message","param"}}`. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    /** Seconds, from `Retry-After` (429). */
    this.retryAfter = retryAfter;
  }
}

async function errorOf(res) {
  let body = {};
  try {
    body = (await res.json()).error ?? {};
  } catch {}
  const retry = Number(res.headers.get("retry-after")) || undefined;
  return new ApiError(res.status, body.code ?? "http_" + res.status, body.message ?? res.statusText, retry);
}

// --- Session --------------------------------------------------------------------------------
// Locally, `gcbb dev` without a Clerk key signs tokens for demo users at /__dev/session. The
// route exists only there, so it is asked only when the page comes from this machine.

const SESSION_KEY = "gcbb.session";
let session = readStored(localStorage, SESSION_KEY);

/** A stored JSON value; null when missing or unreadable (storage is the user's to clear). */
export function readStored(storage, key) {
  try {
    return JSON.parse(storage.getItem(key));
  } catch {
    return null;
  }
}

/** Stores a JSON value; a full or disabled storage only costs the next load a revalidation. */
export function store(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {}
}

export const currentUser = () => session?.userId ?? null;

/** The users `gcbb dev` signs in, or null where there is no dev sign-in. */
export async function devUsers() {
  if (!/^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(location.hostname)) return null;
  const res = await fetch("/__dev/session", { cache: "no-store" });
  if (!res.ok) return null;
  const offer = await res.json();
  // A token from an earlier run of gcbb dev was signed with a key that is gone: renew it.
  if (session && (session.keyId !== offer.keyId || !offer.users.includes(session.userId))) {
    await signIn(offer.users.includes(session.userId) ? session.userId : null);
  }
  return offer.users;
}

/** Signs in as `userId` (null signs out). */
export async function signIn(userId) {
  session = null;
  localStorage.removeItem(SESSION_KEY);
  if (!userId) return;
  const res = await fetch("/__dev/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ userId }),
  });
  if (!res.ok) throw await errorOf(res);
  session = await res.json();
  store(localStorage, SESSION_KEY, session);
}

async function authHeaders() {
  if (!session) return {};
  // Renew a minute before expiry rather than meet a 401.
  if (session.expiresAt - Date.now() / 1000 < 60) await signIn(session.userId);
  return session ? { Authorization: "Bearer " + session.token } : {};
}

// --- Dashboard, revalidated with its ETag ------------------------------------------------------
// The page keeps each answer with its ETag (in sessionStorage, so a reload revalidates too)
// and sends If-None-Match itself: a 304 then reaches this code and the network log as a 304.

const ETAGS_KEY = "gcbb.etags";
const ETAGS_KEPT = 30;
const etags = new Map(Object.entries(readStored(sessionStorage, ETAGS_KEY) ?? {}));

function remember(key, entry) {
  etags.delete(key);
  etags.set(key, entry);
  while (etags.size > ETAGS_KEPT) etags.delete(etags.keys().next().value);
  store(sessionStorage, ETAGS_KEY, Object.fromEntries(etags));
}

/** One page of the dashboard, and what the backend did for it. */
export async function dashboard({ categoryId, q, page, pageSize }) {
  const query = new URLSearchParams({ page, pageSize });
  if (categoryId) query.set("categoryId", categoryId);
  if (q) query.set("q", q);
  const url = "/api/dashboard/prefetch?" + query;
  const headers = await authHeaders();
  const key = (currentUser() ?? "") + " " + url;
  const known = etags.get(key);
  if (known) headers["If-None-Match"] = known.etag;
  const started = performance.now();
  const res = await fetch(url, { headers, cache: "no-store" });
  let body;
  if (res.status === 304 && known) body = known.body;
  else if (res.ok) {
    body = await res.json();
    const etag = res.headers.get("etag");
    if (etag) remember(key, { etag, body });
  } else throw await errorOf(res);
  return {
    body,
    status: res.status,
    xCache: res.headers.get("x-cache"),
    serverTiming: res.headers.get("server-timing"),
    ms: performance.now() - started,
  };
}

/** PATCH /api/companion/:id with the changed fields; the companion as stored. */
export async function editCompanion(id, changes) {
  const res = await fetch("/api/companion/" + encodeURIComponent(id), {
    method: "PATCH",
    headers: { "Content-Type": "application/json", ...(await authHeaders()) },
    body: JSON.stringify(changes),
  });
  if (!res.ok) throw await errorOf(res);
  forgetDashboard();
  return res.json();
}

/** Drops remembered pages (after an edit, the next load should not even ask with them). */
function forgetDashboard() {
  etags.clear();
  sessionStorage.removeItem(ETAGS_KEY);
}

/** `/api/health`: the report comes with a 503 too (database down), so it is read either way. */
export async function health() {
  const res = await fetch("/api/health", { cache: "no-store" });
  return res.json();
}

// --- Chat -------------------------------------------------------------------------------------

async function getJson(url) {
  const res = await fetch(url, { headers: await authHeaders() });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

/** The signed-in viewer's messages with a companion, `before` a message id for older ones. */
export function chatHistory(id, before, limit = 20) {
  const query = new URLSearchParams({ limit });
  if (before) query.set("before", before);
  return getJson(`/api/chat/${encodeURIComponent(id)}?${query}`);
}

export function groupHistory(id, before, limit = 30) {
  const query = new URLSearchParams({ limit });
  if (before) query.set("before", before);
  return getJson(`/api/group-chat/${encodeURIComponent(id)}/messages?${query}`);
}

/** The events of an SSE response. */
async function* events(res) {
  for await (const data of sseData(res.body)) {
    if (data === "[DONE]") return;
    yield JSON.parse(data);
  }
  // Both streams end with [DONE]; without it the connection was cut.
  throw new ApiError(0, "stream_cut", "The reply broke off: the connection was lost.");
}

async function postStream(url, prompt, signal) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...(await authHeaders()) },
    body: JSON.stringify({ prompt }),
    signal,
  });
  if (!res.ok) throw await errorOf(res);
  return events(res);
}

/** The reply in flight, from its start (a resume); null when nothing is in flight (204). */
async function resumeStream(url, signal) {
  const res = await fetch(url, { headers: { Accept: "text/event-stream", ...(await authHeaders()) }, signal, cache: "no-store" });
  if (res.status === 204) return null;
  if (!res.ok) throw await errorOf(res);
  return events(res);
}

/** Asks the server to stop the reply in flight; what it says of it, or null when none was. */
async function stop(url, activeStreamId) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(await authHeaders()) },
    body: JSON.stringify(activeStreamId ? { activeStreamId } : {}),
  });
  if (res.status === 204) return null;
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

const chatPath = (id) => `/api/chat/${encodeURIComponent(id)}`;
const groupPath = (id) => `/api/group-chat/${encodeURIComponent(id)}`;

/** A companion's reply as the AI SDK UI-message stream: start, text-delta…, finish or error. */
export const chatStream = (id, prompt, signal) => postStream(chatPath(id), prompt, signal);
export const chatResume = (id, signal) => resumeStream(chatPath(id) + "/stream", signal);
export const stopChat = (id, messageId) => stop(chatPath(id) + "/stop", messageId);

/** A group's replies: message-start, text-delta, message-end per responder, or error. */
export const groupStream = (id, prompt, signal) => postStream(groupPath(id) + "/chat", prompt, signal);
export const groupResume = (id, signal) => resumeStream(groupPath(id) + "/stream", signal);
export const stopGroup = (id) => stop(groupPath(id) + "/stop");
