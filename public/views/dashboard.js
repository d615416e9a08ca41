// The dashboard (`#/`, its state in the hash's query): category chips, a debounced search, the
// grid of companion cards, paging, and the status line of the last load.
import * as api from "../api.js";
import { avatar } from "../avatar.js";
import { keepCards } from "../cards.js";
import { $, h } from "../dom.js";
import { openEdit } from "./edit.js";

const PAGE_SIZE = 12;
const SEARCH_DEBOUNCE_MS = 250;

const state = { categoryId: "", q: "", page: 1 };
let categories = [];
let loadSeq = 0;
let firstGrid = true;

/** Opens the dashboard the hash describes. */
export function show() {
  readDashboardHash();
  loadDashboard();
}

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
        mine ? h("button", { type: "button", className: "edit", "aria-label": "Edit " + c.name, onclick: () => openEdit(c, categories, loadDashboard) }, "Edit") : null,
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
