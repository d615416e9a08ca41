// Records which avatar images the page fetches, in Debian's Chromium, against a `gcbb dev`
// whose database holds companions with stored avatar URLs that break the rule (other writers
// stored them: the Next.js app, psql). Run by tests/integration/hardening.rs:
//   node avatars.mjs <base-url> <probe-search>
// Prints one JSON report on stdout. A "fetch" is a request that reached the network: every
// request to another origin is answered here (a 1×1 PNG, so none fails for want of a server)
// and recorded; requests the browser refused (the page's rule, its Content-Security-Policy)
// never get that far. Loopback addresses a test server listens on record their own hits.
import { chromium } from "playwright-core";

const [base, probe] = process.argv.slice(2);
if (!base || !probe) {
  console.error("usage: node avatars.mjs <base-url> <probe-search>");
  process.exit(2);
}
const origin = new URL(base).origin;
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=",
  "base64",
);
const WAIT = { timeout: 20_000 };
const report = { fetched: [], attempted: [], shown: [], placeholders: 0, headers: {}, notFound: null, problems: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const context = await browser.newContext({ viewport: { width: 1200, height: 2000 } });
context.on("weberror", (e) => report.problems.push(`page error: ${e.error().message}`));
context.on("request", (r) => {
  if (new URL(r.url()).origin !== origin) report.attempted.push(r.url());
});
// Everything off the page's origin, except loopback ports the test listens on itself.
await context.route(
  (url) => url.origin !== origin && !["127.0.0.1", "localhost", "[::1]"].includes(url.hostname),
  (route) => {
    report.fetched.push(route.request().url());
    return route.fulfill({ status: 200, contentType: "image/png", body: PNG });
  },
);

const page = await context.newPage();
const first = await page.goto(`${base}/#/?q=${encodeURIComponent(probe)}`);
for (const name of ["content-security-policy", "x-content-type-options", "x-frame-options"]) {
  report.headers[name] = first.headers()[name] ?? null;
}
await page.locator("#grid .card").first().waitFor(WAIT);
await page.waitForFunction(() => !document.querySelector("#grid[aria-busy]"), null, WAIT);
// Every image had its chance: loaded, failed or refused.
await page.waitForFunction(
  () => [...document.querySelectorAll("#grid img.avatar")].every((i) => i.complete),
  null,
  WAIT,
);
await page.waitForTimeout(500);
report.cards = await page.locator("#grid .card").count();
report.placeholders = await page.locator("#grid .card .avatar.ph").count();
report.shown = await page.locator("#grid img.avatar").evaluateAll((imgs) =>
  imgs.filter((i) => i.naturalWidth > 0).map((i) => i.src),
);

// A malformed route (a broken %-escape) shows the not-found view instead of throwing.
await page.goto(`${base}/#/chat/%E0%A4%A`);
await page.waitForTimeout(300);
report.notFound = {
  shown: await page.locator("#view-notfound").isVisible(),
  dashboardHidden: await page.locator("#view-dashboard").isHidden(),
};

await browser.close();
console.log(JSON.stringify(report, null, 2));
