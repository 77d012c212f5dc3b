// Notifications over CometD (docs/cometd.md) with the official client: websocket, or
// long-polling (`?transport=long-polling`), the ack extension (nothing lost or doubled within a
// session) and the replay extension (nothing lost across sessions: a server restart, an
// outage). The session cookie authenticates the handshake, over either transport.
import {CometD} from "../vendor/cometd-9.0.0/Client.js";
import {AckExtension} from "../vendor/cometd-9.0.0/AckExtension.js";
import {ReplayExtension} from "./replay.js";

export const CHANNELS = ["/me/interactions", "/me/channels", "/me/workbins"];

/**
 * The page enforces Trusted Types (its CSP): the CometD client starts its timer worker from a
 * blob: URL of its own code. The default policy lets exactly such URLs through, nothing else.
 */
function trustWorkerUrls() {
    if (!window.trustedTypes || window.trustedTypes.defaultPolicy) return;
    const own = `blob:${window.location.origin}/`;
    window.trustedTypes.createPolicy("default", {
        createScriptURL(url) {
            if (typeof url === "string" && url.startsWith(own)) return url;
            throw new TypeError(`script URL refused by the desktop's policy: ${url}`);
        },
    });
}

export class Live {
    /**
     * @param {object} handlers onMessage(message), onHandshake({first, replayed}),
     *   onStatus(text, kind), onDenied(error)
     */
    constructor(handlers, transport = "websocket") {
        this.handlers = handlers;
        this.transport = transport;
        this.handshakes = 0;
        this.connected = false;
        this.stopped = false;
        this.cometd = null;
    }

    start() {
        trustWorkerUrls();
        const cometd = new CometD();
        this.cometd = cometd;
        cometd.unregisterTransport("callback-polling"); // JSONP: neither served nor allowed by the CSP
        if (this.transport === "long-polling") cometd.unregisterTransport("websocket");
        cometd.registerExtension("ack", new AckExtension());
        this.replay = new ReplayExtension();
        cometd.registerExtension("replay", this.replay);
        cometd.configure({
            url: new URL("/api/v2/notifications", window.location.href).href,
            logLevel: "warn",
            backoffIncrement: 500,
            maxBackoff: 5000,
        });
        cometd.addListener("/meta/handshake", (m) => this.#handshook(m));
        cometd.addListener("/meta/connect", (m) => this.#connected(m));
        this.handlers.onStatus("Connecting…", "busy");
        cometd.handshake();
    }

    stop() {
        this.stopped = true;
        if (this.cometd) this.cometd.disconnect();
    }

    get transportName() {
        return this.cometd?.getTransport()?.type ?? this.transport;
    }

    #handshook(message) {
        if (this.stopped) return;
        if (!message.successful) {
            this.connected = false;
            const error = String(message.error || "");
            if (error.startsWith("403")) {
                this.stopped = true;
                this.handlers.onDenied(error);
            } else {
                this.handlers.onStatus("Cannot reach the server — retrying…", "warn");
            }
            return;
        }
        this.handshakes += 1;
        const first = this.handshakes === 1;
        const onMessage = (m) => this.handlers.onMessage(m);
        // Subscriptions do not survive a re-handshake: (re)subscribe here, in one batch.
        this.cometd.batch(() => {
            for (const channel of CHANNELS) {
                this.cometd.subscribe(channel, onMessage, (reply) => {
                    if (!reply.successful) {
                        this.handlers.onStatus(`Subscription to ${channel} failed: ${reply.error}`, "error");
                    }
                });
            }
        });
        this.connected = true;
        this.handlers.onHandshake({first, replayed: this.replay.serverReplays});
    }

    #connected(message) {
        if (this.stopped || this.cometd.isDisconnected()) return;
        if (message.successful === false) {
            if (this.connected) {
                this.connected = false;
                this.handlers.onStatus("Connection lost — reconnecting…", "warn");
            }
        } else if (!this.connected) {
            this.connected = true;
            this.handlers.onStatus(`Connection restored (${this.transportName})`, "ok");
        }
    }
}
