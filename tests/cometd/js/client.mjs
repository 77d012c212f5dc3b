// A scripted official CometD client (npm `cometd` + `cometd-nodejs-client`) for pytest.
// Config: one JSON argument. Events: JSON lines on stdout. Commands: JSON lines on stdin.
import {createInterface} from "node:readline";
import {adapt} from "cometd-nodejs-client";
import {AckExtension, CometD} from "cometd";

const config = JSON.parse(process.argv[2]);
adapt();

const emit = (event, fields) => process.stdout.write(JSON.stringify({event, ...fields}) + "\n");

const cometd = new CometD();
if (config.transport === "long-polling") {
    cometd.unregisterTransport("websocket");
} else {
    cometd.unregisterTransport("long-polling");
    cometd.unregisterTransport("callback-polling");
}
if (config.ack) {
    cometd.registerExtension("ack", new AckExtension());
}
const basic = "Basic " + Buffer.from(`${config.user}:${config.password}`).toString("base64");
cometd.configure({
    url: config.url,
    logLevel: config.logLevel || "warn",
    // Long-polling can carry the Authorization header; a websocket cannot, so the handshake
    // also carries it in ext (both are accepted by the test authenticator).
    requestHeaders: config.auth === "header" ? {Authorization: basic} : {},
});

const subscriptions = [];
const onMessage = (m) => emit("message", {channel: m.channel, data: m.data, id: m.id});

cometd.addListener("/meta/handshake", (m) => {
    emit("handshake", {
        successful: m.successful, reestablish: m.reestablish === true, clientId: m.clientId,
        error: m.error, advice: m.advice, ext: m.ext,
    });
    if (m.successful) {
        // Subscriptions are wiped by a re-handshake: subscribe (again) from the listener.
        cometd.batch(() => {
            subscriptions.length = 0;
            for (const channel of config.subscribe || []) {
                subscriptions.push(cometd.subscribe(channel, onMessage, (r) => {
                    emit("subscribed", {channel, successful: r.successful, error: r.error});
                }));
            }
        });
    }
});
cometd.addListener("/meta/connect", (m) => {
    emit("connect", {successful: m.successful, error: m.error, advice: m.advice});
});
cometd.addListener("/meta/unsuccessful", (m) => {
    emit("unsuccessful", {channel: m.channel, error: m.error, advice: m.advice});
});
cometd.addListener("/service/echo", onMessage);

const handshakeExt = config.auth === "ext" ? {authorization: basic} : {};
cometd.handshake({ext: handshakeExt});

const rl = createInterface({input: process.stdin});
rl.on("line", (line) => {
    const command = JSON.parse(line);
    if (command.cmd === "publish") {
        cometd.publish(command.channel, command.data, (r) => {
            emit("published", {channel: command.channel, successful: r.successful, error: r.error});
        });
    } else if (command.cmd === "subscribe") {
        cometd.subscribe(command.channel, onMessage, (r) => {
            emit("subscribed", {channel: command.channel, successful: r.successful, error: r.error});
        });
    } else if (command.cmd === "disconnect") {
        cometd.disconnect((r) => {
            emit("disconnected", {successful: r.successful});
            rl.close();
            setTimeout(() => process.exit(0), 50);
        });
    }
});
