// socketshark client (work in progress, issue 15). Zero runtime dependencies.
// Replies are matched to requests in order: the server runs a session's commands one at a
// time and answers each before the next (SPEC R-ORD-1), so a FIFO of pending requests keyed
// by event (and subscription) suffices; the protocol has no request ids.
export class SocketSharkError extends Error {
    constructor(message, code, reply) {
        super(message);
        this.code = code;
        this.reply = reply;
    }
}
export function closeError(code, reason) {
    const text = {
        1001: "server going away",
        1008: "policy violation (slow consumer)",
        1009: "message too big",
    };
    return new SocketSharkError(text[code] ?? `closed (${code}) ${reason}`, code);
}
export class Subscription {
    constructor(client, name, opts) {
        this.client = client;
        this.name = name;
        this.opts = opts;
        this.active = false;
    }
    extra() {
        const out = {};
        for (const [k, v] of Object.entries(this.opts))
            if (typeof v !== "function")
                out[k] = v;
        return out;
    }
    send(data) { return this.client.send(this.name, data); }
    unsubscribe() { return this.client.unsubscribe(this.name); }
}
export class SocketShark {
    constructor(url, options = {}) {
        this.url = url;
        this.options = options;
        this.pending = [];
        this.queue = [];
        this.subs = new Map();
        this.attempts = 0;
        this.closed = false;
        this.ctor = options.WebSocket ?? globalThis.WebSocket;
        this.connect();
    }
    connect() {
        const ws = new this.ctor(this.url);
        this.ws = ws;
        // An attempt can hang in CONNECTING (seen with Node's WebSocket while the server restarts,
        // and on networks that drop packets): give up on it and try again.
        const stuck = setTimeout(() => {
            if (ws.readyState !== 0)
                return;
            ws.onopen = ws.onmessage = ws.onclose = null;
            try {
                ws.close();
            }
            catch { /* not open yet */ }
            this.retry();
        }, this.options.connectTimeout ?? 5000);
        ws.onopen = async () => {
            clearTimeout(stuck);
            this.attempts = 0;
            try {
                if (this.authArgs)
                    await this.auth(this.authArgs);
                for (const s of this.subs.values())
                    await this.subscribeRaw(s);
            }
            catch (e) { /* surfaced per subscription */ }
            for (const q of this.queue.splice(0))
                ws.send(q);
        };
        ws.onmessage = (ev) => this.onFrame(JSON.parse(String(ev.data)));
        ws.onclose = (ev) => {
            clearTimeout(stuck);
            const err = closeError(ev.code, ev.reason);
            for (const p of this.pending.splice(0))
                p.reject(err);
            for (const s of this.subs.values())
                s.active = false;
            this.onClose?.(err);
            this.retry();
        };
    }
    /** The next connection attempt, after an exponential backoff with full jitter. */
    retry() {
        if (this.closed)
            return;
        const ceil = Math.min(this.options.maxDelay ?? 30000, (this.options.minDelay ?? 500) * 2 ** this.attempts++);
        setTimeout(() => this.connect(), Math.random() * ceil);
    }
    onFrame(f) {
        if (f.event === "message" && f.status === undefined) {
            const s = this.subs.get(f.subscription);
            if (s && typeof f.offset === "number")
                s.position = { offset: f.offset, epoch: f.epoch };
            s?.opts.onMessage?.(f.data, f);
            return;
        }
        if (f.event === "recover" && f.status === undefined) {
            // The server lost messages of this channel for good (after a broker outage).
            const s = this.subs.get(f.subscription);
            if (s && typeof f.offset === "number")
                s.position = { offset: f.offset, epoch: f.epoch };
            s?.opts.onRecover?.(false, f);
            return;
        }
        if (f.event === "unsubscribe" && f.status === undefined) {
            const s = this.subs.get(f.subscription);
            this.subs.delete(f.subscription);
            s?.opts.onUnsubscribe?.(f);
            return;
        }
        const ev = f.event === "pong" ? "ping" : f.event;
        const i = this.pending.findIndex((p) => (ev === undefined || p.event === ev) &&
            (p.subscription === undefined || f.subscription === undefined || p.subscription === f.subscription));
        if (i < 0)
            return;
        const [p] = this.pending.splice(i, 1);
        if (f.status === "error")
            p.reject(new SocketSharkError(f.error, undefined, f));
        else
            p.resolve(f);
    }
    request(msg) {
        return new Promise((resolve, reject) => {
            if (!this.ws || this.ws.readyState !== 1)
                return reject(new SocketSharkError("not connected"));
            this.pending.push({ event: msg.event, subscription: msg.subscription, resolve, reject });
            this.ws.send(JSON.stringify(msg));
        });
    }
    /** `{jwt}` sends method "jwt" (`[authentication.jwt]` on the server). */
    auth(a) {
        this.authArgs = a;
        return a.jwt !== undefined
            ? this.request({ event: "auth", method: "jwt", token: a.jwt })
            : this.request({ event: "auth", method: "ticket", ticket: a.ticket });
    }
    async subscribeRaw(s) {
        try {
            const recover = s.position ? { recover: s.position } : {};
            const r = await this.request({ event: "subscribe", subscription: s.name, ...s.extra(), ...recover });
            s.active = true;
            if (typeof r.offset === "number")
                s.position = { offset: r.offset, epoch: r.epoch };
            if (typeof r.recovered === "boolean")
                s.opts.onRecover?.(r.recovered, r);
            return r;
        }
        catch (e) {
            s.opts.onError?.(e);
            throw e;
        }
    }
    async subscribe(name, opts = {}) {
        const s = new Subscription(this, name, opts);
        this.subs.set(name, s);
        await this.subscribeRaw(s);
        return s;
    }
    send(name, data) {
        const msg = JSON.stringify({ event: "message", subscription: name, data });
        if (this.ws?.readyState === 1)
            this.ws.send(msg);
        else if ((this.options.offline ?? "queue") === "queue")
            this.queue.push(msg);
        else if (this.options.offline === "error")
            throw new SocketSharkError("not connected");
    }
    unsubscribe(name) {
        this.subs.delete(name);
        return this.request({ event: "unsubscribe", subscription: name });
    }
    ping(data = "") { return this.request({ event: "ping", data }); }
    close() { this.closed = true; this.ws?.close(1000); }
}
