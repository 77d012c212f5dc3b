// The official cometd-nodejs-server with a publisher equivalent to ours_server.py:
// one channel per agent (/agents/a<i>), a steady rate spread round-robin over the agents.
"use strict";
const http = require("http");
const {performance} = require("perf_hooks");
const cometd = require("cometd-nodejs-server");

const port = Number(process.argv[2]);
const timeout = Number(process.argv[3] || 25000);
const server = cometd.createCometDServer({timeout, maxInterval: 10000});
const channels = new Map();
const channelOf = (agent) => {
    let channel = channels.get(agent);
    if (!channel) {
        channel = server.createServerChannel("/agents/" + agent);
        channels.set(agent, channel);
    }
    return channel;
};

function startPublisher(rate, duration, agents) {
    for (let i = 0; i < agents; ++i) channelOf("a" + i);
    const start = performance.now();
    let sent = 0;
    const timer = setInterval(() => {
        const elapsed = performance.now() - start;
        const due = Math.min(Math.floor((rate * Math.min(elapsed, duration)) / 1000), Math.floor(rate * duration / 1000));
        while (sent < due) {
            const t = performance.timeOrigin + performance.now();
            channelOf("a" + (sent % agents)).publish(null, {seq: sent, t});
            ++sent;
        }
        if (elapsed >= duration) clearInterval(timer);
    }, 5);
}

const httpServer = http.createServer((req, res) => {
    if (req.url.startsWith("/bench/publish")) {
        const q = new URL(req.url, "http://x").searchParams;
        startPublisher(Number(q.get("rate")), Number(q.get("duration")), Number(q.get("agents")));
        res.end("ok");
        return;
    }
    server.handle(req, res);
});
httpServer.keepAliveTimeout = 60000;
httpServer.listen(port, "127.0.0.1", () => process.stdout.write("ready\n"));
