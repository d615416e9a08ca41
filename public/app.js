// The page: the dashboard, one companion's chat, the demo group chat, and (signed in) the
// viewer's own companions with an edit form. Each view is a module in views/, chosen by the
// URL's hash (router.js); this entry wires them up and starts the page.
import * as api from "./api.js";
import { setUpAccount } from "./account.js";
import { $ } from "./dom.js";
import { route, startRouter } from "./router.js";
import * as chat from "./views/chat.js";
import * as dashboard from "./views/dashboard.js";
import * as group from "./views/group.js";
import * as notfound from "./views/notfound.js";

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

startRouter({ dashboard: dashboard.show, chat: chat.show, group: group.show, notfound: notfound.show });
// After the page's own work: the health check must not delay the first grid.
window.addEventListener("load", showHealth, { once: true });
// Anonymous, the first dashboard request goes out at once. With a stored session the account
// check comes first: gcbb dev may have restarted with a new key, making the stored token a 401.
if (api.currentUser()) setUpAccount().then(route);
else {
  route();
  setUpAccount();
}
