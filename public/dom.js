// DOM helpers every view uses: look an element up, build one, show or clear an error.

export const $ = (id) => document.getElementById(id);

/** An element with attributes/properties and children (strings become text). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k in el && !k.startsWith("aria") && k !== "role") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children.flat().filter((c) => c != null));
  return el;
}

export function showError(el, error) {
  el.textContent = error ? error.message || String(error) : "";
  el.hidden = !error;
}
