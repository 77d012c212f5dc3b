// Load tool: raw Bayeux clients (no client library), one JSON report on stdout.
//   node load.mjs '{"url":..., "server":"ours"|"node", "clients":1000, "rate":..., "duration":...}'
//   mode "load": subscribe, start the server's publisher, measure delivery rate and latency.
//   mode "idle": handshake and hold one /meta/connect per session, print "held", wait for stdin.
//   mode "broadcast": every client subscribes to one channel (cfg.channel), and one more
//   client publishes on it at cfg.rate/s (open loop, a client publish per message, as any
//   Bayeux client would); each publish reaches every subscriber. Reports deliveries/s, the
//   publish-to-receipt latency, and the publishes' own replies (latency, and how many took
//   longer than cfg.publishTimeout ms, default 10,000: "timed out"). The publisher runs in a
//   process of its own (mode "publisher", started by this one): in the subscribers' process
//   its timers and replies waited behind the tool's own work (the tool runs near one core at
//   1,000 x 50/s), and the publish latency it reported was the tool's, not the server's.
//   transport "long-polling" (default) or "websocket" (one socket per session; ours only, the
//   Node server has no websocket transport).
//   A line {"phase":"measuring"} is written when the measured interval starts (the runner
//   reads the server's CPU then, and again at the report).
import {spawn} from "node:child_process";
import http from "node:http";
import {createInterface} from "node:readline";
import {performance} from "node:perf_hooks";
import WebSocket from "ws";

const cfg = JSON.parse(process.argv[2]);
const base = new URL(cfg.url);
const agent = new http.Agent({keepAlive: true, maxSockets: Infinity, maxFreeSockets: 65536});
const now = () => performance.timeOrigin + performance.now();

function post(path, messages, cookie) {
    return new Promise((resolve, reject) => {
        const body = JSON.stringify(messages);
        const req = http.request({
            host: base.hostname, port: base.port, method: "POST", path: base.pathname + path, agent,
            headers: {"content-type": "application/json", "content-length": Buffer.byteLength(body),
                ...(cookie ? {cookie} : {})},
        }, (res) => {
            const chunks = [];
            res.on("data", (c) => chunks.push(c));
            res.on("end", () => {
                const text = Buffer.concat(chunks).toString();
                if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode} ${text}`));
                const setCookie = res.headers["set-cookie"];
                resolve({messages: JSON.parse(text), cookie: setCookie ? setCookie[0].split(";")[0] : null});
            });
        });
        req.on("error", reject);
        req.end(body);
    });
}

function startPublisher(rate, duration, agents) {
    // The server-side publisher (same schedule in both servers), started over plain HTTP.
    const path = `/bench/publish?rate=${rate}&duration=${duration}&agents=${agents}`;
    return new Promise((resolve, reject) => {
        http.get({host: base.hostname, port: base.port, path, agent}, (res) => {
            res.resume();
            res.on("end", resolve);
        }).on("error", reject);
    });
}

const latencies = [];
let delivered = 0;
let measuring = false;
let running = true;
let polls = 0;  // /meta/connect replies received while measuring (messages per reply = delivered / polls)

const BROADCAST = cfg.mode === "broadcast";
const subscription = (name) =>
    BROADCAST ? cfg.channel : cfg.server === "ours" ? "/me/interactions" : "/agents/" + name;

class Client {
    constructor(index) {
        this.name = index < 0 ? "publisher" : "a" + index;
        this.subscribes = index >= 0;
        this.cookie = null;
        this.msgId = 0;
    }
    publish(data) {
        return post("", [{channel: cfg.channel, clientId: this.clientId, data,
            id: String(++this.msgId)}], this.cookie).then((r) => r.messages[0]);
    }
    async start() {
        const ext = cfg.server === "ours" ? {agent: this.name} : {};
        const hs = await post("/handshake", [{channel: "/meta/handshake", version: "1.0",
            supportedConnectionTypes: ["long-polling"], id: String(++this.msgId), ext}], null);
        this.cookie = hs.cookie;
        const reply = hs.messages[0];
        if (!reply.successful) throw new Error(JSON.stringify(reply));
        this.clientId = reply.clientId;
        if (this.subscribes) {
            const sub = await post("", [{channel: "/meta/subscribe", clientId: this.clientId,
                subscription: subscription(this.name), id: String(++this.msgId)}], this.cookie);
            if (!sub.messages[0].successful) throw new Error(JSON.stringify(sub.messages[0]));
        }
        // Like the JS client: the first connect asks for an immediate answer (advice.timeout 0).
        await this.connect({timeout: 0});
    }
    connect(advice) {
        return post("/connect", [{channel: "/meta/connect", clientId: this.clientId,
            connectionType: "long-polling", id: String(++this.msgId), ...(advice ? {advice} : {})}],
        this.cookie);
    }
    async poll() {
        while (running) {
            const r = await this.connect();
            const t = now();
            if (measuring) ++polls;
            for (const m of r.messages) {
                if (m.data && typeof m.data.t === "number" && measuring) {
                    latencies.push(t - m.data.t);
                    ++delivered;
                }
            }
        }
    }
}

class WsClient {
    // The same Bayeux exchange over one websocket: replies are matched to requests by id.
    constructor(index) {
        this.name = index < 0 ? "publisher" : "a" + index;
        this.subscribes = index >= 0;
        this.msgId = 0;
        this.waiting = new Map();
    }
    publish(data) {
        return this.send({channel: cfg.channel, clientId: this.clientId, data});
    }
    send(message) {
        message.id = String(++this.msgId);
        return new Promise((resolve, reject) => {
            this.waiting.set(message.id, {resolve, reject});
            this.ws.send(JSON.stringify([message]));
        });
    }
    async start() {
        const wsUrl = cfg.url.replace(/^http/, "ws");
        this.ws = new WebSocket(wsUrl, {perMessageDeflate: false});
        await new Promise((resolve, reject) => {
            this.ws.once("open", resolve);
            this.ws.once("error", reject);
        });
        this.ws.on("message", (raw) => {
            for (const m of JSON.parse(raw.toString())) {
                const waiter = m.id !== undefined && this.waiting.get(m.id);
                if (waiter) {
                    this.waiting.delete(m.id);
                    waiter.resolve(m);
                } else if (m.data && typeof m.data.t === "number" && measuring) {
                    latencies.push(now() - m.data.t);
                    ++delivered;
                }
            }
        });
        const hs = await this.send({channel: "/meta/handshake", version: "1.0",
            supportedConnectionTypes: ["websocket"], ext: {agent: this.name}});
        if (!hs.successful) throw new Error(JSON.stringify(hs));
        this.clientId = hs.clientId;
        if (this.subscribes) {
            const sub = await this.send({channel: "/meta/subscribe", clientId: this.clientId,
                subscription: subscription(this.name)});
            if (!sub.successful) throw new Error(JSON.stringify(sub));
        }
        await this.connect({timeout: 0});
    }
    connect(advice) {
        return this.send({channel: "/meta/connect", clientId: this.clientId,
            connectionType: "websocket", ...(advice ? {advice} : {})});
    }
    async poll() {
        while (running) await this.connect();
    }
}

const publishTimeout = cfg.publishTimeout ?? 10000;

function runPublisher(publisher, rate, duration, publishing) {
    // Open loop: each message is published when it falls due, answered or not.
    const start = performance.now();
    const total = Math.floor((rate * duration) / 1000);
    const timer = setInterval(() => {
        const elapsed = performance.now() - start;
        const due = Math.min(Math.floor((rate * elapsed) / 1000), total);
        while (publishing.sent < due) {
            const seq = publishing.sent++;
            const t = now();
            let answered = false;
            let counted = false;  // as timed out, once (by the timer, or by a late reply)
            const late = setTimeout(() => {
                if (!answered && !counted) { counted = true; ++publishing.timedOut; }
            }, publishTimeout);
            publisher.publish({seq, t}).then((reply) => {
                answered = true;
                clearTimeout(late);
                const took = now() - t;
                if (took > publishTimeout && !counted) { counted = true; ++publishing.timedOut; }
                if (!reply || !reply.successful) ++publishing.failed;
                else publishing.all.push([t, took]);
            }, () => { answered = true; clearTimeout(late); ++publishing.failed; });
        }
        if (publishing.sent >= total) clearInterval(timer);
    }, 5);
}

async function inBatches(items, size, fn) {
    for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

const Kind = cfg.transport === "websocket" ? WsClient : Client;
const clients = Array.from({length: cfg.clients}, (_, i) => new Kind(i));
await inBatches(clients, 100, (c) => c.start());

if (cfg.mode === "publisher") {
    // Publish from here, record every reply, and report the ones sent in the measured window
    // (given on stdin as {"from": t, "to": t}) once the parent asks.
    const publisher = new Kind(-1);
    await publisher.start();
    publisher.poll().catch((e) => { if (running) console.error(String(e)); });
    const publishing = {timedOut: 0, failed: 0, sent: 0, all: []};
    runPublisher(publisher, cfg.rate, cfg.total, publishing);
    process.stdout.write(JSON.stringify({phase: "publishing"}) + "\n");
    const lines = createInterface({input: process.stdin});
    for await (const line of lines) {
        const window = JSON.parse(line);
        // The publishes still unanswered get up to the timeout (at most 2 s) to come back.
        await new Promise((r) => setTimeout(r, Math.min(publishTimeout, 2000)));
        const replies = publishing.all.filter(([t]) => t >= window.from && t <= window.to)
            .map(([, took]) => took).sort((a, b) => a - b);
        const pq = (p) => replies.length ? replies[Math.min(replies.length - 1, Math.floor(p * replies.length))] : null;
        process.stdout.write(JSON.stringify({
            published: publishing.sent, publish_p50_ms: pq(0.5), publish_p99_ms: pq(0.99),
            publish_max_ms: replies.length ? replies[replies.length - 1] : null,
            publish_timed_out: publishing.timedOut, publish_failed: publishing.failed,
        }) + "\n");
        running = false;
        process.exit(0);
    }
} else if (cfg.mode === "idle") {
    // Hold one connect per session and report; the runner samples the server's memory.
    for (const c of clients) c.connect().catch(() => {});
    await new Promise((r) => setTimeout(r, 1500 + cfg.clients / 5));
    process.stdout.write(JSON.stringify({held: clients.length}) + "\n");
    process.stdin.on("data", () => process.exit(0));
} else {
    for (const c of clients) c.poll().catch((e) => { if (running) console.error(String(e)); });
    await new Promise((r) => setTimeout(r, 500));
    const warmup = cfg.warmup ?? 1000;
    let child = null;
    let childLines = null;
    if (BROADCAST) {
        child = spawn(process.execPath, [process.argv[1], JSON.stringify({...cfg, mode: "publisher",
            clients: 0, total: cfg.duration + warmup + 500})], {stdio: ["pipe", "pipe", "inherit"]});
        childLines = createInterface({input: child.stdout})[Symbol.asyncIterator]();
        const first = await childLines.next();
        if (first.done) throw new Error("the publisher process failed");
    } else {
        await startPublisher(cfg.rate, cfg.duration + warmup + 500, cfg.clients);
    }
    await new Promise((r) => setTimeout(r, warmup));
    process.stdout.write(JSON.stringify({phase: "measuring"}) + "\n");
    measuring = true;
    const t0 = performance.now();
    const from = now();
    const cpu0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, cfg.duration));
    measuring = false;
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    latencies.sort((a, b) => a - b);
    const q = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null;
    const report = {
        offered: cfg.rate, delivered_per_s: delivered / seconds, p50_ms: q(0.5), p99_ms: q(0.99),
        max_ms: latencies.length ? latencies[latencies.length - 1] : null, samples: latencies.length,
        seconds, polls_per_s: polls / seconds, tool_cores: (cpu.user + cpu.system) / 1e6 / seconds,
    };
    if (BROADCAST) {
        child.stdin.write(JSON.stringify({from, to: from + seconds * 1000}) + "\n");
        const answer = await childLines.next();
        if (answer.done) throw new Error("the publisher process gave no report");
        Object.assign(report, {clients: cfg.clients, expected_per_s: cfg.clients * cfg.rate},
            JSON.parse(answer.value));
    }
    process.stdout.write(JSON.stringify(report) + "\n");
    running = false;
    process.exit(0);
}
