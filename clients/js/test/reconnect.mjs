// Reconnect: kill the server, restart it on the same ports; the client re-subscribes and receives.
// Run: node --experimental-websocket test/reconnect.mjs [path/to/socketshark]
import { spawn } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { SocketShark } from "../dist/socketshark.js";

const bin = process.argv[2] ?? "../../target/debug/socketshark";
const ws = 19600 + Math.floor(Math.random() * 300), api = ws + 300;
const cfg = join(mkdtempSync(join(tmpdir(), "ssjs-")), "c.toml");
writeFileSync(cfg, `broker = "memory"\n[ws]\nport = ${ws}\n[api]\nport = ${api}\n[services.demo]\nrequire_authentication = false\n`);
const start = () => spawn(bin, ["-c", cfg], { stdio: ["ignore", "ignore", "ignore"] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const publish = (n) => fetch(`http://127.0.0.1:${api}/publish`, { method: "POST", body: JSON.stringify({ subscription: "demo.r", data: { n } }) });
let srv = start();
try {
  await sleep(800);
  const c = new SocketShark(`ws://127.0.0.1:${ws}/`, { minDelay: 200, maxDelay: 1000, connectTimeout: 1000 });
  await sleep(300);
  const got = [];
  const closes = [];
  c.onClose = (e) => closes.push(e.code);
  await c.subscribe("demo.r", { onMessage: (d) => got.push(d.n) });
  await publish(1);
  await sleep(200);
  srv.kill("SIGTERM");
  await new Promise((r) => srv.on("exit", r));
  srv = start();
  for (let i = 0; i < 50 && got.length < 2; i++) { await sleep(200); if (!got.includes(2)) await publish(2).catch(() => {}); }
  assert.ok(got.includes(1) && got.includes(2), `got ${got}`);
  assert.ok(closes.length >= 1);
  c.close();
  console.log("reconnect ok", closes);
} finally { srv.kill(); }
