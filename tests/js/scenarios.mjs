// Drives gateway/static/runcast.js under Node (>= 18: fetch and web streams built in) against a real gateway, for
// tests/test_client_retry_js.py. Usage: node scenarios.mjs <scenario> <json args>. Prints one JSON line per retry
// ({"retry": ...}) as it happens, then one {"result": ...} line.
import { createRun, parseRetryAfter, retryDelay, subscribe, RETRY_DEFAULTS } from "../../gateway/static/runcast.js";

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs || "{}");
const out = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
const retries = [];
const onRetry = (failures, delayMs, info) => {
  const entry = { failures, delayMs, status: info.status, retryAfterMs: info.retryAfterMs };
  retries.push(entry);
  out({ retry: entry });
};

async function follow(options) {
  const events = [];
  const sub = subscribe(args.runId, {
    token: args.token, baseUrl: args.baseUrl, onRetry, on: { any: (event, id) => events.push({ id, type: event.type }) },
    ...options,
  });
  const done = await sub.done;
  return { done, events, retries, reconnects: sub.reconnects, duplicates: sub.duplicates };
}

const scenarios = {
  // retryDelay/parseRetryAfter samples, checked by the Python side
  policy() {
    const now = Date.UTC(2030, 0, 1);
    return {
      withRetryAfter: Array.from({ length: 300 }, () => retryDelay(1, 2000)),
      longOutage: Array.from({ length: 300 }, () => retryDelay(8, 1000)),
      backoff: [1, 2, 3, 5, 6, 12].map((n) => ({ n, samples: Array.from({ length: 200 }, () => retryDelay(n, null)) })),
      parsed: {
        seconds: parseRetryAfter("3", now),
        date: parseRetryAfter(new Date(now + 42000).toUTCString(), now),
        past: parseRetryAfter(new Date(now - 5000).toUTCString(), now),
        junk: [parseRetryAfter(null, now), parseRetryAfter("soon", now), parseRetryAfter("", now)],
      },
      defaults: RETRY_DEFAULTS,
    };
  },
  // creates until one met the rate limit; every request's Idempotency-Key is recorded
  async createLimited() {
    const sent = [];
    const fetch = (url, init) => { sent.push(init.headers["Idempotency-Key"]); return globalThis.fetch(url, init); };
    for (let call = 0; call < 4; call++) {
      const before = retries.length, from = sent.length;
      const run = await createRun("echo", "hi", { baseUrl: args.baseUrl, apiKey: args.apiKey, fetch, onRetry });
      if (retries.length > before) return { runId: run.run_id, keysOfThatCall: sent.slice(from), retries };
    }
    return { runId: null, retries };
  },
  async createRefused() {
    try {
      await createRun("echo", "hi", { baseUrl: args.baseUrl, maxRetries: 2, backoffMs: 50, onRetry });
      return { error: null };
    } catch (err) {
      return { error: { name: err.name, status: err.status, attempts: err.attempts, detail: err.detail }, retries };
    }
  },
  follow: () => follow({}),
  followQuick: () => follow({ maxRetries: 2, backoffMs: 50, maxBackoffMs: 200 }),
};

out({ result: await scenarios[scenario]() });
