// The not-found view: an address that names no companion or group chat (its text is in
// index.html). Nothing to load; a reply another view was streaming is let go.
import { letGo } from "../conversation.js";

export function show() {
  letGo();
}
