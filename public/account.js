// "Signed in as": locally, gcbb dev's dev sign-in offers the demo users; elsewhere it stays hidden.
import * as api from "./api.js";
import { $, h } from "./dom.js";
import { route } from "./router.js";

export async function setUpAccount() {
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
