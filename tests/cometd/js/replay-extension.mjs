// The client half of the server's "replay" extension (docs/cometd.md, "Replay after a
// re-handshake"): notifications committed while the client had no session (a server restart,
// a network outage) are delivered after its next handshake instead of being lost.
//
// It remembers the highest `ext.seq` of the messages it received and sends it on every
// handshake as `ext.replay.after`; after each subscribe the server sends, on the subscribed
// channels, what the agent was notified of since then, in seq order, without duplicates. When
// that cannot be known it sends a `ReadState` message instead: re-read the state (GET).
import {Extension} from "cometd";

export class ReplayExtension extends Extension {
    /** @param {number|null} after the last seq received before (e.g. kept by the page), if any */
    constructor(after = null) {
        super();
        this.after = Number.isSafeInteger(after) ? after : null;
        this.serverReplays = false;
    }

    outgoing(message) {
        if (message.channel === "/meta/handshake") {
            // A copy: the handshake properties the message was made from are reused.
            const replay = this.after === null ? {} : {after: this.after};
            message.ext = Object.assign({}, message.ext, {replay});
        }
        return message;
    }

    incoming(message) {
        if (message.channel === "/meta/handshake") {
            this.serverReplays = message.successful === true && message.ext?.replay === true;
        } else if (!message.channel.startsWith("/meta/")) {
            const seq = message.ext?.seq;
            if (Number.isSafeInteger(seq) && (this.after === null || seq > this.after)) {
                this.after = seq;
            }
        }
        return message;
    }
}
