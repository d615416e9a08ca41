// A companion's avatar, on the dashboard's cards and in the chat's header.
import { h } from "./dom.js";

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
export function avatar(card) {
  const ph = placeholder(card.name);
  const url = card.src ? allowedAvatar(card.src) : null;
  if (!url) return ph;
  // No Referer: an image host learns nothing of which page or companion a viewer looked at.
  const img = h("img", { className: "avatar", src: url.href, alt: "", loading: "lazy", width: 56, height: 56, referrerPolicy: "no-referrer" });
  img.addEventListener("error", () => img.replaceWith(ph), { once: true });
  return img;
}
