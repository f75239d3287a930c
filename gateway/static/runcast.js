// runcast.js: subscribe to a runcast run from the browser (ES module, no dependencies).
//
//   import { subscribe } from "/runcast.js";
//   const sub = subscribe(runId, { token, on: { chunk: (e) => out.append(e.data.delta), complete: () => {} } });
//   sub.drop();   // cut the connection and resume from the last event id, as a network blip would
//   sub.close();  // stop for good
//
// SSE (default) uses the browser's EventSource, which resumes by itself with Last-Event-ID after a network error.
// The server ends the stream after the run's terminal event, so on `complete`/`error` we close the source: otherwise
// EventSource would reconnect forever. When the source fails for good (e.g. a 502 from a proxy), we probe the run's
// status to tell "retry later" (5xx, network) from "stop" (401/403/404), and resume with ?last_event_id=.
// WebSocket has no built-in resume: we reconnect with exponential backoff and send {"last_event_id"} first.

export const EVENT_TYPES = [
  "start", "chunk", "tool_call", "tool_result", "agent_switch", "metadata", "error", "complete",
];
export const TERMINAL_TYPES = new Set(["complete", "error"]);
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

/**
 * Follow a run. Options:
 *   token          the run's subscribe token (required)
 *   lastEventId    resume after this entry id (default: from the start)
 *   transport      "sse" (default) or "ws"
 *   on             callbacks by event type: start, chunk, tool_call, tool_result, agent_switch, metadata, error,
 *                  complete, reset, and `any` (called for every event). Each gets (event, id); `event` is the
 *                  StreamingEvent JSON ({type, data, timestamp, run_id, trace_id}); a reset gets ({type:"reset", data}).
 *   onStatus       (status, info) for connection changes: connecting, open, reconnecting, done, failed, closed
 *   maxRetries     failed attempts in a row before giving up (default 10); backoffMs / maxBackoffMs (250 / 8000)
 * Returns a handle: close(), drop(), and read-only lastEventId, resumeId, reconnects, duplicates, status, done.
 */
export function subscribe(runUrlOrId, options = {}) {
  const {
    token, lastEventId = null, transport = "sse", on = {}, onStatus = () => {},
    maxRetries = 10, backoffMs = 250, maxBackoffMs = 8000, baseUrl,
  } = options;
  if (!token) throw new Error("subscribe needs the run's token");
  if (transport !== "sse" && transport !== "ws") throw new Error(`unknown transport ${transport}`);
  const runUrl = runBaseUrl(runUrlOrId, baseUrl);

  const state = {
    lastEventId, resumeId: lastEventId, reconnects: 0, duplicates: 0, failures: 0,
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
    state.failures = 0;
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
    if (!conn) return;
    if (conn instanceof WebSocket) { conn.onclose = conn.onmessage = conn.onerror = null; conn.close(); }
    else conn.close();
  }

  function connectSse() {
    const source = new EventSource(urlFor("events"));
    state.connection = source;
    source.onopen = () => { if (state.connection === source) setStatus("open", { resumeId: state.resumeId }); };
    for (const type of [...EVENT_TYPES, "reset"]) {
      source.addEventListener(type, (message) => {
        if (state.connection !== source) return;
        const data = JSON.parse(message.data);
        // SSE carries a reset's payload bare (SPEC §6); give callbacks the same {type, data} shape as WebSocket.
        deliver(type === "reset" ? null : message.lastEventId || null, type === "reset" ? { type, data } : data);
      });
    }
    source.onerror = () => {
      if (state.connection !== source || state.finished) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser resumes by itself, sending Last-Event-ID = the last id it saw.
        state.reconnects += 1;
        state.resumeId = state.lastEventId;
        setStatus("reconnecting", { resumeId: state.resumeId, native: true });
        // A stream that ended cleanly without our terminal event may mean we resumed after the run's end.
        probeStatus().then((probe) => {
          if (state.connection !== source) return;
          if (probe.fatal) finish("failed", probe);
          else if (probe.ended) finish("done", { type: probe.status });
        });
      } else {
        state.connection = null;
        source.close();
        retryAfterFailure();
      }
    };
  }

  function connectWs() {
    const socket = new WebSocket(urlFor("ws", runUrl.startsWith("https:") ? "wss:" : "ws:"));
    state.connection = socket;
    socket.onopen = () => setStatus("open", { resumeId: state.resumeId });
    socket.onmessage = (message) => {
      const { id, event } = JSON.parse(message.data);
      deliver(id, event);
    };
    socket.onclose = (close) => {
      if (state.connection !== socket || state.finished) return;
      state.connection = null;
      if (close.code >= 4400 && close.code < 4500) finish("failed", { httpStatus: close.code - 4000, detail: close.reason });
      else if (close.code === 1000) checkEnded();
      else scheduleRetry();
    };
  }

  /** The server closed normally without our terminal event: the run ended before our resume point, or expired. */
  async function checkEnded() {
    const probe = await probeStatus();
    if (probe.fatal) finish("failed", probe);
    else if (probe.ended) finish("done", { type: probe.status });
    else scheduleRetry();
  }

  async function probeStatus() {
    try {
      const response = await fetch(`${runUrl}?token=${encodeURIComponent(token)}`);
      const body = await response.json().catch(() => ({}));
      if (response.status >= 400 && response.status < 500) {
        return { fatal: true, httpStatus: response.status, detail: body.detail };
      }
      const ended = ["completed", "failed", "cancelled"].includes(body.status)
        && body.last_event_id && state.lastEventId && compareIds(body.last_event_id, state.lastEventId) <= 0;
      return { fatal: false, ended, status: body.status };
    } catch {
      return { fatal: false, ended: false };
    }
  }

  async function retryAfterFailure() {
    const probe = await probeStatus();
    if (probe.fatal) finish("failed", probe);
    else if (probe.ended) finish("done", { type: probe.status });
    else scheduleRetry();
  }

  function scheduleRetry() {
    if (state.finished) return;
    state.failures += 1;
    if (state.failures > maxRetries) { finish("failed", { detail: `gave up after ${maxRetries} retries` }); return; }
    const ceiling = Math.min(maxBackoffMs, backoffMs * 2 ** (state.failures - 1));
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    setStatus("reconnecting", { resumeId: state.lastEventId, delayMs: Math.round(delay) });
    state.timer = setTimeout(open, delay);
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
