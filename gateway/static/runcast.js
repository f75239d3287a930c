// runcast.js: create and follow runcast runs from the browser (ES module, no dependencies; also runs under Node >= 20).
//
//   import { createRun, subscribe } from "/runcast.js";
//   const run = await createRun("echo", "Hello");              // retried safely: one Idempotency-Key per call
//   const sub = subscribe(run.run_id, { token: run.token, on: { chunk: (e) => out.append(e.data.delta) } });
//   sub.drop();   // cut the connection and resume from the last event id, as a network blip would
//   sub.close();  // stop for good
//
// Retries follow the Python client's rules (runcast/shared/retry.py): 503, 429, other 5xx and refused or broken
// connections are retried with exponential backoff and equal jitter (uniform in [c/2, c], c = backoffMs doubling up to
// maxBackoffMs); a `Retry-After` (seconds or an HTTP-date) is a floor, spread over [r, 1.5 r] so that clients told the
// same value do not return together. After `maxRetries` failures in a row, or once the waits would pass `budgetMs`,
// createRun rejects with a RuncastError and subscribe ends with status "failed". Other 4xx are not retried.
//
// SSE is read with fetch (not EventSource, which hides the HTTP status and Retry-After and reconnects on a fixed
// timer): the resume point goes in `?last_event_id=`, the token in `?token=` (no custom headers, so no CORS preflight).
// The server ends the stream after the run's terminal event; a stream that ends or breaks before it is resumed: at once
// when it was delivering, else with backoff (and a status check first, to tell "resumed after the end" from a cut).
// WebSocket has no built-in resume either: we reconnect the same way and send {"last_event_id"} first.

export const EVENT_TYPES = [
  "start", "chunk", "tool_call", "tool_result", "agent_switch", "metadata", "error", "complete",
];
export const TERMINAL_TYPES = new Set(["complete", "error"]);
export const RETRY_DEFAULTS = Object.freeze({ maxRetries: 8, backoffMs: 200, maxBackoffMs: 5000, budgetMs: 120000 });
const RUN_ID = /^[0-9a-f]{32}$/;

/** Compare two stream entry ids ("<ms>-<seq>") as integers, never as strings. */
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

/** The run's base URL (…/v1/runs/<id>) from a run id, or from any of its URLs (events_url, ws_url, status_url). */
export function runBaseUrl(runUrlOrId, baseUrl = globalThis.location?.origin) {
  if (RUN_ID.test(runUrlOrId)) return new URL(`/v1/runs/${runUrlOrId}`, baseUrl).href;
  const url = new URL(runUrlOrId, baseUrl);
  url.protocol = url.protocol.replace(/^ws/, "http");
  url.search = "";
  url.pathname = url.pathname.replace(/\/(events|ws|result|cancel)\/?$/, "");
  if (!/\/v1\/runs\/[0-9a-f]{32}$/.test(url.pathname)) throw new Error(`not a runcast run URL or id: ${runUrlOrId}`);
  return url.href;
}

// -- retries ---------------------------------------------------------------------------------------------------------

/** An error answer from the gateway (or none: `status` null). `retryAfterMs` when it said when to come back. */
export class RuncastError extends Error {
  constructor(detail, { status = null, retryAfterMs = null, attempts = 1 } = {}) {
    super(detail);
    this.name = "RuncastError";
    this.detail = detail;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
    this.attempts = attempts;
  }
}

/** `Retry-After` in milliseconds from now: delta-seconds or an HTTP-date; null when absent or unreadable. */
export function parseRetryAfter(value, nowMs = Date.now()) {
  if (value == null || String(value).trim() === "") return null;
  const text = String(value).trim();
  const ms = /^-?\d+(\.\d+)?$/.test(text) ? Number(text) * 1000 : Date.parse(text) - nowMs;
  return Number.isFinite(ms) ? Math.max(ms, 0) : null;
}

/** The wait before the next attempt after `failures` failures in a row (see the header comment). */
export function retryDelay(failures, retryAfterMs, policy = RETRY_DEFAULTS, random = Math.random) {
  const ceiling = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** Math.max(failures - 1, 0));
  const backoff = ceiling / 2 + random() * (ceiling / 2);
  if (retryAfterMs == null || retryAfterMs <= 0) return backoff;
  return Math.max(backoff, retryAfterMs + random() * (retryAfterMs / 2));
}

const retryable = (status) => status === null || status === 429 || status >= 500;

/** Failures in a row and time waited in this outage; `next()` is the next wait, or null once the budget is spent. */
function retrier(policy, random) {
  return {
    failures: 0,
    waitedMs: 0,
    reset() { this.failures = 0; this.waitedMs = 0; },
    next(retryAfterMs) {
      this.failures += 1;
      if (this.failures > policy.maxRetries) return null;
      const delay = retryDelay(this.failures, retryAfterMs, policy, random);
      if (this.waitedMs + delay > policy.budgetMs) return null;
      this.waitedMs += delay;
      return delay;
    },
  };
}

function policyOf(options) {
  const policy = { ...RETRY_DEFAULTS };
  for (const name of Object.keys(RETRY_DEFAULTS)) if (options[name] != null) policy[name] = options[name];
  return policy;
}

async function detailOf(response) {
  const body = await response.json().catch(() => ({}));
  const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
  return detail || `${response.status} ${response.statusText}`.trim();
}

function newKey() {
  const crypto = globalThis.crypto;
  if (crypto?.randomUUID) return crypto.randomUUID(); // secure contexts (https, localhost) and Node
  const bytes = new Uint8Array(16);
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Create a run: POST /v1/runs, retried (see the header comment). Safe to retry because every attempt of one call
 * carries the same `Idempotency-Key` (pass `idempotencyKey` to make a create safe to repeat across page loads too):
 * the gateway answers a repeat with the run the first attempt made. Options: baseUrl, apiKey, metadata,
 * idempotencyKey, maxRetries, backoffMs, maxBackoffMs, budgetMs, onRetry(failures, delayMs, {status, retryAfterMs}),
 * fetch, random. Resolves to {run_id, token, events_url, ws_url, status_url}; rejects with a RuncastError.
 */
export async function createRun(agent, input, options = {}) {
  const { baseUrl = globalThis.location?.origin, apiKey, metadata, onRetry, random = Math.random } = options;
  const fetchFn = options.fetch ?? globalThis.fetch;
  const headers = { "content-type": "application/json", "Idempotency-Key": options.idempotencyKey ?? newKey() };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const body = JSON.stringify(metadata === undefined ? { agent, input } : { agent, input, metadata });
  const retries = retrier(policyOf(options), random);
  for (;;) {
    let status = null, retryAfterMs = null, detail;
    try {
      const response = await fetchFn(new URL("/v1/runs", baseUrl).href, { method: "POST", headers, body });
      if (response.ok) return await response.json();
      status = response.status;
      retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
      detail = await detailOf(response);
    } catch (err) {
      detail = `cannot reach the gateway at ${baseUrl}: ${err.message}`;
    }
    const attempts = retries.failures + 1;
    if (!retryable(status)) throw new RuncastError(detail, { status, attempts });
    const delay = retries.next(retryAfterMs);
    if (delay === null) {
      throw new RuncastError(`${detail} (gave up after ${attempts} attempts)`, { status, retryAfterMs, attempts });
    }
    onRetry?.(retries.failures, delay, { status, retryAfterMs, detail });
    await sleep(delay);
  }
}

// -- following a run -------------------------------------------------------------------------------------------------

/** Feed text; calls onEvent({event, data, id}) per dispatched event (the SSE spec's rules, minus `retry:`). */
function sseParser(onEvent) {
  let buffer = "", type = "", data = [], id = null;
  function line(text) {
    if (text === "") {
      if (data.length) onEvent({ event: type || "message", data: data.join("\n"), id });
      type = ""; data = []; id = null;
      return;
    }
    if (text.startsWith(":")) return; // a comment (the server's pings)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    lines.forEach(line);
  };
}

/**
 * Follow a run. Options:
 *   token          the run's subscribe token (required)
 *   lastEventId    resume after this entry id (default: from the start)
 *   transport      "sse" (default) or "ws"
 *   on             callbacks by event type: start, chunk, tool_call, tool_result, agent_switch, metadata, error,
 *                  complete, reset, and `any` (called for every event). Each gets (event, id); `event` is the
 *                  StreamingEvent JSON ({type, data, timestamp, run_id, trace_id}); a reset gets ({type:"reset", data}).
 *   onStatus       (status, info) for connection changes: connecting, open, reconnecting, done, failed, closed
 *   onRetry        (failures, delayMs, {status, retryAfterMs}) before each wait
 *   maxRetries, backoffMs, maxBackoffMs, budgetMs   the retry policy (RETRY_DEFAULTS); idleTimeoutMs (60000):
 *                  an SSE connection silent that long is dead (the server pings every 15 s)
 * Returns a handle: close(), drop(), and read-only lastEventId, resumeId, reconnects, duplicates, status, done.
 */
export function subscribe(runUrlOrId, options = {}) {
  const {
    token, lastEventId = null, transport = "sse", on = {}, onStatus = () => {}, onRetry, baseUrl,
    idleTimeoutMs = 60000, random = Math.random,
  } = options;
  if (!token) throw new Error("subscribe needs the run's token");
  if (transport !== "sse" && transport !== "ws") throw new Error(`unknown transport ${transport}`);
  const fetchFn = options.fetch ?? globalThis.fetch;
  const runUrl = runBaseUrl(runUrlOrId, baseUrl);
  const retries = retrier(policyOf(options), random);

  const state = {
    lastEventId, resumeId: lastEventId, reconnects: 0, duplicates: 0,
    status: "connecting", connection: null, timer: null, finished: false, attempts: 0,
  };
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });

  const setStatus = (status, info = {}) => { state.status = status; onStatus(status, info); };
  const finish = (status, info = {}) => {
    if (state.finished) return;
    state.finished = true;
    clearTimeout(state.timer);
    disconnect();
    setStatus(status, info);
    resolveDone({ status, lastEventId: state.lastEventId, ...info });
  };

  function call(type, event, id) {
    try {
      on[type]?.(event, id);
      on.any?.(event, id);
    } catch (err) {
      console.error(`runcast: the ${type} callback threw`, err);
    }
  }

  /** Deliver one event unless it was already delivered (resume must never repeat one). */
  function deliver(id, event) {
    if (state.finished) return;
    if (event.type === "reset") { call("reset", event, null); return; }
    if (id && state.lastEventId && compareIds(id, state.lastEventId) <= 0) { state.duplicates += 1; return; }
    if (id) state.lastEventId = id;
    retries.reset();
    call(event.type, event, id);
    if (TERMINAL_TYPES.has(event.type)) finish("done", { type: event.type });
  }

  function urlFor(path, scheme) {
    const url = new URL(`${runUrl}/${path}`);
    if (scheme) url.protocol = scheme;
    url.searchParams.set("token", token);
    if (state.lastEventId) url.searchParams.set("last_event_id", state.lastEventId);
    return url.href;
  }

  function disconnect() {
    const conn = state.connection;
    state.connection = null;
    conn?.close();
  }

  async function connectSse() {
    const controller = new AbortController();
    const conn = { close: () => controller.abort() };
    state.connection = conn;
    let idle = null, reader = null;
    const stillCurrent = () => state.connection === conn && !state.finished;
    const watch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), idleTimeoutMs);
      idle.unref?.(); // Node: a watchdog must not keep the process alive
    };
    let delivered = 0, broke = false;
    try {
      watch();
      const response = await fetchFn(urlFor("events"), {
        headers: { Accept: "text/event-stream" }, signal: controller.signal, cache: "no-store",
      });
      if (!stillCurrent()) return;
      if (!response.ok) {
        const info = {
          httpStatus: response.status, retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
          detail: await detailOf(response),
        };
        state.connection = null;
        if (retryable(response.status)) scheduleRetry(info);
        else finish("failed", info);
        return;
      }
      setStatus("open", { resumeId: state.resumeId });
      reader = response.body.getReader();
      const decoder = new TextDecoder();
      const feed = sseParser(({ event, data, id }) => {
        if (!stillCurrent()) return;
        const parsed = JSON.parse(data);
        // SSE carries a reset's payload bare (SPEC §6); give callbacks the same {type, data} shape as WebSocket.
        deliver(event === "reset" ? null : id || null, event === "reset" ? { type: event, data: parsed } : parsed);
        delivered += 1;
      });
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended || !stillCurrent()) break;
        watch();
        feed(decoder.decode(value, { stream: true }));
        if (!stillCurrent()) break; // the terminal event arrived, or close()/drop(): stop reading now
      }
    } catch {
      broke = true; // refused, reset, aborted by the idle watchdog
    } finally {
      clearTimeout(idle);
      reader?.cancel().catch(() => {});
    }
    if (!stillCurrent()) return;
    state.connection = null;
    if (delivered) reconnectNow(); // it was streaming: resume at once from the last id
    else if (broke) scheduleRetry({ detail: "connection failed" });
    else checkEnded(); // ended cleanly with nothing for us: maybe we resumed after the run's end
  }

  function connectWs() {
    const socket = new WebSocket(urlFor("ws", runUrl.startsWith("https:") ? "wss:" : "ws:"));
    const conn = { close: () => { socket.onclose = socket.onmessage = socket.onerror = null; socket.close(); } };
    state.connection = conn;
    let delivered = 0;
    socket.onopen = () => setStatus("open", { resumeId: state.resumeId });
    socket.onmessage = (message) => {
      const { id, event } = JSON.parse(message.data);
      deliver(id, event);
      delivered += 1;
    };
    socket.onclose = (close) => {
      if (state.connection !== conn || state.finished) return;
      state.connection = null;
      const info = { closeCode: close.code, detail: close.reason };
      if (close.code >= 4400 && close.code < 4500 && close.code !== 4429) {
        finish("failed", { httpStatus: close.code - 4000, detail: close.reason });
      } else if (close.code === 1000) checkEnded();
      else if (delivered) reconnectNow();
      // 1013 "try again later" (a viewer cap) and 4503 are the WebSocket's 503: wait at least a second, as
      // Retry-After: 1 says over HTTP
      else scheduleRetry(close.code === 1013 || close.code >= 4500 ? { ...info, retryAfterMs: 1000 } : info);
    };
  }

  /** The server closed normally without our terminal event: the run ended before our resume point, or expired. */
  async function checkEnded() {
    const probe = await probeStatus();
    if (probe.fatal) finish("failed", probe);
    else if (probe.ended) finish("done", { type: probe.status });
    else scheduleRetry(probe);
  }

  async function probeStatus() {
    try {
      const response = await fetchFn(`${runUrl}?token=${encodeURIComponent(token)}`);
      const body = await response.json().catch(() => ({}));
      if (!retryable(response.status) && response.status >= 400) {
        return { fatal: true, httpStatus: response.status, detail: body.detail };
      }
      const ended = ["completed", "failed", "cancelled"].includes(body.status)
        && body.last_event_id && state.lastEventId && compareIds(body.last_event_id, state.lastEventId) <= 0;
      return {
        fatal: false, ended, status: body.status,
        httpStatus: response.ok ? undefined : response.status,
        retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
      };
    } catch {
      return { fatal: false, ended: false };
    }
  }

  function scheduleRetry(info = {}) {
    if (state.finished) return;
    const delay = retries.next(info.retryAfterMs ?? null);
    const failures = retries.failures;
    if (delay === null) {
      const gaveUp = `gave up after ${failures} failed attempts${info.detail ? `: ${info.detail}` : ""}`;
      finish("failed", { ...info, fatal: undefined, detail: gaveUp });
      return;
    }
    onRetry?.(failures, delay, { status: info.httpStatus ?? null, retryAfterMs: info.retryAfterMs ?? null });
    setStatus("reconnecting", { resumeId: state.lastEventId, delayMs: Math.round(delay), httpStatus: info.httpStatus });
    state.timer = setTimeout(open, delay);
  }

  function reconnectNow() {
    if (state.finished) return;
    setStatus("reconnecting", { resumeId: state.lastEventId, delayMs: 0 });
    open();
  }

  function open() {
    if (state.finished) return;
    if (state.attempts++ > 0) state.reconnects += 1;
    state.resumeId = state.lastEventId;
    setStatus("connecting", { resumeId: state.resumeId });
    (transport === "ws" ? connectWs : connectSse)();
  }

  open();

  return {
    /** Stop following the run for good. */
    close() { finish("closed"); },
    /** Cut the connection now and resume from the last event id (what a network blip does, on purpose). */
    drop() {
      if (state.finished) return;
      clearTimeout(state.timer);
      disconnect();
      state.reconnects += 1;
      state.resumeId = state.lastEventId;
      setStatus("connecting", { resumeId: state.resumeId, dropped: true });
      (transport === "ws" ? connectWs : connectSse)();
    },
    get lastEventId() { return state.lastEventId; },
    get resumeId() { return state.resumeId; },
    get reconnects() { return state.reconnects; },
    get duplicates() { return state.duplicates; },
    get status() { return state.status; },
    done,
  };
}
