// Browser test of the web client in Debian's chromium (playwright-core).
// Usage: node web_client.mjs BASE_URL SCREENSHOT_DIR [--chat]
// Two browser contexts are two devices of one user: an item shared in one must
// appear in the other without a reload. With --chat: an answer streams in, and the
// Stop button leaves a `cancelled` message. The operator view must show pool
// numbers equal to /health's. Exits non-zero with a reason on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const [base, shots, ...flags] = process.argv.slice(2);
if (!base || !shots) { console.error("usage: node web_client.mjs BASE_URL SCREENSHOT_DIR [--chat]"); process.exit(2); }
const withChat = flags.includes("--chat");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const step = (text) => console.log("browser test:", text);
const external = [];

async function device(name) {
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 } }); // a phone
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await ctx.newPage();
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith(base.replace("http", "ws"))) external.push(r.url()); });
  page.on("pageerror", (e) => { throw new Error(`${name}: page error: ${e.message}`); });
  await page.goto(base + "/");
  return page;
}

async function login(page, user, password, deviceName, signup) {
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Device name").fill(deviceName);
  await page.getByRole("button", { name: signup ? "Sign up and log in" : "Log in" }).click();
  await page.locator("#sync-state", { hasText: "live" }).waitFor({ timeout: 10000 });
}

try {
  const user = "web_" + Date.now().toString(36);
  const password = "correct horse battery";
  const a = await device("A");
  await a.screenshot({ path: `${shots}/login.png`, fullPage: true });
  await login(a, user, password, "Phone A", true);
  step("device A signed up and is live");
  const b = await device("B");
  await login(b, user, password, "Laptop B", false);
  step("device B logged in and is live");

  const text = "shared from A " + Math.random().toString(36).slice(2);
  await a.getByLabel("Text to share with your other devices").fill(text);
  await a.getByRole("button", { name: "Share" }).click();
  await b.locator("#clip-list li pre", { hasText: text }).waitFor({ timeout: 10000 });
  step("item shared on A appeared on B without reload");
  await a.locator("#clip-list li pre", { hasText: text }).waitFor({ timeout: 5000 });
  await b.screenshot({ path: `${shots}/clipboard.png`, fullPage: true });

  // keyboard use: the nav is reachable and operable by keyboard
  await b.getByRole("button", { name: "Devices" }).focus();
  await b.keyboard.press("Enter");
  await b.locator("#dev-list tr", { hasText: "Phone A" }).waitFor({ timeout: 5000 });
  await b.screenshot({ path: `${shots}/devices.png`, fullPage: true });
  step("devices listed");

  if (withChat) {
    await a.getByRole("button", { name: "Chat" }).click();
    await a.getByLabel("New conversation").fill("browser test");
    await a.getByRole("button", { name: "Create" }).click();
    await a.getByLabel("Message").fill("alpha beta gamma delta");
    await a.getByRole("button", { name: "Send" }).click();
    await a.locator("#msg-list li.assistant[data-status=complete]", { hasText: "alpha beta gamma delta" }).waitFor({ timeout: 15000 });
    step("chat answer streamed in and completed");
    const long = Array.from({ length: 200 }, (_, i) => "w" + i).join(" ");
    await a.getByLabel("Message").fill(long);
    await a.getByRole("button", { name: "Send" }).click();
    await a.locator("#msg-list li.assistant[data-status=streaming]").last().waitFor({ timeout: 10000 });
    await a.waitForFunction(() => {
      const li = [...document.querySelectorAll("#msg-list li.assistant")].pop();
      return li && li.textContent.length > 0;
    }, null, { timeout: 10000 });
    await a.getByRole("button", { name: "Stop" }).click();
    await a.screenshot({ path: `${shots}/chat.png`, fullPage: true });
    // the server side must record `cancelled`: reopen the conversation from the server
    let status = null;
    for (let i = 0; i < 50 && status !== "cancelled"; i++) {
      await a.waitForTimeout(200);
      await a.locator("#conv-list button").first().click();
      status = await a.locator("#msg-list li.assistant").last().getAttribute("data-status");
    }
    assert.equal(status, "cancelled", "the stopped answer must be persisted as cancelled");
    step("stop button left a cancelled message");
  }

  await a.getByRole("button", { name: "Operator" }).click();
  const card = a.locator("#op-pools .card").first();
  await card.waitFor({ timeout: 10000 });
  const worker = await card.getAttribute("data-worker");
  const shownSize = await card.locator('dd[data-field="pool_size"]').textContent();
  const health = await (await a.request.get(base + "/health")).json();
  const pool = health.pools.find((p) => String(p.worker) === worker);
  assert.ok(pool, `worker ${worker} shown in the page is in /health`);
  assert.equal(Number(shownSize), pool.pool_size, "pool_size shown equals /health");
  const shownMax = await card.locator('dd[data-field="max_overflow"]').textContent();
  assert.equal(Number(shownMax), pool.max_overflow, "max_overflow shown equals /health");
  await a.screenshot({ path: `${shots}/operator.png`, fullPage: true });
  step("operator view matches /health");

  assert.deepEqual(external, [], "the page made requests outside the gateway");
  step("no external requests; all passed");
} catch (e) {
  console.error("browser test FAILED:", e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
