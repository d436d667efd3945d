// Smoke test: the built client against a real socketshark (embedded broker) on test ports.
// Run: node --experimental-websocket test/smoke.mjs [path/to/socketshark]
import { spawn } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { SocketShark } from "../dist/socketshark.js";

const bin = process.argv[2] ?? "../../target/debug/socketshark";
const ws = 19000 + Math.floor(Math.random() * 500), api = ws + 500;
const dir = mkdtempSync(join(tmpdir(), "ssjs-"));
const cfg = join(dir, "c.toml");
writeFileSync(cfg, `broker = "memory"\n[ws]\nport = ${ws}\n[api]\nport = ${api}\n[services.demo]\nrequire_authentication = false\n`);
const srv = spawn(bin, ["-c", cfg], { stdio: ["ignore", "ignore", "inherit"] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  await sleep(800);
  const c = new SocketShark(`ws://127.0.0.1:${ws}/`);
  await new Promise((r) => (c.ws.onopen ? setTimeout(r, 300) : r()));
  const pong = await c.ping("x");
  assert.equal(pong.data, "x");
  const got = [];
  await c.subscribe("demo.a", { onMessage: (d) => got.push(d) });
  const r = await fetch(`http://127.0.0.1:${api}/publish`, { method: "POST", body: JSON.stringify({ subscription: "demo.a", data: { n: 1 } }) });
  assert.equal(r.status, 200);
  await sleep(300);
  assert.deepEqual(got, [{ n: 1 }]);
  await assert.rejects(c.subscribe("nope.a"), /Invalid service/);
  await c.unsubscribe("demo.a");
  c.close();
  console.log("smoke ok");
} finally { srv.kill(); }
