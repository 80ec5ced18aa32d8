// Browser test of the web client in Debian's chromium (playwright-core), against the
// whole running system. Usage: node web_client.mjs BASE_URL SHOT_DIR PART
//   PART "main": two browser contexts are two devices of one user (a desktop and a
//     phone-sized one): an item shared in one appears in the other without a reload,
//     copy back and delete work, a dropped socket reconnects and replays what it
//     missed, devices are listed and revoked, the operator view shows pools whose
//     numbers equal /health's, log out ends the session; labels and keyboard focus;
//     every screen is screenshotted at both sizes.
//   PART "chat": an answer streams in (its text grows before it is done), Stop leaves
//     a `cancelled` message (on the page and in the database), past messages load.
// Every part also checks that the page asked no host but the gateway and threw no
// error. Prints "browser test: <step>" per check and "browser test: all passed" at
// the end; exits non-zero with the reason on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const [base, shots, part] = process.argv.slice(2);
if (!base || !shots || !["main", "chat"].includes(part)) {
  console.error("usage: node web_client.mjs BASE_URL SHOT_DIR main|chat");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const origin = new URL(base).origin;
const wsOrigin = origin.replace(/^http/, "ws");

const t0 = Date.now();
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  // no sandbox: tests run as root in CI; the rest stop chromium's own traffic
  // (updates, safe browsing, metrics, sync, field trials, DNS prefetch).
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps",
         "--disable-extensions", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
         "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
         "--metrics-recording-only", "--no-pings", "--dns-prefetch-disable"],
});

const step = (text) => console.log(`browser test: ${text} [${((Date.now() - t0) / 1000).toFixed(1)} s]`);
const outside = [];   // requests to any host but the gateway
const pageErrors = [];
const failed = [];    // responses >= 400 the page got, as "label METHOD /path STATUS"
const TIMEOUT = 10000;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

async function device(name, viewport) {
  const ctx = await browser.newContext({ viewport, isMobile: viewport === PHONE, hasTouch: viewport === PHONE });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  ctx.on("request", (r) => { if (!r.url().startsWith(origin + "/") && !r.url().startsWith("data:")) outside.push(r.url()); });
  const page = await ctx.newPage();
  page.on("websocket", (ws) => { if (!ws.url().startsWith(wsOrigin + "/")) outside.push(ws.url()); });
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
  // (a failed response is also logged to the console; those are checked by status)
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`${name}: console: ${m.text()}`); });
  page.on("response", (r) => { if (r.status() >= 400) failed.push(`${name} ${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`); });
  page.label = name;
  await page.goto(base + "/");
  return page;
}

async function shot(page, screen) {
  await page.screenshot({ path: `${shots}/${page.label}-${screen}.png`, fullPage: true });
}

// The view must fit a phone: nothing wider than the window (no sideways scrolling).
async function fits(page, screen) {
  const { sw, iw } = await page.evaluate(() => ({ sw: document.documentElement.scrollWidth, iw: window.innerWidth }));
  assert.ok(sw <= iw, `${page.label} ${screen}: page is ${sw}px wide in a ${iw}px window`);
}

// Every visible form control has a label, every visible button an accessible name.
async function labelled(page, screen) {
  const bad = await page.evaluate(() => {
    const visible = (e) => e.offsetParent !== null || e.getClientRects().length > 0;
    const out = [];
    for (const e of document.querySelectorAll("input, textarea, select")) {
      if (!visible(e) || e.type === "hidden") continue;
      const named = (e.labels && e.labels.length > 0 && [...e.labels].some((l) => l.textContent.trim())) ||
        e.getAttribute("aria-label") || e.getAttribute("aria-labelledby");
      if (!named) out.push(`${e.tagName.toLowerCase()}#${e.id || "?"} has no label`);
    }
    for (const b of document.querySelectorAll("button")) {
      if (!visible(b)) continue;
      if (!(b.textContent.trim() || b.getAttribute("aria-label"))) out.push(`a button has no name: ${b.outerHTML.slice(0, 80)}`);
    }
    return out;
  });
  assert.deepEqual(bad, [], `${page.label} ${screen}: unlabelled controls`);
}

// Presses Tab from the top of the page and returns a name for each control that got
// the keyboard focus, in order.
async function tabStops(page, presses) {
  await page.locator("h1").click();
  await page.evaluate(() => {
    window.__focused = [];
    window.__onFocus ??= document.addEventListener("focusin", (ev) => {
      const e = ev.target;
      const label = e.labels && e.labels[0] ? e.labels[0].textContent.trim() : "";
      window.__focused.push(label || e.getAttribute("aria-label") || e.textContent.trim());
    }) ?? true;
  });
  for (let i = 0; i < presses; i++) await page.keyboard.press("Tab");
  return page.evaluate(() => window.__focused);
}

async function reachable(page, screen, names, presses = 25) {
  const stops = await tabStops(page, presses);
  for (const n of names) assert.ok(stops.includes(n), `${page.label} ${screen}: keyboard focus never reaches "${n}" (Tab stops: ${JSON.stringify(stops)})`);
}

async function login(page, user, password, deviceName, signup) {
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Device name").fill(deviceName);
  await page.getByRole("button", { name: signup ? "Sign up and log in" : "Log in", exact: true }).click();
  await page.locator("#sync-state", { hasText: "live" }).waitFor({ timeout: TIMEOUT });
  // a marker that a reload would wipe: items must arrive without one
  await page.evaluate(() => { window.__noReload = true; });
}

const session = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("sluice.session")));

async function apiStatus(page, method, path, token) {
  const r = await page.request.fetch(base + path, { method, headers: { Authorization: "Bearer " + token }, failOnStatusCode: false });
  return r.status();
}

// Waits for a locator's state; on timeout, fails with what the test expected.
async function until(locator, what, state = "visible", timeout = TIMEOUT) {
  try { await locator.waitFor({ state, timeout }); } catch (e) { throw new Error(`${what} (not ${state} after ${timeout} ms)`); }
}

function item(page, text) { return page.locator("#clip-list li", { has: page.locator("pre", { hasText: text }) }); }

async function share(page, text) {
  await page.getByLabel("Text to share with your other devices").fill(text);
  await page.getByRole("button", { name: "Share", exact: true }).click();
  await item(page, text).waitFor({ timeout: TIMEOUT });
}

async function nav(page, view) {
  await page.getByRole("navigation").getByRole("button", { name: view, exact: true }).click();
  await page.locator(`#view-${view.toLowerCase()}`).waitFor({ state: "visible", timeout: TIMEOUT });
}

// ---------------------------------------------------------------------- main
async function mainPart() {
  const user = "web_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
  const password = "correct horse battery";
  const a = await device("desktop", DESKTOP);
  const b = await device("phone", PHONE);
  // the phone's sync sockets pass through the test, which can cut them, and refuse
  // new ones while holdB is set
  const bSockets = [];
  let holdB = false;
  await b.routeWebSocket(/\/sync\/notify/, (ws) => {
    if (holdB) { ws.close({ code: 1013, reason: "held by the test" }); return; }
    bSockets.push({ ws, server: ws.connectToServer() });
  });

  // login screen: labelled, reachable by keyboard, a device name from the browser
  for (const p of [a, b]) {
    await labelled(p, "login");
    await fits(p, "login");
    await shot(p, "login");
  }
  await reachable(a, "login", ["Username", "Password", "Device name", "Log in", "Sign up and log in"]);
  const defaultName = await a.getByLabel("Device name").inputValue();
  assert.match(defaultName, /^Chrome\b/, "the device name defaults to the browser's");
  step(`login screen labelled and keyboard-reachable; device name defaults to "${defaultName}"`);

  // a wrong password is refused with a message, and no session starts
  await b.getByLabel("Username").fill(user);
  await b.getByLabel("Password").fill("not the password");
  await b.getByRole("button", { name: "Log in", exact: true }).click();
  await b.locator("#notice").filter({ hasText: /\S/ }).waitFor({ timeout: TIMEOUT });
  assert.equal(await session(b), null, "a failed login must not store a session");
  assert.deepEqual(failed.splice(0), ["phone POST /v1/sessions 401"], "responses >= 400 so far");
  step("a failed login shows a message");

  await login(a, user, password, "Desktop A", true);
  step("desktop signed up and is live");
  await login(b, user, password, "Phone B", false);
  step("phone logged in and is live");

  await labelled(a, "clipboard");
  await reachable(a, "clipboard", ["Clipboard", "Chat", "Devices", "Operator", "Log out",
                                   "Text to share with your other devices", "Share"]);
  step("clipboard screen labelled; keyboard reaches nav, share box, Share and Log out");

  // shared on the desktop -> on the phone, live
  const fromA = "shared from A " + Math.random().toString(36).slice(2);
  await share(a, fromA);
  await until(item(b, fromA), "the item shared on the desktop never appeared on the phone");
  assert.equal(await b.evaluate(() => window.__noReload), true, "the phone reloaded");
  step("item shared on the desktop appeared on the phone without reload");

  // shared on the phone with the keyboard only -> on the desktop
  const fromB = "typed on B " + Math.random().toString(36).slice(2);
  await b.getByLabel("Text to share with your other devices").focus();
  await b.keyboard.type(fromB);
  await b.keyboard.press("Tab");
  await b.keyboard.press("Enter");
  await item(b, fromB).waitFor({ timeout: TIMEOUT });
  await item(a, fromB).waitFor({ timeout: TIMEOUT });
  assert.equal(await a.evaluate(() => window.__noReload), true, "the desktop reloaded");
  step("item typed and shared by keyboard on the phone appeared on the desktop");

  // copy back: the phone copies the desktop's item into its own clipboard
  await b.bringToFront();
  await item(b, fromA).getByRole("button", { name: /^Copy/ }).click();
  await item(b, fromA).getByRole("button", { name: /^Copied/ }).waitFor({ timeout: TIMEOUT });
  assert.equal(await b.evaluate(() => navigator.clipboard.readText()), fromA, "Copy put the item in the clipboard");
  step("copy back put the item's text in the phone's clipboard");

  // a dropped socket reconnects with backoff and replays what it missed; the
  // test holds it off until an item was added and another deleted meanwhile
  assert.equal(bSockets.length, 1, "the phone opened one sync socket");
  await b.evaluate(() => {
    const st = document.querySelector("#sync-state");
    window.__states = [];
    new MutationObserver(() => window.__states.push(st.textContent)).observe(st, { childList: true, characterData: true, subtree: true });
  });
  holdB = true;
  await bSockets[0].server.close({ code: 1001, reason: "going away" });
  await bSockets[0].ws.close({ code: 1001, reason: "going away" });
  await b.locator("#sync-state", { hasText: /reconnecting/ }).waitFor({ timeout: TIMEOUT });
  const missed = "while the phone was away " + Math.random().toString(36).slice(2);
  const aTok = (await session(a)).token;
  const aAuth = { Authorization: "Bearer " + aTok };
  const pr = await a.request.post(base + "/v1/clipboard", { headers: aAuth, data: { content: missed } });
  assert.equal(pr.status(), 201);
  const listed = await (await a.request.get(base + "/v1/clipboard?after=0", { headers: aAuth })).json();
  const doomed = listed.items.find((it) => it.content === fromB);
  assert.equal((await a.request.delete(`${base}/v1/clipboard/${doomed.id}`, { headers: aAuth })).status(), 204);
  await item(a, fromB).waitFor({ state: "detached", timeout: TIMEOUT });
  assert.ok(await item(b, fromB).count() === 1 && await item(b, missed).count() === 0, "the phone heard of changes while cut off");
  holdB = false;
  await until(item(b, missed), "the phone never got the item added while it was away", "visible", 20000);
  await until(item(b, fromB), "the phone still shows the item deleted while it was away", "detached");
  await b.locator("#sync-state", { hasText: "live" }).waitFor({ timeout: TIMEOUT });
  assert.equal(bSockets.length, 2, "the phone reconnected once");
  assert.match(bSockets[1].ws.url(), /[?&]after=\d+/, "the reconnect asks for a replay with after=");
  assert.equal(await b.evaluate(() => window.__noReload), true, "the phone reloaded");
  const states = [...new Set(await b.evaluate(() => window.__states))];
  assert.ok(states.some((t) => /^reconnecting in \d+ s$/.test(t)), `the state never said reconnecting: ${JSON.stringify(states)}`);
  step(`phone went ${states.join(" -> ")}, replayed the item it missed and dropped the one deleted meanwhile`);

  // delete on the phone: gone on both
  await item(b, fromA).getByRole("button", { name: "Delete" }).click();
  await until(item(b, fromA), "Delete left the item on the phone", "detached");
  await until(item(a, fromA), "the item deleted on the phone stayed on the desktop", "detached");
  await item(b, missed).waitFor({ timeout: TIMEOUT });
  step("deleting on the phone removed the item on both devices");

  for (const p of [a, b]) { await fits(p, "clipboard"); await shot(p, "clipboard"); }

  // devices, reached and opened with the keyboard on the phone
  await b.getByRole("navigation").getByRole("button", { name: "Devices", exact: true }).focus();
  await b.keyboard.press("Enter");
  await b.locator("#dev-list tr", { hasText: "Desktop A" }).waitFor({ timeout: TIMEOUT });
  await b.locator("#dev-list tr", { hasText: "Phone B (this device)" }).waitFor({ timeout: TIMEOUT });
  await nav(a, "Devices");
  await a.locator("#dev-list tr", { hasText: "Phone B" }).waitFor({ timeout: TIMEOUT });
  for (const p of [a, b]) { await labelled(p, "devices"); await fits(p, "devices"); await shot(p, "devices"); }
  step("devices listed on both, opened by keyboard on the phone");

  // chat screen (the chat part checks streaming)
  for (const p of [a, b]) {
    await nav(p, "Chat");
    await labelled(p, "chat"); await fits(p, "chat"); await shot(p, "chat");
  }

  // operator view: every pool /health reports, with the same numbers
  for (const p of [a, b]) await nav(p, "Operator");
  const fields = ["pool_size", "max_overflow", "checked_out", "overflow", "idle", "invalid", "waiting"];
  let last = "";
  const deadline = Date.now() + 15000;
  for (;;) {
    const health = await (await a.request.get(base + "/health")).json();
    const shown = await a.evaluate((fields) => [...document.querySelectorAll("#op-pools .card[data-worker]")].map((c) => {
      const o = { worker: c.dataset.worker };
      for (const f of fields) { const d = c.querySelector(`dd[data-field="${f}"]`); o[f] = d ? d.textContent : null; }
      return o;
    }), fields);
    const want = health.pools.map((p) => { const o = { worker: String(p.worker) }; for (const f of fields) o[f] = String(p[f]); return o; });
    want.push({ worker: "gateway", websockets: String(health.gateway.websockets), streams: String(health.gateway.streams) });
    shown.push(await a.evaluate(() => {
      const c = document.querySelector("#op-summary .card[data-gateway]");
      const v = (f) => c?.querySelector(`dd[data-field="${f}"]`)?.textContent ?? null;
      return { worker: "gateway", websockets: v("open WebSockets"), streams: v("active streams") };
    }));
    const key = (l) => JSON.stringify([...l].sort((x, y) => x.worker.localeCompare(y.worker)));
    if (want.length > 0 && key(shown) === key(want)) break;
    last = `page ${key(shown)} /health ${key(want)}`;
    assert.ok(Date.now() < deadline, `the operator view never matched /health: ${last}`);
    await a.waitForTimeout(250);   // poll interval while waiting for the page's next refresh
  }
  const status = (await (await a.request.get(base + "/health")).json()).status;
  await a.locator("#op-status", { hasText: status }).waitFor({ timeout: TIMEOUT });
  await a.locator("#op-services tr", { hasText: "db" }).waitFor({ timeout: TIMEOUT });
  await a.locator('#op-pools .card svg.spark[role="img"]').first().waitFor({ timeout: TIMEOUT });
  await b.locator("#op-pools .card[data-worker]").first().waitFor({ timeout: TIMEOUT });
  for (const p of [a, b]) { await labelled(p, "operator"); await fits(p, "operator"); await shot(p, "operator"); }
  step(`operator view shows every pool, open sockets and streams with the numbers of /health (status ${status})`);

  // revoke the phone from the desktop: the phone is logged out at once, its token dead
  const bTok = (await session(b)).token;
  await nav(a, "Devices");
  await a.getByRole("button", { name: "Revoke Phone B" }).click();
  await a.locator("#dev-list tr", { hasText: "Phone B" }).waitFor({ state: "detached", timeout: TIMEOUT });
  await until(b.locator("#view-login"), "the revoked phone was not sent to the login screen");
  await b.locator("#notice", { hasText: "revoked" }).waitFor({ timeout: TIMEOUT });
  assert.equal(await session(b), null, "the revoked phone still holds a session");
  assert.equal(await apiStatus(a, "GET", "/v1/devices", bTok), 401, "the revoked token still works");
  await shot(b, "revoked");
  step("revoking the phone logged it out at once; its token is refused");

  // log out on the desktop: back to the login screen, and the token no longer works
  await a.getByRole("button", { name: "Log out" }).click();
  await a.locator("#view-login").waitFor({ state: "visible", timeout: TIMEOUT });
  assert.equal(await session(a), null, "log out left a session behind");
  assert.equal(await apiStatus(a, "GET", "/v1/devices", aTok), 401, "the logged-out token still works");
  step("log out returned to the login screen and ended the token");
}

// ---------------------------------------------------------------------- chat
async function chatPart() {
  const user = "chat_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
  const password = "correct horse battery";
  const a = await device("desktop", DESKTOP);
  await login(a, user, password, "Desktop chat", true);
  await nav(a, "Chat");
  await a.getByLabel("New conversation").fill("browser test");
  await a.getByRole("button", { name: "Create", exact: true }).click();
  await a.locator("#conv-list button", { hasText: "browser test" }).waitFor({ timeout: TIMEOUT });
  await a.getByRole("textbox", { name: "Message", exact: true }).waitFor({ timeout: TIMEOUT });
  await labelled(a, "chat");
  await reachable(a, "chat", ["New conversation", "Create", "browser test", "Message", "Send"]);
  step("chat screen labelled; keyboard reaches the conversation, message box and Send");

  // record every text the answer shows, with its status, as it changes
  await a.evaluate(() => {
    window.__answers = [];
    new MutationObserver(() => {
      const li = [...document.querySelectorAll("#msg-list li.assistant")].pop();
      if (li) window.__answers.push({ id: li.dataset.id, status: li.dataset.status, text: li.textContent });
    }).observe(document.querySelector("#msg-list"), { childList: true, subtree: true, characterData: true, attributes: true });
  });
  const words = Array.from({ length: 12 }, (_, i) => "word" + i);
  await a.getByRole("textbox", { name: "Message", exact: true }).fill(words.join(" "));
  await a.keyboard.press("Control+Enter");   // sent from the keyboard
  await until(a.locator("#msg-list li.assistant[data-status=complete]", { hasText: words.join(" ") }),
              "the echo answer never completed on the page", "visible", 20000);
  const seen = await a.evaluate(() => window.__answers);
  const partial = [...new Set(seen.filter((s) => s.status === "streaming" && s.text.length > 0).map((s) => s.text))];
  assert.ok(partial.length >= 2, `the answer did not grow while streaming (texts seen while streaming: ${JSON.stringify(partial)})`);
  assert.ok(partial.every((t) => words.join(" ").startsWith(t.trim())), `partial texts are not prefixes of the answer: ${JSON.stringify(partial)}`);
  step(`chat answer streamed in: ${partial.length} growing texts before done`);

  // Stop: the page and the database both say cancelled
  const long = Array.from({ length: 200 }, (_, i) => "w" + i).join(" ");
  await a.getByRole("textbox", { name: "Message", exact: true }).fill(long);
  await a.getByRole("button", { name: "Send", exact: true }).click();
  const answer = a.locator("#msg-list li.assistant").last();
  await a.waitForFunction(() => {
    const li = [...document.querySelectorAll("#msg-list li.assistant")].pop();
    return li && li.dataset.status === "streaming" && li.textContent.length > 0;
  }, null, { timeout: TIMEOUT });
  const answerId = await answer.getAttribute("data-id");
  await shot(a, "chat-streaming");
  await a.getByRole("button", { name: "Stop", exact: true }).click();
  await until(a.locator(`#msg-list li.assistant[data-id="${answerId}"][data-status=cancelled]`), "Stop did not mark the answer cancelled on the page");
  const tok = (await session(a)).token;
  const conv = await a.evaluate(() => document.querySelector("#conv-list button[aria-current=true]")?.dataset.id);
  assert.ok(conv, "the open conversation is marked aria-current with its id");
  let stored = null;
  const deadline = Date.now() + 15000;
  while (!stored || stored.status === "streaming") {
    const r = await a.request.get(`${base}/v1/chat/conversations/${conv}/messages`, { headers: { Authorization: "Bearer " + tok } });
    stored = (await r.json()).messages.find((m) => m.id === answerId);
    assert.ok(stored, `message ${answerId} is not in the conversation`);
    if (stored.status !== "streaming") break;
    assert.ok(Date.now() < deadline, "the stopped answer stayed streaming in the database");
    await a.waitForTimeout(200);   // poll interval while the server records the cancel
  }
  assert.equal(stored.status, "cancelled", "the stopped answer must be stored as cancelled");
  assert.ok(stored.content.length < long.length, "the stopped answer was not cut short");
  step(`stop button left a cancelled message (${stored.content.split(" ").length} of 200 words stored)`);

  // past messages: a fresh page load shows the conversation as stored
  const p = await device("phone", PHONE);
  await login(p, user, password, "Phone chat", false);
  await nav(p, "Chat");
  await p.locator("#conv-list button", { hasText: "browser test" }).click();
  await p.locator("#msg-list li.user").nth(1).waitFor({ timeout: TIMEOUT });
  await p.locator("#msg-list li.assistant[data-status=complete]", { hasText: words.join(" ") }).waitFor({ timeout: TIMEOUT });
  await p.locator(`#msg-list li.assistant[data-id="${answerId}"][data-status=cancelled]`).waitFor({ timeout: TIMEOUT });
  await labelled(p, "chat"); await fits(p, "chat");
  await shot(a, "chat-stopped"); await shot(p, "chat-history");
  step("past messages, the cancelled one marked, load on another device");
}

try {
  if (part === "main") await mainPart(); else await chatPart();
  assert.deepEqual(pageErrors, [], "the page threw errors");
  assert.deepEqual(failed, [], "the page got error responses");
  assert.deepEqual(outside, [], "the page made requests outside the gateway");
  step("no requests outside the gateway, no page errors");
  step("all passed");
} catch (e) {
  console.error("browser test FAILED:", e.message);
  if (pageErrors.length) console.error("page errors:", pageErrors.join("\n"));
  if (failed.length) console.error("error responses:", failed.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
