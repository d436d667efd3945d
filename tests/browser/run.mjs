// The demo page and the status page in a real browser (issue 15): Debian's chromium driven by
// playwright-core (no browser download). Starts the server itself on free ports.
//
//   node tests/browser/run.mjs [path/to/socketshark]      (CHROMIUM=/usr/bin/chromium by default)
//
// Checks: the demo page connects and shows a message published through the API; after the
// server is killed and started again on the same ports the page reconnects by itself and shows
// the next one; the status page counts the page's connection and subscription. Screenshots go
// to tests/browser/out/.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.argv[2] ?? join(here, "../../target/debug/socketshark");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
if (!existsSync(browserPath)) {
  console.error(`browser tests: ${browserPath} not found (apt-get install -y chromium, or set CHROMIUM)`);
  process.exit(1);
}
if (!existsSync(bin)) {
  console.error(`browser tests: server binary ${bin} not found (cargo build)`);
  process.exit(1);
}
const out = join(here, "out");
mkdirSync(out, { recursive: true });

const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const [ws, api] = [await freePort(), await freePort()];
const dir = mkdtempSync(join(tmpdir(), "ss-browser-"));
const cfg = join(dir, "c.toml");
writeFileSync(cfg, `broker = "memory"
[ws]
host = "127.0.0.1"
port = ${ws}
demo = true
[api]
host = "127.0.0.1"
port = ${api}
[log]
level = "WARN"
[services.demo]
require_authentication = false
`);

let server;
async function start() {
  server = spawn(bin, ["-c", cfg], { stdio: ["ignore", "ignore", "inherit"] });
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`http://127.0.0.1:${api}/status.json`)).ok) return; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error("the server did not start");
}
async function stop() {
  const done = new Promise((r) => server.once("exit", r));
  server.kill("SIGKILL");
  await done;
}
const publish = async (text) => {
  const r = await fetch(`http://127.0.0.1:${api}/publish`, { method: "POST", body: JSON.stringify({ subscription: "demo.room", data: { text } }) });
  assert.equal(r.status, 200);
};

const browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
let failed = false;
try {
  await start();
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`http://127.0.0.1:${ws}/`);
  await page.waitForSelector("#status.up", { timeout: 10000 });
  await publish("hello from the test");
  await page.waitForSelector("#messages li:has-text('hello from the test')", { timeout: 5000 });
  // The form publishes through the API too.
  await page.fill("#text", "typed in the page");
  await page.click("#send");
  await page.waitForSelector("#messages li:has-text('typed in the page')", { timeout: 5000 });
  await page.screenshot({ path: join(out, "demo.png") });

  // Kill the server and start it again: the page reconnects and receives again.
  await stop();
  await page.waitForSelector("#status.down", { timeout: 10000 });
  await start();
  await page.waitForSelector("#status.up", { timeout: 15000 });
  await sleep(300);
  await publish("after the restart");
  await page.waitForSelector("#messages li:has-text('after the restart')", { timeout: 5000 });
  await page.screenshot({ path: join(out, "demo-after-restart.png") });

  // The status page counts the demo page's connection and subscription.
  const status = await browser.newPage();
  await status.goto(`http://127.0.0.1:${api}/status`);
  await status.waitForSelector("#services td:has-text('demo')", { timeout: 5000 });
  const text = await status.textContent("body");
  assert.match(text, /connections\s*1/);
  const row = await status.textContent("#services tr:nth-child(2)");
  assert.match(row, /demo\s*1\s*1/);
  await status.screenshot({ path: join(out, "status.png") });
  console.log(`browser tests ok (screenshots in ${out})`);
} catch (e) {
  failed = true;
  console.error("browser tests FAILED:", e);
} finally {
  await browser.close();
  if (server && server.exitCode === null) server.kill();
}
process.exit(failed ? 1 : 0);
