// Cards seen on the dashboard, so a chat opened from a link (or reloaded) can show the
// companion's name: no route answers one companion's card.
import * as api from "./api.js";

const CARDS_KEY = "gcbb.cards";
const cards = new Map(Object.entries(api.readStored(sessionStorage, CARDS_KEY) ?? {}));

export function keepCards(list) {
  for (const c of list) cards.set(c.id, { id: c.id, name: c.name, src: c.src });
  api.store(sessionStorage, CARDS_KEY, Object.fromEntries([...cards].slice(-200)));
}

/** The card of companion `id` if this tab has seen it. */
export const seenCard = (id) => cards.get(id);
