// The Node floor of benchmarks/cometd/poll_floor.py: its http module answering a small JSON POST.
const http = require("http");
const REPLY = JSON.stringify([{channel: "/meta/connect", successful: true, id: "1"}]);
http.createServer((req, res) => { const c = []; req.on("data", (d) => c.push(d)); req.on("end", () => { JSON.parse(Buffer.concat(c).toString()); res.writeHead(200, {"content-type": "application/json", "content-length": Buffer.byteLength(REPLY)}); res.end(REPLY); }); }).listen(Number(process.argv[2]), "127.0.0.1", () => console.log("ready"));
