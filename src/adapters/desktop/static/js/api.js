// The HTTP API (docs/http.md) as the page uses it: Basic credentials once (the login), then the
// session cookie; the CSRF token the server hands out on GETs is sent back on every change.
// Every failure becomes an ApiError carrying the server's errorDescription.

export class ApiError extends Error {
    constructor(status, description) {
        super(description);
        this.status = status;
        this.description = description;
    }
}

function basic(agent, password) {
    const bytes = new TextEncoder().encode(`${agent}:${password}`);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return "Basic " + btoa(binary);
}

export class Api {
    constructor(base = "/api/v2") {
        this.base = base;
        this.csrf = null;
        this.onUnauthorized = null;
    }

    /** Logs in with Basic credentials; the answer sets the session cookie. */
    login(agent, password) {
        return this.request("GET", "/me", {headers: {Authorization: basic(agent, password)}, quiet: true});
    }

    get(path) {
        return this.request("GET", path);
    }

    post(path, body) {
        return this.request("POST", path, {body});
    }

    operate(id, operationName, fields = {}) {
        return this.post(`/me/interactions/${encodeURIComponent(id)}`, {operationName, ...fields});
    }

    upload(id, file) {
        const form = new FormData();
        form.append("attachment", file, file.name);
        return this.request("POST", `/me/interactions/${encodeURIComponent(id)}/attachments`, {form});
    }

    removeAttachment(id, attachmentId) {
        return this.request(
            "DELETE",
            `/me/interactions/${encodeURIComponent(id)}/attachments/${encodeURIComponent(attachmentId)}`,
        );
    }

    async request(method, path, {body, form, headers = {}, quiet = false, retried = false} = {}) {
        // X-Requested-With: a 401 then comes without a Basic challenge (no browser dialog).
        const sent = {Accept: "application/json", "X-Requested-With": "XMLHttpRequest", ...headers};
        let payload = form;
        if (body !== undefined) {
            sent["Content-Type"] = "application/json";
            payload = JSON.stringify(body);
        }
        if (method !== "GET" && this.csrf) sent["X-CSRF-TOKEN"] = this.csrf;
        let response;
        try {
            response = await fetch(this.base + path, {
                method, headers: sent, body: payload, credentials: "same-origin", cache: "no-store",
            });
        } catch (error) {
            throw new ApiError(0, `The server cannot be reached (${error.message})`);
        }
        const header = response.headers.get("X-CSRF-HEADER");
        if (header && response.headers.get(header)) this.csrf = response.headers.get(header);
        let data = null;
        try {
            data = await response.json();
        } catch {
            data = null;
        }
        if (response.ok && data?.status !== "error") return data ?? {status: "ok"};
        const description = data?.errorDescription
            ?? (data?.detail !== undefined ? JSON.stringify(data.detail) : `HTTP ${response.status} ${response.statusText}`);
        if (response.status === 403 && /csrf/i.test(description) && !retried) {
            await this.get("/me"); // a fresh token, then once more
            return this.request(method, path, {body, form, headers, quiet, retried: true});
        }
        if (response.status === 401 && !quiet && this.onUnauthorized) this.onUnauthorized(description);
        throw new ApiError(response.status, description);
    }
}
