// The client half of the server's replay extension (docs/cometd.md, "Replay after a
// re-handshake"), for the browser: notifications committed while the page had no CometD session
// (a server restart, a network outage) are sent after its next handshake instead of being lost.
//
// It keeps the highest `ext.seq` of the non-meta messages it received and sends it on every
// handshake as `ext.replay.after` (`{}` before it has one). The server confirms with
// `ext.replay: true`, then replays what came after, in seq order, once each; when it cannot, it
// sends a `ReadState` message on each channel instead, and the page re-reads its state.
import {Extension} from "../vendor/cometd-9.0.0/Extension.js";

export class ReplayExtension extends Extension {
    constructor(after = null) {
        super();
        this.after = Number.isSafeInteger(after) ? after : null;
        this.serverReplays = false;
    }

    outgoing(message) {
        if (message.channel === "/meta/handshake") {
            // A new object: the client reuses the handshake properties for every re-handshake.
            const replay = this.after === null ? {} : {after: this.after};
            message.ext = Object.assign({}, message.ext, {replay});
        }
        return message;
    }

    incoming(message) {
        const channel = message.channel || "";
        if (channel === "/meta/handshake") {
            this.serverReplays = message.successful === true && message.ext?.replay === true;
        } else if (!channel.startsWith("/meta/")) {
            const seq = message.ext?.seq;
            if (Number.isSafeInteger(seq) && (this.after === null || seq > this.after)) {
                this.after = seq;
            }
        }
        return message;
    }
}
