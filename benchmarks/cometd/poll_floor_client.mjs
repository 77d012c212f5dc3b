// The load of benchmarks/cometd/poll_floor.py: N concurrent keep-alive POST loops of a /meta/connect-sized batch for D ms; prints "measuring", then {"rps": ...}.
import http from "node:http";
const [port, n, d] = process.argv.slice(2).map(Number);
const agent = new http.Agent({keepAlive: true, maxSockets: Infinity});
const body = JSON.stringify([{channel: "/meta/connect", clientId: "x", connectionType: "long-polling", id: "1"}]);
let count = 0, running = true;
function one() {
  return new Promise((resolve, reject) => {
    const req = http.request({host: "127.0.0.1", port, method: "POST", path: "/cometd/connect", agent,
      headers: {"content-type": "application/json", "content-length": Buffer.byteLength(body)}}, (res) => {
      const chunks = []; res.on("data", (c) => chunks.push(c)); res.on("end", () => { JSON.parse(Buffer.concat(chunks).toString()); resolve(); });
    });
    req.on("error", reject); req.end(body);
  });
}
async function loop() { while (running) { await one(); count++; } }
for (let i = 0; i < n; i++) loop();
await new Promise((r) => setTimeout(r, 1000));
count = 0; const t0 = performance.now();
process.stdout.write("measuring\n");
await new Promise((r) => setTimeout(r, d));
const s = (performance.now() - t0) / 1000;
process.stdout.write(JSON.stringify({rps: count / s}) + "\n");
process.exit(0);
