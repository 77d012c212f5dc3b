// DOM helpers: elements are built with createElement and text nodes only (never innerHTML:
// the page's CSP enforces Trusted Types, so an HTML string sink would throw).

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "multiple"]);

/** h("button", {class: "x", onclick: f}, "text", child...) */
export function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") el.className = value;
        else if (key === "dataset") Object.assign(el.dataset, value);
        else if (key.startsWith("on") && typeof value === "function") {
            el.addEventListener(key.slice(2), value);
        } else if (PROPERTIES.has(key)) el[key] = value;
        else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const child of children) {
        if (child === null || child === undefined || child === false) continue;
        if (Array.isArray(child)) append(el, child);
        else el.append(child instanceof Node ? child : String(child));
    }
}

export function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** "just now", "4 min", "2 h", "3 d" since an ISO time. */
export function age(iso, now = Date.now()) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const s = Math.max(0, (now - then) / 1000);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
}

export function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

export function clock(date = new Date()) {
    return date.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit", second: "2-digit"});
}

/** The display name of the first address of "Name <a@b>, c@d", else the address. */
export function person(addresses) {
    const first = (addresses || "").split(/,(?=(?:[^"]*"[^"]*")*[^"]*$)/)[0].trim();
    const named = /^"?([^"<]*?)"?\s*<([^>]+)>$/.exec(first);
    return named ? (named[1].trim() || named[2]) : first;
}

export function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** "a@b, c@d" or ["a@b"] as the list Send takes (empty entries dropped). */
export function addressList(text) {
    return (text || "").split(/[,;\n](?=(?:[^"]*"[^"]*")*[^"]*$)/).map((a) => a.trim()).filter(Boolean);
}
