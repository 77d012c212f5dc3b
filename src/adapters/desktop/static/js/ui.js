// The page's furniture: the status line, the error area, invitation toasts, dialogs, the
// keyboard shortcuts and their help overlay, the optional sound.
import {$, h, replace} from "./dom.js";

export function setStatus(text, kind = "ok") {
    const status = $("#status");
    status.textContent = text;
    status.dataset.kind = kind;
}

/** An API error (its errorDescription) shown in the page: the alert region, newest first. */
export function showError(description, context = "") {
    const area = $("#errors");
    const text = context ? `${context}: ${description}` : description;
    const close = h("button", {class: "link", type: "button", "aria-label": "Dismiss"}, "✕");
    const item = h("div", {class: "error", role: "alert"}, h("span", {class: "error-text"}, text), close);
    close.addEventListener("click", () => item.remove());
    area.prepend(item);
    while (area.children.length > 3) area.lastElementChild.remove();
    setTimeout(() => item.remove(), 30000);
}

export function clearErrors() {
    $("#errors").replaceChildren();
}

// ------------------------------------------------------------------------------ toasts

const toasts = new Map(); // interaction id -> {el, deadline, timer}

/** An invitation: role=alert, a countdown to the offer's timeout, Accept and Reject. */
export function showToast(message, {onAccept, onReject}) {
    if (toasts.has(message.id)) return;
    const email = message.email_object;
    const count = h("span", {class: "countdown", "aria-hidden": "true"}, "…");
    const bar = h("progress", {max: "100", value: "100", "aria-hidden": "true"});
    const accept = h("button", {class: "primary", type: "button", "aria-keyshortcuts": "a"}, "Accept");
    const reject = h("button", {type: "button", "aria-keyshortcuts": "x"}, "Reject");
    const el = h("div", {class: "toast", role: "alert", dataset: {id: message.id}},
        h("div", {class: "toast-title"}, message.interactionSubType?.startsWith("Outbound") ? "Draft offered" : "New e-mail"),
        h("div", {class: "toast-subject"}, email.Subject || "(no subject)"),
        h("div", {class: "toast-from"}, email.FromAddress),
        h("div", {class: "toast-time"}, bar, count),
        h("div", {class: "toast-actions"}, accept, reject));
    accept.addEventListener("click", () => onAccept(message.id));
    reject.addEventListener("click", () => onReject(message.id));
    $("#toasts").append(el);
    toasts.set(message.id, {el, deadline: null, total: null, count, bar, timer: null});
}

export function toastDeadline(id, seconds) {
    const toast = toasts.get(id);
    if (!toast || seconds === null || seconds === undefined) return;
    toast.deadline = Date.now() + seconds * 1000;
    toast.total = Math.max(seconds, 1);
    const tick = () => {
        const left = Math.max(0, (toast.deadline - Date.now()) / 1000);
        toast.count.textContent = left > 0 ? `${Math.ceil(left)} s to answer` : "expiring…";
        toast.bar.value = String(Math.round((100 * left) / toast.total));
    };
    tick();
    clearInterval(toast.timer);
    toast.timer = setInterval(tick, 1000);
}

export function removeToast(id) {
    const toast = toasts.get(id);
    if (!toast) return;
    clearInterval(toast.timer);
    toast.el.remove();
    toasts.delete(id);
}

export function clearToasts() {
    for (const id of [...toasts.keys()]) removeToast(id);
}

export function firstToast() {
    return toasts.keys().next().value ?? null;
}

// ------------------------------------------------------------------------------ sound

let audio = null;

export function soundOn() {
    return localStorage.getItem("desktop.sound") === "on";
}

export function setSound(on) {
    localStorage.setItem("desktop.sound", on ? "on" : "off");
}

/** Two short tones (Web Audio: no file to load), only when the agent turned sound on. */
export function chime() {
    if (!soundOn()) return;
    try {
        audio = audio || new AudioContext();
        const start = audio.currentTime;
        for (const [offset, frequency] of [[0, 880], [0.18, 660]]) {
            const osc = audio.createOscillator();
            const gain = audio.createGain();
            osc.frequency.value = frequency;
            gain.gain.setValueAtTime(0.15, start + offset);
            gain.gain.exponentialRampToValueAtTime(0.001, start + offset + 0.16);
            osc.connect(gain).connect(audio.destination);
            osc.start(start + offset);
            osc.stop(start + offset + 0.17);
        }
    } catch {
        // No audio device: the toast is still shown.
    }
}

// ------------------------------------------------------------------------------ dialogs

/**
 * A modal form: fields is a list of {name, label, kind: "select"|"textarea"|"radio", options}.
 * Resolves with the values, or null when cancelled.
 */
export function ask(title, fields, submitLabel = "OK") {
    return new Promise((resolve) => {
        const form = h("form", {method: "dialog", class: "dialog-form"});
        form.append(h("h2", {id: "dialog-title"}, title));
        for (const field of fields) form.append(fieldElement(field));
        const ok = h("button", {class: "primary", type: "submit", value: "ok"}, submitLabel);
        const cancel = h("button", {type: "button"}, "Cancel");
        form.append(h("div", {class: "dialog-actions"}, ok, cancel));
        const dialog = h("dialog", {"aria-labelledby": "dialog-title"}, form);
        let result = null;
        form.addEventListener("submit", (event) => {
            event.preventDefault();
            result = Object.fromEntries(new FormData(form).entries());
            dialog.close();
        });
        cancel.addEventListener("click", () => dialog.close());
        dialog.addEventListener("close", () => {
            dialog.remove();
            resolve(result);
        });
        document.body.append(dialog);
        dialog.showModal();
        const first = form.querySelector("input:not([type=radio]), input[type=radio]:checked, select, textarea");
        if (first) first.focus();
    });
}

function fieldElement(field) {
    const id = `f-${field.name}-${Math.random().toString(36).slice(2, 7)}`;
    if (field.kind === "textarea") {
        return h("label", {class: "field"}, field.label,
            h("textarea", {id, name: field.name, rows: "5", value: field.value ?? ""}));
    }
    if (field.kind === "note") return h("p", {class: "muted"}, field.label);
    if (field.kind === "radio") {
        return h("fieldset", {class: "radios"}, h("legend", null, field.label),
            field.options.map((o, i) => h("label", null,
                h("input", {type: "radio", name: field.name, value: o.value, checked: i === 0}), " ", o.label)));
    }
    const select = h("select", {id, name: field.name, required: field.required ? true : undefined},
        field.options.map((o) => h("option", {value: o.value, disabled: o.disabled}, o.label)));
    return h("label", {class: "field"}, field.label, select);
}

// ------------------------------------------------------------------------------ keyboard

export const SHORTCUTS = [
    ["a", "Accept the invitation (the oldest toast, or the selected one)"],
    ["x", "Reject the invitation"],
    ["r", "Reply"],
    ["Shift+R", "Reply all"],
    ["f", "Forward"],
    ["Ctrl+Enter", "Send the draft (also while typing)"],
    ["j or ↓", "Next interaction (the arrows move in the focused list)"],
    ["k or ↑", "Previous interaction"],
    ["c", "New e-mail"],
    ["?", "Show or hide this help"],
    ["Esc", "Close a dialog or this help"],
];

export function helpDialog() {
    let dialog = $("#help");
    if (!dialog) {
        const close = h("button", {type: "button", class: "primary"}, "Close");
        dialog = h("dialog", {id: "help", "aria-labelledby": "help-title"},
            h("h2", {id: "help-title"}, "Keyboard shortcuts"),
            h("table", {class: "shortcuts"},
                h("tbody", null, SHORTCUTS.map(([key, what]) =>
                    h("tr", null, h("th", {scope: "row"}, key.split(" or ").map((k, i) =>
                        [i ? " or " : "", k.split("+").map((p, j) => [j ? "+" : "", h("kbd", null, p)])])), h("td", null, what))))),
            h("div", {class: "dialog-actions"}, close));
        close.addEventListener("click", () => dialog.close());
        document.body.append(dialog);
    }
    return dialog;
}

export function toggleHelp() {
    const dialog = helpDialog();
    if (dialog.open) dialog.close();
    else dialog.showModal();
}

/** Global shortcuts; typing in a field only reaches Ctrl+Enter. */
export function bindKeys(actions) {
    document.addEventListener("keydown", (event) => {
        if (event.defaultPrevented) return;
        if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
            event.preventDefault();
            actions.send();
            return;
        }
        if (event.ctrlKey || event.metaKey || event.altKey) return;
        const target = event.target;
        const typing = target instanceof HTMLElement
            && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
        if (typing || document.querySelector("dialog[open]:not(#help)")) return;
        const key = event.key;
        const action = {
            a: actions.accept, x: actions.reject, r: actions.reply, R: actions.replyAll,
            f: actions.forward, j: actions.next, k: actions.previous, c: actions.create, "?": toggleHelp,
        }[key];
        if (!action) return;
        event.preventDefault();
        action();
    });
}

export {replace};
