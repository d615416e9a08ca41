// Which view the URL's hash names: `#/chat/:id`, `#/group/:id`, else the dashboard (its state in
// the hash's query); an id that can't be one is the not-found view. Each view is a section
// `#view-<name>` and a function that opens it.
import { $ } from "./dom.js";

let views = {};
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

/** Shows the view the hash names and opens it. */
export function route() {
  let [, view, raw] = location.hash.match(/^#\/(chat|group)\/([^?]*)/) ?? [];
  const id = view ? routeId(raw) : null;
  if (view && !id) view = "notfound";
  view ??= "dashboard";
  for (const v of Object.keys(views)) $("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.getAttribute("href") === "#/" ? view === "dashboard" : location.hash.startsWith(a.getAttribute("href"));
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  views[view](id);
  // After a navigation (not the first load), a keyboard or screen-reader user lands on the view.
  if (!firstRoute) document.querySelector("section:not([hidden]) h1")?.focus();
  firstRoute = false;
}

/** Routes on every change of the hash; `table` maps each view's name to its opener. */
export function startRouter(table) {
  views = table;
  window.addEventListener("hashchange", route);
}
