// Tickertape browser client: submit, attach with resume, poll fallback, cancel, remember.
// A plain ES module with no dependencies; see docs/ui.md for how to use it from another front end.

export const EVENT_TYPES = Object.freeze([
  "RunRequested", "RunCancelled", "RunStarted", "StepStarted", "StepProgress", "StepCompleted",
  "RunRetrying", "RunCompleted", "RunFailed", "RunCancellationConfirmed",
]);
export const TERMINAL = Object.freeze(new Set(["completed", "failed", "timeout", "cancelled"]));
export const ACTIVE = Object.freeze(new Set(["pending", "running"]));
const STORAGE_KEY = "tickertape.activeRuns";

/** Compares two Redis stream IDs ("ms-seq"); negative, zero or positive like a sort comparator. */
export function compareIds(a, b) {
  const [am, as = "0"] = String(a || "0").split("-");
  const [bm, bs = "0"] = String(b || "0").split("-");
  return Number(am) - Number(bm) || Number(as) - Number(bs);
}

export const isTerminal = (state) => Boolean(state && TERMINAL.has(state.status));

/** An API error with a message a person can act on (`friendly`) and its kind for code. */
export class TickertapeError extends Error {
  constructor({ status = 0, type = "", title = "", detail = "", field = null, retryAfter = null } = {}) {
    super(detail || title || `HTTP ${status}`);
    this.name = "TickertapeError";
    Object.assign(this, { status, type, title, detail, field, retryAfter });
    this.kind = status === 0 ? "unavailable"
      : status === 429 ? "rate_limited"
      : status === 422 || status === 400 ? "validation"
      : status === 404 ? "not_found"
      : status === 409 ? "conflict"
      : status === 401 || status === 403 ? "unauthorized"
      : status >= 500 ? "server" : "http";
  }

  get friendly() {
    switch (this.kind) {
      case "unavailable":
        return "Can't reach the Tickertape server. Check that it is running (make run) — we'll keep trying.";
      case "rate_limited":
        if (/rate-limited/.test(this.type || "")) {
          return `You are starting analyses faster than this server allows. Wait a moment and try again${this.retryAfter ? ` (in ${this.retryAfter} s)` : ""}.`;
        }
        return "You have too many analyses running at once. Wait for one to finish or cancel one, then try again.";
      case "validation":
        return `Please check ${this.field ? `the ${this.field}` : "the form"}: ${this.detail || this.title}`;
      case "not_found":
        return "That run doesn't exist (or is no longer kept).";
      case "conflict":
        return this.detail || "That run has already finished.";
      case "unauthorized":
        return "You are not signed in, or your token is not valid.";
      case "server":
        return "The server had a problem answering. Try again in a moment.";
      default:
        return this.detail || this.title || this.message;
    }
  }
}

function failingField(problem) {
  if (typeof problem.field === "string") return problem.field;
  const first = Array.isArray(problem.errors) ? problem.errors[0] : null;
  if (!first) return null;
  const where = first.field ?? first.loc ?? first.pointer ?? null;
  return Array.isArray(where) ? where.filter((p) => p !== "body").join(".") : where;
}

function randomKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Talks to one Tickertape gateway. Every option has a browser default. */
export class TickertapeClient {
  constructor({
    baseUrl = "",
    prefix = "/api/trading",
    token = null,
    storage = globalThis.localStorage,
    pollIntervalMs = 2000,
    sseFailuresBeforePolling = 3,
    fetchImpl = globalThis.fetch?.bind(globalThis),
    EventSourceImpl = globalThis.EventSource,
  } = {}) {
    Object.assign(this, { baseUrl, prefix, token, storage, pollIntervalMs, sseFailuresBeforePolling });
    this.fetch = fetchImpl;
    this.EventSource = EventSourceImpl;
  }

  url(path) {
    return `${this.baseUrl}${this.prefix}${path}`;
  }

  /** Where a run's event stream is read (a share link's client reads another address). */
  eventsUrl(runId, lastEventId) {
    const after = lastEventId ? `?after=${encodeURIComponent(lastEventId)}` : "";
    return this.url(`/runs/${encodeURIComponent(runId)}/events${after}`);
  }

  async request(method, path, { body, headers = {}, signal } = {}) {
    const init = { method, headers: { accept: "application/json", ...headers }, signal, credentials: "same-origin" };
    if (this.token) init.headers.authorization = `Bearer ${this.token}`;
    else if (method !== "GET" && this.#csrf()) init.headers["x-csrf-token"] = this.#csrf();
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetch(this.url(path), init);
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new TickertapeError({ status: 0, detail: String(err?.message || err) });
    }
    if (!response.ok) throw await this.#problem(response);
    if (response.status === 204) return null;
    return response.json();
  }

  async #problem(response) {
    let problem = {};
    try { problem = await response.json(); } catch { /* not JSON: keep the status alone */ }
    return new TickertapeError({
      status: response.status,
      type: problem.type || "",
      title: problem.title || response.statusText,
      detail: problem.detail || "",
      field: failingField(problem),
      retryAfter: response.headers.get("retry-after"),
    });
  }

  #csrf() {
    if (this.csrfToken) return this.csrfToken;
    const match = /(?:^|;\s*)tt_csrf=([^;]+)/.exec(globalThis.document?.cookie || "");
    return match ? decodeURIComponent(match[1]) : null;
  }

  /** Trade an API token for a session cookie (EventSource cannot send an Authorization header). */
  async signIn(token) {
    const session = await this.request("POST", "/session", { body: { token } });
    this.csrfToken = session?.csrfToken || null;
    return session;
  }

  models() { return this.request("GET", "/models"); }
  analysts() { return this.request("GET", "/analysts"); }
  /** Where runs get their prices unless a request names a provider: `{provider, demo}`. */
  dataSource() { return this.request("GET", "/data"); }
  get(runId) { return this.request("GET", `/runs/${encodeURIComponent(runId)}`); }
  progress(runId) { return this.request("GET", `/progress/${encodeURIComponent(runId)}`); }

  /** Start a run. The same `idempotencyKey` (default: a fresh one) returns the same run. */
  async submit(request, { idempotencyKey = randomKey() } = {}) {
    const accepted = await this.request("POST", "/runs", { body: request, headers: { "idempotency-key": idempotencyKey } });
    this.remember({ ticker: String(request.symbol).trim().toUpperCase(), runId: accepted.runId, lastEventId: null });
    return accepted;
  }

  /** The caller's runs, newest first: `{runs, nextCursor}`. `status` may be `active`; `archived`
   * lists those moved past the history horizon instead. */
  async list({ symbol, status, limit = 20, cursor, archived = false } = {}) {
    const query = new URLSearchParams();
    if (archived) query.set("archived", "true");
    if (symbol) query.set("symbol", symbol);
    if (status) query.set("status", status);
    if (limit) query.set("limit", String(limit));
    if (cursor) query.set("cursor", cursor);
    const page = await this.request("GET", `/runs?${query}`);
    const runs = Array.isArray(page) ? page : page.runs || page.items || [];
    return { runs, nextCursor: page.nextCursor ?? page.next_cursor ?? null };
  }

  /** Ask to cancel; a run that already finished answers a `conflict` error. */
  cancel(runId) { return this.request("DELETE", `/runs/${encodeURIComponent(runId)}`); }

  // --- remembering the active run of each ticker (localStorage: {ticker, runId, lastEventId}) ---

  remembered() {
    try {
      const list = JSON.parse(this.storage?.getItem(STORAGE_KEY) || "[]");
      return Array.isArray(list) ? list.filter((r) => r && r.ticker && r.runId) : [];
    } catch {
      return [];
    }
  }

  recall(ticker) {
    return this.remembered().find((r) => r.ticker === ticker) || null;
  }

  remember({ ticker, runId, lastEventId = null }) {
    if (!this.storage || !ticker || !runId) return;
    const others = this.remembered().filter((r) => r.ticker !== ticker && r.runId !== runId);
    const mine = this.remembered().find((r) => r.runId === runId);
    const last = mine && compareIds(mine.lastEventId, lastEventId) > 0 ? mine.lastEventId : lastEventId;
    this.storage.setItem(STORAGE_KEY, JSON.stringify([...others, { ticker, runId, lastEventId: last }]));
  }

  forget(runId) {
    if (!this.storage) return;
    this.storage.setItem(STORAGE_KEY, JSON.stringify(this.remembered().filter((r) => r.runId !== runId)));
  }

  /**
   * The active run of a ticker, if any: what this browser remembers, checked against the server,
   * else the server's newest active run of that ticker. `{runId, lastEventId, state}` or null.
   */
  async findActive(ticker) {
    const memory = this.recall(ticker);
    if (memory) {
      try {
        const state = await this.get(memory.runId);
        if (!isTerminal(state)) return { runId: memory.runId, lastEventId: memory.lastEventId, state };
      } catch (err) {
        if (err.kind !== "not_found") throw err;
      }
      this.forget(memory.runId);
    }
    const { runs } = await this.list({ symbol: ticker, status: "active", limit: 1 });
    if (!runs.length) return null;
    return { runId: runs[0].runId, lastEventId: null, state: runs[0] };
  }

  /**
   * Follow a run live from `lastEventId` (its whole stream when null). Handlers:
   * `onEvent(event, state, id)`, `onState(state)` (every change, polling included),
   * `onConnection(mode)` with mode `connecting|live|reconnecting|polling|offline|ended`,
   * `onEnd(state)`. Returns an Attachment; `close()` stops following (the run goes on).
   */
  attach(runId, handlers = {}, { lastEventId = null, ticker = null } = {}) {
    const attachment = new Attachment(this, runId, handlers, lastEventId, ticker);
    attachment.start();
    return attachment;
  }
}

/** One live view of one run: SSE with manual resume, falling back to polling `/progress`. */
export class Attachment {
  constructor(client, runId, handlers, lastEventId, ticker) {
    Object.assign(this, { client, runId, handlers, lastEventId, ticker });
    this.state = null;
    this.received = [];
    this.mode = "connecting";
    this.failures = 0;
    this.closed = false;
    this.source = null;
    this.timers = new Set();
  }

  start() {
    this.#setMode("connecting");
    this.#openSse();
  }

  close() {
    this.closed = true;
    this.source?.close();
    this.source = null;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  #later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); if (!this.closed) fn(); }, ms);
    this.timers.add(t);
  }

  #setMode(mode) {
    if (this.mode === mode) return;
    this.mode = mode;
    this.handlers.onConnection?.(mode);
  }

  #openSse() {
    if (this.closed || this.source) return;
    if (!this.client.EventSource) return this.#startPolling();
    const source = new this.client.EventSource(this.client.eventsUrl(this.runId, this.lastEventId), { withCredentials: true });
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.polling = false;
      this.#setMode("live");
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, (e) => this.#onMessage(type, e));
    source.addEventListener("message", (e) => this.#onMessage("message", e));
    source.addEventListener("reset", (e) => this.#onReset(e));
    source.addEventListener("end", (e) => this.#onEnd(e));
    source.addEventListener("revoked", () => this.#revoked()); // a share link's stream, ended by its owner
    source.onerror = () => this.#onSseError(source);
  }

  #onMessage(type, e) {
    if (e.lastEventId && this.lastEventId && compareIds(e.lastEventId, this.lastEventId) <= 0) return;
    let data;
    try { data = JSON.parse(e.data); } catch { return; }
    if (e.lastEventId) {
      this.lastEventId = e.lastEventId;
      this.received.push(e.lastEventId);
    }
    if (data.state) this.#setState(data.state);
    else if (data.delta && this.state) this.#setState(mergeDelta(this.state, data.delta, e.lastEventId));
    if (this.ticker || this.state?.symbol) {
      this.client.remember({ ticker: this.ticker || this.state.symbol, runId: this.runId, lastEventId: this.lastEventId });
    }
    this.handlers.onEvent?.(data.event || { type }, this.state, e.lastEventId);
  }

  #onReset(e) {
    try {
      const data = JSON.parse(e.data || "{}");
      if (data.state) this.#setState(data.state);
    } catch { /* a reset without a body: the next messages carry the state */ }
  }

  #onEnd() {
    this.source?.close();
    this.source = null;
    if (isTerminal(this.state) && !this.state.polled) return this.#finish(this.state);
    // The stream ended without the run's terminal state (it expired, or we were polling): ask for the run.
    this.#finishFromServer();
  }

  #revoked() {
    this.close();
    this.#setMode("ended");
    this.handlers.onRevoked?.();
  }

  #finishFromServer() {
    this.client.get(this.runId).then((state) => this.#finish(state), () => this.#finish(this.state));
  }

  #onSseError(source) {
    source.close();
    if (this.source === source) this.source = null;
    if (this.closed) return;
    if (isTerminal(this.state)) return this.#finishFromServer();
    this.failures += 1;
    if (this.failures >= this.client.sseFailuresBeforePolling) {
      this.#startPolling();
      this.#later(() => this.#openSse(), 5000);
      return;
    }
    this.#setMode("reconnecting");
    this.#later(() => this.#openSse(), Math.min(500 * 2 ** this.failures, 4000));
  }

  #startPolling() {
    if (this.polling || this.closed) return;
    this.polling = true;
    this.#poll();
  }

  async #poll() {
    if (!this.polling || this.closed || this.mode === "live") {
      this.polling = false;
      return;
    }
    try {
      const progress = await this.client.progress(this.runId);
      if (this.mode === "live" || this.closed) return;
      this.#setMode("polling");
      this.#setState(mergeProgress(this.state, progress));
      if (isTerminal(this.state)) {
        // Ended while we were polling: one last SSE replay delivers the events we have not seen,
        // then its `end` (or, if SSE still fails, the run itself) finishes the attachment.
        this.polling = false;
        if (!this.client.EventSource) return this.#finishFromServer();
        this.#openSse();
        return;
      }
    } catch (err) {
      if (err.kind === "not_found") return this.#finish(this.state);
      this.#setMode("offline");
    }
    this.#later(() => this.#poll(), this.client.pollIntervalMs);
  }

  #setState(state) {
    this.state = { ...state, receivedAt: Date.now() };
    this.handlers.onState?.(this.state);
  }

  #finish(state) {
    if (this.closed) return;
    this.close();
    if (state) this.state = { ...state, receivedAt: Date.now() };
    if (isTerminal(this.state)) this.client.forget(this.runId);
    this.#setMode("ended");
    this.handlers.onEnd?.(this.state);
  }
}

/**
 * A stream message's `delta` folded into the state before it (see docs/api.md, "Deltas"): the
 * top-level fields it names replace the old ones, each step it names gets the fields it names,
 * and `lastEventId` is the message's own id.
 */
export function mergeDelta(previous, delta, lastEventId) {
  const { steps: changed, ...fields } = delta;
  const merged = { ...previous, ...fields, lastEventId: lastEventId || previous.lastEventId };
  if (Array.isArray(changed)) {
    const byName = new Map(changed.map((s) => [s.name, s]));
    merged.steps = (previous.steps || []).map((s) => (byName.has(s.name) ? { ...s, ...byName.get(s.name) } : s));
  }
  return merged;
}

/** The polling blueprint's `/progress` answer folded into the last full state we had. */
export function mergeProgress(previous, progress) {
  const known = new Map((previous?.steps || []).map((s) => [s.name, s]));
  const steps = (progress.steps || []).map((s) => ({
    ...(known.get(s.name) || { name: s.name, label: s.name }),
    status: s.status,
    progress: (s.progress ?? 0) / 100,
  }));
  return {
    ...(previous || {}),
    runId: progress.runId,
    status: progress.status,
    progress: progress.progress,
    currentStep: progress.currentStep,
    etaS: progress.estimatedTimeRemaining,
    steps: steps.length ? steps : previous?.steps || [],
    result: progress.result ?? previous?.result ?? null,
    polled: true,
  };
}
