// The companion editor (signed in, own companions): a dialog over the dashboard that sends only
// the fields that changed.
import * as api from "../api.js";
import { $, h, showError } from "../dom.js";

let editing = null;
let onSaved = null;

/** Opens the editor on `card`; `saved` runs after a save, before the status line says so. */
export function openEdit(card, categories, saved) {
  editing = card;
  onSaved = saved;
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
    await onSaved();
    $("status").prepend(`Saved ${saved.name}${saved.private ? " (private: hidden from everyone else)" : ""}. `);
  } catch (err) {
    showError($("edit-error"), err);
  }
});
