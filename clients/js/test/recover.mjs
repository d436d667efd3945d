// Recovery: a client that loses its connection resubscribes with its last position and gets
// what was published meanwhile, in order, then live messages (embedded broker, history on).
// Run: node --experimental-websocket test/recover.mjs [path/to/socketshark]
import { spawn } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { SocketShark } from "../dist/socketshark.js";

const bin = process.argv[2] ?? "../../target/debug/socketshark";
const ws = 20000 + Math.floor(Math.random() * 500), api = ws + 500;
const dir = mkdtempSync(join(tmpdir(), "ssjs-"));
const cfg = join(dir, "c.toml");
writeFileSync(cfg, `broker = "memory"\n[ws]\nport = ${ws}\n[api]\nport = ${api}\n[services.chat]\nrequire_authentication = false\nhistory_size = 100\n`);
const srv = spawn(bin, ["-c", cfg], { stdio: ["ignore", "ignore", "inherit"] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const publish = (data) => fetch(`http://127.0.0.1:${api}/publish`, { method: "POST", body: JSON.stringify({ subscription: "chat.room", data }) });
try {
  await sleep(800);
  const c = new SocketShark(`ws://127.0.0.1:${ws}/`, { minDelay: 200, maxDelay: 400 });
  await sleep(300);
  const got = [], recovered = [];
  const sub = await c.subscribe("chat.room", { onMessage: (d) => got.push(d), onRecover: (r) => recovered.push(r) });
  assert.equal(sub.position.offset, 0);
  for (const i of [1, 2]) assert.equal((await publish(i)).status, 200);
  await sleep(200);
  assert.deepEqual(got, [1, 2]);
  assert.equal(sub.position.offset, 2);
  // Drop the connection (as a network cut would); publish while away.
  c.ws.close(4000, "test");
  await sleep(50);
  for (const i of [3, 4, 5]) assert.equal((await publish(i)).status, 200);
  for (let t = 0; t < 50 && recovered.length === 0; t++) await sleep(100);
  await publish(6);
  await sleep(300);
  assert.deepEqual(recovered, [true]);
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6], "missed ones in order, then live, once each");
  c.close();
  console.log("recover ok");
} finally { srv.kill(); }
