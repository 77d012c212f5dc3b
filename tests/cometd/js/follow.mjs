// Follows one agent's notifications with the official client and the replay extension, across
// server restarts; on a ReadState message it re-reads the state (GET /me/interactions).
// Config: one JSON argument {url, api, user, password, transport, subscribe}. Events: JSON lines.
import {adapt} from "cometd-nodejs-client";
import {CometD} from "cometd";
import {ReplayExtension} from "./replay-extension.mjs";

const config = JSON.parse(process.argv[2]);
adapt();

const emit = (event, fields) => process.stdout.write(JSON.stringify({event, ...fields}) + "\n");
const basic = "Basic " + Buffer.from(`${config.user}:${config.password}`).toString("base64");

const cometd = new CometD();
if (config.transport === "websocket") {
    cometd.unregisterTransport("long-polling");
    cometd.unregisterTransport("callback-polling");
} else {
    cometd.unregisterTransport("websocket");
}
const replay = new ReplayExtension();
cometd.registerExtension("replay", replay);
cometd.configure({
    url: config.url,
    logLevel: "warn",
    requestHeaders: config.transport === "websocket" ? {} : {Authorization: basic},
    backoffIncrement: 250,
    maxBackoff: 1000,
});

async function reread(reason) {
    // What a desktop does on ReadState: GET its interactions (retried until the server answers).
    for (;;) {
        try {
            const response = await fetch(`${config.api}/me/interactions`, {
                headers: {Authorization: basic},
            });
            if (response.ok) {
                const body = await response.json();
                emit("reread", {reason, interactions: body.interactions});
                return;
            }
        } catch (error) {
            // the server is not back yet
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
    }
}

const onMessage = (m) => {
    emit("message", {channel: m.channel, seq: m.ext?.seq ?? null, data: m.data});
    if (m.data?.messageTypeName === "ReadState") {
        reread(m.data.reason);
    }
};

cometd.addListener("/meta/handshake", (m) => {
    emit("handshake", {
        successful: m.successful, clientId: m.clientId, replay: replay.serverReplays,
        after: replay.after,
    });
    if (m.successful) {
        cometd.batch(() => {
            for (const channel of config.subscribe) {
                cometd.subscribe(channel, onMessage, (r) => {
                    emit("subscribed", {channel, successful: r.successful, error: r.error});
                });
            }
        });
    }
});
cometd.addListener("/meta/connect", (m) => {
    if (!m.successful) {
        emit("connect-failed", {error: m.error ?? null});
    }
});
cometd.handshake(config.transport === "websocket" ? {ext: {authorization: basic}} : {});
