// The client over a Redis broker (the server started by the test, with its own redis-server):
// subscribe, a message through the API, then recovery after a dropped connection from the
// history Redis keeps.
// Run: node --experimental-websocket test/redis.mjs [path/to/socketshark]
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { SocketShark } from "../dist/socketshark.js";

if (spawnSync("redis-server", ["--version"]).status !== 0) {
  console.error("redis.mjs: redis-server not found (apt-get install -y redis-server)");
  process.exit(1);
}
const bin = process.argv[2] ?? "../../target/debug/socketshark";
const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const [redisPort, ws, api] = [await freePort(), await freePort(), await freePort()];
const dir = mkdtempSync(join(tmpdir(), "ssjs-redis-"));
const redis = spawn("redis-server", ["--port", String(redisPort), "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
const cfg = join(dir, "c.toml");
writeFileSync(cfg, `[ws]\nhost = "127.0.0.1"\nport = ${ws}\n[api]\nport = ${api}\n[redis]\nhost = "127.0.0.1"\nport = ${redisPort}\n[services.chat]\nrequire_authentication = false\nhistory_size = 100\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let srv;
const publish = (data) => fetch(`http://127.0.0.1:${api}/publish`, { method: "POST", body: JSON.stringify({ subscription: "chat.room", data }) });
try {
  await sleep(300);
  srv = spawn(bin, ["-c", cfg], { stdio: ["ignore", "ignore", "inherit"] });
  await sleep(1000);
  const c = new SocketShark(`ws://127.0.0.1:${ws}/`, { minDelay: 200, maxDelay: 400, connectTimeout: 1000 });
  await sleep(300);
  const got = [], recovered = [];
  const sub = await c.subscribe("chat.room", { onMessage: (d) => got.push(d), onRecover: (r) => recovered.push(r) });
  assert.equal((await publish(1)).status, 200);
  await sleep(300);
  assert.deepEqual(got, [1]);
  assert.equal(sub.position.offset, 1);
  c.ws.close(4000, "test");
  await sleep(50);
  for (const i of [2, 3]) assert.equal((await publish(i)).status, 200);
  for (let t = 0; t < 50 && recovered.length === 0; t++) await sleep(100);
  await publish(4);
  await sleep(300);
  assert.deepEqual(recovered, [true]);
  assert.deepEqual(got, [1, 2, 3, 4]);
  c.close();
  console.log("redis ok");
} finally { srv?.kill(); redis.kill(); }
