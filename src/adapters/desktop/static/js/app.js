// The agent desktop: log in, go Ready, get invitations, read, answer and file e-mail, all with
// the public HTTP API (api.js) and CometD notifications (live.js). docs/desktop.md.
import {$, addressList, age, clock, h, person, replace, size, when} from "./dom.js";
import {Api, ApiError} from "./api.js";
import {Live} from "./live.js";
import {
    ask, bindKeys, chime, clearErrors, clearToasts, firstToast, removeToast, setSound,
    setStatus, showError, showToast, soundOn, toastDeadline, toggleHelp,
} from "./ui.js";

const api = new Api();
const DRAFT_STATES = new Set(["ReplyCreated", "Failed"]);
const LABELS = {
    Accept: "Accept", Reject: "Reject", Transfer: "Transfer…", Reply: "Reply", ReplyAll: "Reply all",
    Forward: "Forward", StopProcessing: "Done (StopProcessing)", PlaceInQueue: "Place in queue…",
    Cancel: "Cancel draft", Send: "Send", PlaceInWorkbin: "Place in workbin…", Pull: "Pull",
    UpdateProperties: "Edit comment…", LinkAttachment: "Attach from original…",
};
const KEYS = {Accept: "a", Reject: "x", Reply: "r", ReplyAll: "Shift+R", Forward: "f", Send: "Control+Enter"};

const state = {
    me: null, // GET /me's user
    items: new Map(), // the agent's interactions (owned or offered): id -> InteractionStateMessage
    seen: new Map(), // others shown in the reader (a workbin's, a sent draft): id -> message
    selected: null,
    content: new Map(), // id -> GET .../content (date, html, remoteImages)
    images: new Set(), // ids whose remote images the agent asked to see
    edits: new Map(), // draft id -> {to, cc, bcc, subject, text}: what the agent typed
    workbins: [],
    workbin: null,
    workbinItems: [],
    lastSeq: null, // the highest ext.seq applied
    reading: 0, // re-reads in flight: notifications wait in `held` meanwhile
    held: [],
    live: null,
};

const NARROW = window.matchMedia("(max-width: 60rem)"); // one column: the reader below the lists
const params = new URLSearchParams(window.location.search);
const TRANSPORT = params.get("transport") === "long-polling" ? "long-polling" : "websocket";

// ------------------------------------------------------------------------------ helpers

const message = (id) => state.items.get(id) ?? state.seen.get(id) ?? null;
const isMine = (m) => m.agentId === state.me?.id || m.state === "Invited";
const isDraft = (m) => DRAFT_STATES.has(m.state) && m.capabilities.includes("Send");
const iid = (id) => encodeURIComponent(id);

async function attempt(what, fn) {
    try {
        return await fn();
    } catch (error) {
        if (error instanceof ApiError) showError(error.description, what);
        else {
            showError(String(error?.message ?? error), what);
            console.error(error);
        }
        return undefined;
    }
}

function loadEdits() {
    try {
        const saved = JSON.parse(sessionStorage.getItem("desktop.edits") || "{}");
        for (const [id, edit] of Object.entries(saved)) state.edits.set(id, edit);
    } catch {
        sessionStorage.removeItem("desktop.edits");
    }
}

function saveEdits() {
    sessionStorage.setItem("desktop.edits", JSON.stringify(Object.fromEntries(state.edits)));
}

// ------------------------------------------------------------------------------ log in / out

async function login(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const agent = form.elements.agent.value.trim();
    const password = form.elements.password.value;
    const error = $("#login-error");
    error.textContent = "";
    const button = form.querySelector("button");
    button.disabled = true;
    try {
        const answer = await api.login(agent, password);
        form.elements.password.value = "";
        sessionStorage.setItem("desktop.agent", answer.user.id);
        start(answer.user);
    } catch (e) {
        error.textContent = e instanceof ApiError ? e.description : String(e);
        form.elements.password.select();
    } finally {
        button.disabled = false;
    }
}

async function logout() {
    await attempt("Log out", () => api.post("/me/logout"));
    sessionStorage.removeItem("desktop.agent");
    sessionStorage.removeItem("desktop.edits");
    stop("Logged out.");
}

function stop(note) {
    if (state.live) state.live.stop();
    state.live = null;
    state.me = null;
    state.items.clear();
    state.seen.clear();
    state.edits.clear();
    state.selected = null;
    clearToasts();
    clearErrors();
    $("#desk").hidden = true;
    $("#me-bar").hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = note || "";
    setStatus("Not connected", "off");
    document.title = "Agent desktop";
    $("#login-form").elements.agent.focus();
}

function start(user) {
    state.me = user;
    $("#login").hidden = true;
    $("#desk").hidden = false;
    $("#me-bar").hidden = false;
    $("#me-name").textContent = user.name || user.id;
    document.title = `${user.name || user.id} — Agent desktop`;
    renderMe();
    renderList();
    renderReader();
    state.live = new Live({
        onMessage: received,
        onHandshake: handshook,
        onStatus: setStatus,
        onDenied: () => stop("Your session has ended: log in again."),
    }, TRANSPORT);
    state.live.start();
    $("#mine").focus();
}

// ------------------------------------------------------------------------------ notifications

function handshook({first, replayed}) {
    const transport = state.live.transportName;
    if (first) setStatus(`Connected (${transport}) — reading your interactions…`, "busy");
    else {
        setStatus(`Reconnected at ${clock()} (${transport})${replayed ? ", missed notifications replayed" : ""} — re-reading your state…`, "busy");
    }
    // After every handshake: re-read what the page shows. Notifications arriving meanwhile are
    // held and applied after the read, in order, so the newest state wins (docs/desktop.md).
    reread(first ? "Connected" : `Reconnected at ${clock()}`, replayed && !first);
}

let rereadAgain = null;

async function reread(note, replayed = false) {
    if (!state.live) return; // logged out meanwhile
    if (state.reading) {
        rereadAgain = note;
        return;
    }
    state.reading += 1;
    try {
        const [me, mine] = await Promise.all([api.get("/me"), api.get("/me/interactions")]);
        state.me = me.user;
        const fresh = new Map(mine.interactions.map((m) => [m.id, m]));
        for (const id of state.items.keys()) {
            if (!fresh.has(id)) removeToast(id);
        }
        state.items = fresh;
        for (const m of fresh.values()) if (m.state === "Invited") invitation(m, false);
        await loadWorkbins();
        if (state.live) {
            const transport = state.live.transportName;
            const replay = replayed ? ", missed notifications replayed" : "";
            setStatus(`${note} over ${transport}${replay} — state and interactions read at ${clock()}, up to date`, "ok");
        }
    } catch (error) {
        if (error instanceof ApiError) showError(error.description, "Reading your interactions");
        else console.error(error);
        setStatus("Could not read your interactions — will retry", "warn");
        setTimeout(() => reread(note), 2000);
    } finally {
        state.reading -= 1;
    }
    const held = state.held.splice(0);
    for (const m of held) apply(m);
    renderMe();
    renderList();
    renderReader();
    if (rereadAgain !== null) {
        const again = rereadAgain;
        rereadAgain = null;
        reread(again);
    }
}

function received(m) {
    const seq = m.ext?.seq;
    if (m.data?.messageTypeName === "ReadState") {
        // The server could not replay (or this is a fresh page): the re-read covers everything
        // up to its seq, and only what comes after it is applied.
        if (Number.isSafeInteger(seq)) state.lastSeq = seq;
        reread(state.live && state.live.handshakes > 1 ? `Reconnected at ${clock()}` : "Connected");
        return;
    }
    if (Number.isSafeInteger(seq)) {
        if (state.lastSeq !== null && seq <= state.lastSeq) return; // never sent twice; cheap anyway
        state.lastSeq = seq;
    }
    if (state.reading) state.held.push(m);
    else apply(m);
}

function apply(m) {
    const data = m.data || {};
    const channel = m.channel.replace(/^\/v2/, "");
    if (channel === "/me/interactions" && data.messageTypeName === "InteractionStateMessage") {
        interaction(data);
    } else if (channel === "/me/channels" && data.channels) {
        if (state.me) state.me.channels = data.channels;
        renderMe();
    } else if (channel === "/me/workbins") {
        scheduleWorkbinRefresh();
    }
}

function interaction(m) {
    const known = state.items.get(m.id);
    if (isMine(m)) {
        state.items.set(m.id, m);
        state.seen.delete(m.id);
    } else {
        state.items.delete(m.id);
        state.seen.set(m.id, m);
    }
    if (m.state === "Invited") invitation(m, !known || known.state !== "Invited");
    else removeToast(m.id);
    if (m.state === "Failed" && m.userData?.DeliveryError) {
        showError(m.userData.DeliveryError, `Delivery of "${m.email_object.Subject}" failed`);
    }
    renderList();
    if (state.selected === m.id || !state.selected) renderReader();
}

function invitation(m, fresh) {
    showToast(m, {onAccept: (id) => accept(id), onReject: (id) => reject(id)});
    if (fresh) chime();
    api.get(`/me/interactions/${iid(m.id)}/content`)
        .then((r) => toastDeadline(m.id, r.content.offerExpiresInSeconds))
        .catch(() => {});
}

// ------------------------------------------------------------------------------ the agent

function readiness() {
    const channel = (state.me?.channels || []).find((c) => c.channel === "email");
    return channel?.userState ?? {state: "NotReady"};
}

function renderMe() {
    const user = readiness();
    const ready = user.state === "Ready";
    const badge = $("#ready-state");
    badge.textContent = ready ? "Ready" : `Not ready${user.reason ? ` (${user.reason})` : ""}`;
    badge.dataset.ready = ready ? "yes" : "no";
    $("#ready-btn").setAttribute("aria-pressed", String(ready));
    $("#notready-btn").setAttribute("aria-pressed", String(!ready));
    if (!state.selected) renderReader();
}

async function setReady(ready) {
    const body = ready ? {operationName: "Ready"} : {operationName: "NotReady", reason: $("#reason").value.trim() || undefined};
    const answer = await attempt(ready ? "Ready" : "Not ready", () => api.post("/me/channels/email", body));
    if (answer) {
        const me = await attempt("Reading your state", () => api.get("/me"));
        if (me) state.me = me.user;
        renderMe();
    }
}

// ------------------------------------------------------------------------------ the list

function ordered() {
    return [...state.items.values()].sort((a, b) => (a.receivedAt < b.receivedAt ? -1 : a.receivedAt > b.receivedAt ? 1 : a.id < b.id ? -1 : 1));
}

function customer(m) {
    const e = m.email_object;
    return m.interactionSubType.startsWith("Outbound") ? `To: ${person(e.ToAddress) || "—"}` : person(e.FromAddress);
}

function option(m, selected, prefix) {
    return h("li", {
        role: "option", id: `${prefix}-${m.id}`, "aria-selected": String(selected), class: "item",
        dataset: {id: m.id, state: m.state}, onclick: () => {
            select(m.id);
            if (NARROW.matches) $("#reader").scrollIntoView({block: "start"});
        },
    },
    h("div", {class: "item-top"},
        h("span", {class: "item-subject"}, m.email_object.Subject || "(no subject)"),
        h("time", {class: "item-age", datetime: m.receivedAt, title: when(m.receivedAt)}, age(m.receivedAt))),
    h("div", {class: "item-bottom"},
        h("span", {class: "item-customer"}, customer(m)),
        h("span", {class: `badge state-${m.state}`}, m.state)));
}

function renderList() {
    const list = $("#mine");
    const items = ordered();
    replace(list, items.map((m) => option(m, m.id === state.selected, "mine")));
    $("#mine-count").textContent = items.length ? `(${items.length})` : "";
    $("#mine-empty").hidden = items.length > 0;
    if (state.selected && state.items.has(state.selected)) list.setAttribute("aria-activedescendant", `mine-${state.selected}`);
    else list.removeAttribute("aria-activedescendant");
    const invited = items.filter((m) => m.state === "Invited").length;
    document.title = `${invited ? `(${invited}) ` : ""}${state.me?.name || state.me?.id || ""} — Agent desktop`;
}

setInterval(() => {
    for (const time of document.querySelectorAll("time.item-age")) time.textContent = age(time.getAttribute("datetime"));
}, 30000);

function select(id) {
    state.selected = id;
    renderList();
    renderWorkbin();
    renderReader();
}

function move(step, items = ordered(), list = $("#mine"), prefix = "mine") {
    if (!items.length) return;
    const at = items.findIndex((m) => m.id === state.selected);
    const next = items[at < 0 ? (step > 0 ? 0 : items.length - 1) : Math.min(items.length - 1, Math.max(0, at + step))];
    select(next.id);
    list.focus();
    document.getElementById(`${prefix}-${next.id}`)?.scrollIntoView({block: "nearest"});
}

// ------------------------------------------------------------------------------ workbins

async function loadWorkbins() {
    const answer = await api.get("/me/workbins");
    state.workbins = answer.workbins;
    if (!state.workbins.some((w) => w.workbinName === state.workbin)) state.workbin = state.workbins[0]?.workbinName ?? null;
    const select = $("#workbin-select");
    replace(select, state.workbins.map((w) => h("option", {value: w.workbinName, selected: w.workbinName === state.workbin},
        `${w.workbinName}${w.shared ? " (shared)" : ""}`)));
    await loadWorkbin();
}

async function loadWorkbin() {
    if (!state.workbin) {
        state.workbinItems = [];
    } else {
        const answer = await api.get(`/me/workbins/${iid(state.workbin)}`);
        state.workbinItems = answer.interactions;
        for (const m of state.workbinItems) if (!state.items.has(m.id)) state.seen.set(m.id, m);
    }
    renderWorkbin();
    if (state.selected && state.seen.has(state.selected)) renderReader();
}

let workbinTimer = null;

function scheduleWorkbinRefresh() {
    clearTimeout(workbinTimer);
    workbinTimer = setTimeout(() => attempt("Reading the workbin", loadWorkbin), 150);
}

function renderWorkbin() {
    const list = $("#workbin");
    replace(list, state.workbinItems.map((m) => option(m, m.id === state.selected, "wb")));
    if (state.workbinItems.some((m) => m.id === state.selected)) list.setAttribute("aria-activedescendant", `wb-${state.selected}`);
    else list.removeAttribute("aria-activedescendant");
    $("#workbin-empty").hidden = state.workbinItems.length > 0;
}

// ------------------------------------------------------------------------------ operations

async function operate(id, operationName, fields = {}, what = operationName) {
    return attempt(what, () => api.operate(id, operationName, fields));
}

async function openNew(answer) {
    const id = answer?.replyInteractionId;
    if (!id) return;
    if (!message(id)) {
        const found = await attempt("Reading the draft", () => api.get(`/me/interactions/${iid(id)}`));
        if (found && !message(id)) interaction(found.interaction);
    }
    select(id);
    const body = $("#compose-body");
    if (body) {
        body.focus();
        body.setSelectionRange(0, 0);
        body.scrollTop = 0;
    }
}

async function accept(id) {
    const answer = await operate(id, "Accept");
    if (answer) {
        removeToast(id);
        select(id);
        $("#reader").focus();
    }
}

async function reject(id) {
    if (await operate(id, "Reject")) removeToast(id);
}

function currentEdit(m) {
    const e = m.email_object;
    return state.edits.get(m.id) ?? {
        to: e.ToAddress, cc: e.CCAddresses, bcc: e.BCCAddresses, subject: e.Subject, text: e.Text,
    };
}

async function send(id) {
    const m = message(id);
    if (!m) return;
    const edit = currentEdit(m);
    const answer = await operate(id, "Send", {
        email_object: {
            toAddress: addressList(edit.to), ccAddress: addressList(edit.cc), bccAddress: addressList(edit.bcc),
            subject: edit.subject, text: edit.text,
        },
    });
    if (answer) {
        state.edits.delete(id);
        saveEdits();
        const parent = m.parentInteractionId;
        select(parent && state.items.has(parent) ? parent : id);
        setStatus(`Sent "${edit.subject}" at ${clock()}`, "ok");
    }
}

async function transfer(id) {
    const targets = await attempt("Reading the transfer targets", () => api.get("/me/transfer-targets"));
    if (!targets) return;
    const none = [{value: "", label: "—", disabled: true}];
    const values = await ask("Transfer", [
        {name: "kind", label: "To", kind: "radio", options: [
            {value: "agentId", label: "an agent"}, {value: "skill", label: "a skill"}, {value: "queueName", label: "a queue"}]},
        {name: "agentId", label: "Agent", options: targets.agents.length ? targets.agents.map((a) => ({
            value: a.id, label: `${a.name} (${a.id})${a.ready ? " — Ready" : ""}`})) : none},
        {name: "skill", label: "Skill", options: targets.skills.length ? targets.skills.map((s) => ({value: s, label: s})) : none},
        {name: "queueName", label: "Queue", options: targets.queues.length ? targets.queues.map((q) => ({value: q, label: q})) : none},
    ], "Transfer");
    if (!values) return;
    const target = values[values.kind];
    if (!target) {
        showError(`Choose ${values.kind === "agentId" ? "an agent" : values.kind === "skill" ? "a skill" : "a queue"}`, "Transfer");
        return;
    }
    await operate(id, "Transfer", {[values.kind]: target});
}

async function placeInQueue(id) {
    const targets = await attempt("Reading the queues", () => api.get("/me/transfer-targets"));
    if (!targets) return;
    const values = await ask("Place in queue", [
        {name: "queueName", label: "Queue", options: targets.queues.map((q) => ({value: q, label: q}))}], "Place in queue");
    if (values) await operate(id, "PlaceInQueue", {queueName: values.queueName});
}

async function placeInWorkbin(id) {
    const answer = await attempt("Reading the workbins", () => api.get("/me/workbins"));
    if (!answer) return;
    const values = await ask("Place in workbin", [{name: "workbinName", label: "Workbin", options: answer.workbins.map((w) => ({
        value: w.workbinName, label: `${w.workbinName}${w.shared ? " (shared)" : ""}`}))}], "Place in workbin");
    if (values && await operate(id, "PlaceInWorkbin", {workbinName: values.workbinName})) {
        state.workbin = values.workbinName;
        await attempt("Reading the workbin", loadWorkbins);
    }
}

async function editComment(id) {
    const m = message(id);
    const values = await ask("Comment", [{name: "comment", label: "Comment (TheComment)", kind: "textarea", value: m.email_object.TheComment}], "Save");
    if (values) await operate(id, "UpdateProperties", {comment: values.comment}, "Edit comment");
}

async function linkAttachment(id) {
    const m = message(id);
    if (!m?.parentInteractionId) {
        showError("This draft has no original to attach from", "Attach from original");
        return;
    }
    const parent = await attempt("Reading the original", () => api.get(`/me/interactions/${iid(m.parentInteractionId)}`));
    if (!parent) return;
    const linked = new Set(m.email_object.attachments.map((a) => a.id));
    const free = parent.interaction.email_object.attachments.filter((a) => !linked.has(a.id));
    if (!free.length) {
        showError("Every attachment of the original is already attached", "Attach from original");
        return;
    }
    const values = await ask("Attach from the original", [{name: "attachmentId", label: "Attachment", options: free.map((a) => ({
        value: a.id, label: `${a.name} (${size(a.size)})`}))}], "Attach");
    if (values) await operate(id, "LinkAttachment", {attachmentId: values.attachmentId}, "Attach from original");
}

async function run(id, capability) {
    switch (capability) {
    case "Accept": return accept(id);
    case "Reject": return reject(id);
    case "Reply": return openNew(await operate(id, "Reply", {quoteOriginal: true}));
    case "ReplyAll": return openNew(await operate(id, "ReplyAll", {quoteOriginal: true}, "Reply all"));
    case "Forward": return openNew(await operate(id, "Forward"));
    case "Send": return send(id);
    case "Transfer": return transfer(id);
    case "PlaceInQueue": return placeInQueue(id);
    case "PlaceInWorkbin": return placeInWorkbin(id);
    case "UpdateProperties": return editComment(id);
    case "LinkAttachment": return linkAttachment(id);
    case "Cancel":
        if (await operate(id, "Cancel", {}, "Cancel draft")) {
            state.edits.delete(id);
            saveEdits();
        }
        return undefined;
    default: return operate(id, capability); // StopProcessing, Pull, and custom operations
    }
}

async function createEmail() {
    openNew(await attempt("New e-mail", () => api.post("/me/interactions", {operationName: "CreateEmail"})));
}

async function upload(id, files) {
    for (const file of files) {
        const answer = await attempt(`Attaching ${file.name}`, () => api.upload(id, file));
        const m = message(id);
        if (answer && m && !m.email_object.attachments.some((a) => a.id === answer.attachment.id)) {
            m.email_object.attachments.push(answer.attachment);
            renderReader();
        }
    }
}

async function removeAttachment(id, attachmentId) {
    if (await attempt("Removing the attachment", () => api.removeAttachment(id, attachmentId))) {
        const m = message(id);
        if (m) m.email_object.attachments = m.email_object.attachments.filter((a) => a.id !== attachmentId);
        renderReader();
    }
}

// ------------------------------------------------------------------------------ the reader

function renderReader() {
    const reader = $("#reader");
    const m = state.selected ? message(state.selected) : null;
    if (!m) {
        reader.dataset.id = "";
        const invited = [...state.items.values()].some((i) => i.state === "Invited");
        replace(reader, h("div", {class: "placeholder"},
            h("h2", null, invited ? "An e-mail is waiting for you" : state.items.size ? "Pick an interaction" : "Nothing to work on yet"),
            h("p", null, invited ? ["Accept it (", h("kbd", null, "a"), ") or reject it (", h("kbd", null, "x"), ") in the invitation."]
                : readiness().state === "Ready"
                    ? ["You are Ready: new mail pops up as an invitation. To try it, send a test mail: ",
                        h("code", null, ".venv/bin/interactions send-test-mail")]
                    : "Press Ready to receive mail, or write a new e-mail."),
            h("p", {class: "muted"}, "Press ", h("kbd", null, "?"), " for the keyboard shortcuts.")));
        return;
    }
    const mode = isDraft(m) ? "compose" : "read";
    const same = reader.dataset.id === m.id && reader.dataset.mode === mode;
    if (!same) {
        reader.dataset.id = m.id;
        reader.dataset.mode = mode;
        replace(reader,
            h("header", {class: "reader-head"}),
            h("div", {class: "toolbar", role: "toolbar", "aria-label": "Actions"}),
            h("div", {class: "notice"}),
            h("div", {class: "reader-body"}),
            h("section", {class: "attachments", "aria-label": "Attachments"}),
            h("section", {class: "properties", "aria-label": "Properties"}));
        if (mode === "compose") composeForm(m, $(".reader-body", reader));
        else body(m, $(".reader-body", reader));
    }
    head(m, $(".reader-head", reader));
    toolbar(m, $(".toolbar", reader));
    notice(m, $(".notice", reader));
    attachments(m, $(".attachments", reader), mode === "compose");
    properties(m, $(".properties", reader));
}

function head(m, el) {
    const e = m.email_object;
    const content = state.content.get(m.id);
    const rows = [["From", e.FromAddress], ["To", e.ToAddress], ["Cc", e.CCAddresses]];
    if (e.BCCAddresses) rows.push(["Bcc", e.BCCAddresses]);
    rows.push(["Date", when(content?.date || m.receivedAt)]);
    replace(el,
        h("h2", {id: "reader-title"}, e.Subject || "(no subject)"),
        h("div", {class: "reader-state"},
            h("span", {class: `badge state-${m.state}`}, m.state), " ",
            h("span", {class: "muted"}, `${m.interactionSubType}${m.currentQueue ? ` · queue ${m.currentQueue}` : ""}`)),
        isDraft(m) ? null : h("dl", {class: "meta"}, rows.filter(([, v]) => v).map(([k, v]) => [h("dt", null, k), h("dd", null, v)])));
    if (!content) loadContent(m.id);
}

function loadContent(id) {
    state.content.set(id, {pending: true});
    api.get(`/me/interactions/${iid(id)}/content`).then((answer) => {
        state.content.set(id, answer.content);
        if (state.selected === id) {
            const reader = $("#reader");
            head(message(id), $(".reader-head", reader));
            if (reader.dataset.mode === "read") body(message(id), $(".reader-body", reader));
        }
    }).catch((error) => {
        state.content.delete(id);
        if (error instanceof ApiError && error.status !== 404) showError(error.description, "Reading the mail");
    });
}

function toolbar(m, el) {
    // Exactly the interaction's capabilities: one button each, nothing else.
    replace(el, m.capabilities.map((capability) => h("button", {
        type: "button", class: capability === "Send" || capability === "Accept" ? "primary" : "",
        dataset: {capability}, "aria-keyshortcuts": KEYS[capability],
        onclick: () => run(m.id, capability),
    }, LABELS[capability] ?? capability)));
}

function notice(m, el) {
    const error = m.userData?.DeliveryError;
    replace(el, error ? h("p", {class: "error", role: "alert"}, `Delivery failed: ${error}`) : null);
    if (!isMine(m) && !m.capabilities.length) el.append(h("p", {class: "muted"}, `This interaction is ${m.state}: nothing more to do here.`));
}

function body(m, el) {
    const e = m.email_object;
    const content = state.content.get(m.id);
    const hasHtml = content && !content.pending ? content.html : Boolean(e.StructuredText);
    const parts = [];
    if (hasHtml && content && !content.pending) {
        const show = state.images.has(m.id);
        if (content.remoteImages && !show) {
            parts.push(h("p", {class: "images-note"},
                `${content.remoteImages} remote image${content.remoteImages > 1 ? "s are" : " is"} blocked to protect your privacy. `,
                h("button", {type: "button", class: "link", onclick: () => { state.images.add(m.id); body(m, el); }}, "Show images")));
        }
        const frame = h("iframe", {
            class: "mail-frame", title: "The message (HTML)", referrerpolicy: "no-referrer",
            sandbox: "allow-same-origin allow-popups allow-popups-to-escape-sandbox",
            src: `/api/v2/me/interactions/${iid(m.id)}/content/html${show ? "?images=show" : ""}`,
        });
        frame.addEventListener("load", () => {
            try {
                const height = frame.contentDocument.documentElement.getBoundingClientRect().height;
                frame.style.height = `${Math.min(4000, Math.max(120, Math.ceil(height) + 4))}px`;
            } catch {
                // not readable: keep the default height
            }
        });
        parts.push(frame);
        if (e.Text) {
            parts.push(h("details", {class: "text-part"}, h("summary", null, "Plain text"), h("pre", {class: "mail-text"}, e.Text)));
        }
    } else {
        parts.push(h("pre", {class: "mail-text"}, e.Text || (hasHtml ? "Loading…" : "(empty)")));
    }
    replace(el, parts);
}

function composeForm(m, el) {
    const edit = currentEdit(m);
    const field = (name, label, type = "text") => {
        const input = h("input", {id: `compose-${name}`, name, type, value: edit[name] ?? "", autocomplete: "off", spellcheck: name === "subject" ? "true" : "false"});
        input.addEventListener("input", () => remember(m, name, input.value));
        return h("div", {class: "compose-row"}, h("label", {for: `compose-${name}`}, label), input);
    };
    const text = h("textarea", {id: "compose-body", name: "text", rows: "12", value: edit.text ?? "", "aria-label": "Message", spellcheck: "true"});
    text.addEventListener("input", () => remember(m, "text", text.value));
    const files = h("input", {type: "file", id: "compose-files", multiple: true, class: "visually-hidden"});
    files.addEventListener("change", () => {
        const chosen = [...files.files];
        files.value = "";
        upload(m.id, chosen);
    });
    replace(el, h("form", {class: "compose", "aria-label": "Draft", onsubmit: (event) => event.preventDefault()},
        h("div", {class: "compose-row"}, h("span", {class: "label"}, "From"), h("span", {class: "from"}, m.email_object.FromAddress)),
        field("to", "To"), field("cc", "Cc"), field("bcc", "Bcc"), field("subject", "Subject"),
        text,
        h("div", {class: "compose-files"},
            h("label", {for: "compose-files", class: "button"}, "Attach files…"), files,
            h("span", {class: "muted"}, "Ctrl+Enter sends."))));
}

function remember(m, name, value) {
    const edit = {...currentEdit(m), [name]: value};
    state.edits.set(m.id, edit);
    saveEdits();
}

function attachments(m, el, editable) {
    const list = m.email_object.attachments;
    if (!list.length) {
        replace(el);
        return;
    }
    replace(el, h("h3", null, `Attachments (${list.length})`), h("ul", {class: "files"}, list.map((a) => h("li", null,
        h("a", {href: `/api/v2/me/interactions/${iid(m.id)}/attachments/${iid(a.id)}`, download: a.name}, a.name),
        h("span", {class: "muted"}, ` ${size(a.size)} · ${a.mimetype}${a.contentId ? " · inline" : ""}`),
        editable ? h("button", {type: "button", class: "link", "aria-label": `Remove ${a.name}`,
            onclick: () => removeAttachment(m.id, a.id)}, "Remove") : null))));
}

function properties(m, el) {
    const e = m.email_object;
    const data = Object.entries(m.userData || {});
    replace(el,
        h("h3", null, "Comment"),
        h("p", {class: e.TheComment ? "comment" : "muted"}, e.TheComment || "No comment."),
        h("h3", null, "User data"),
        data.length ? h("table", {class: "userdata"}, h("tbody", null, data.map(([k, v]) =>
            h("tr", null, h("th", {scope: "row"}, k), h("td", null, typeof v === "string" ? v : JSON.stringify(v))))))
            : h("p", {class: "muted"}, "None."));
}

// ------------------------------------------------------------------------------ keyboard

function selectedWith(capability) {
    const m = state.selected ? message(state.selected) : null;
    return m && m.capabilities.includes(capability) ? m : null;
}

function keyed(capability) {
    return () => {
        const m = selectedWith(capability);
        if (m) run(m.id, capability);
    };
}

bindKeys({
    accept: () => {
        const id = firstToast() ?? selectedWith("Accept")?.id;
        if (id) accept(id);
    },
    reject: () => {
        const id = firstToast() ?? selectedWith("Reject")?.id;
        if (id) reject(id);
    },
    reply: keyed("Reply"),
    replyAll: keyed("ReplyAll"),
    forward: keyed("Forward"),
    send: keyed("Send"),
    next: () => move(1),
    previous: () => move(-1),
    create: () => createEmail(),
});

// ------------------------------------------------------------------------------ start

function boot() {
    api.onUnauthorized = () => stop("Your session has ended: log in again.");
    loadEdits();
    $("#login-form").addEventListener("submit", login);
    $("#logout-btn").addEventListener("click", logout);
    $("#ready-btn").addEventListener("click", () => setReady(true));
    $("#notready-btn").addEventListener("click", () => setReady(false));
    $("#help-btn").addEventListener("click", toggleHelp);
    $("#new-email").addEventListener("click", createEmail);
    const sound = $("#sound");
    sound.checked = soundOn();
    sound.addEventListener("change", () => {
        setSound(sound.checked);
        chime();
    });
    $("#workbin-select").addEventListener("change", (event) => {
        state.workbin = event.target.value;
        attempt("Reading the workbin", loadWorkbin);
    });
    // The two listboxes: arrows move the selection, Enter goes to the interaction.
    for (const [list, prefix, items] of [[$("#mine"), "mine", ordered], [$("#workbin"), "wb", () => state.workbinItems]]) {
        list.addEventListener("keydown", (event) => {
            if (event.key === "ArrowDown" || event.key === "ArrowUp") {
                event.preventDefault();
                move(event.key === "ArrowDown" ? 1 : -1, items(), list, prefix);
            } else if (event.key === "Enter" && state.selected) {
                event.preventDefault();
                $("#reader").focus();
            }
        });
    }
    if (sessionStorage.getItem("desktop.agent")) {
        // A reload: the session cookie may still be valid.
        api.request("GET", "/me", {quiet: true}).then((answer) => start(answer.user)).catch(() => stop(""));
    } else {
        stop("");
    }
}

boot();
