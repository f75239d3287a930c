// The demo page: start a run (or open a shared one from #run=<id>&token=<t>) and render its events as they stream.
import { subscribe } from "/runcast.js";
import { conversation, loadAgents, recordTurn } from "/static/composer.js";

const $ = (id) => document.getElementById(id);
const TERMINAL_STATUS = { complete: "completed" };
let current = null; // { runId, token, sub, agent }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function setStatus(status) {
  $("status").textContent = status;
  $("status").dataset.status = status;
  const live = status === "queued" || status === "running";
  $("cancel").disabled = !live;
  $("drop").disabled = !live;
}

function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

function apiHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Renders one run's events into the transcript and the event log. */
class RunRenderer {
  constructor(agent) {
    this.agent = agent;
    this.block = null;
    this.tools = new Map();
    this.events = 0;
    this.text = "";
    $("transcript").replaceChildren();
    $("event-log").replaceChildren();
    $("summary").hidden = true;
  }

  textBlock() {
    if (!this.block) {
      this.block = el("div", "msg streaming");
      this.block.append(el("div", "msg-agent", this.agent || "agent"), el("div", "msg-text"));
      $("transcript").append(this.block);
    }
    return this.block.querySelector(".msg-text");
  }

  endBlock() {
    this.block?.classList.remove("streaming");
    this.block = null;
  }

  log(id, type, brief) {
    const item = el("li");
    item.append(el("span", "id", id || "—"), el("span", `type ${type}`, type), el("span", "brief", brief || ""));
    const log = $("event-log");
    log.append(item);
    log.scrollTop = log.scrollHeight; // scroll the log only, never the page
  }

  note(message) {
    const item = el("li");
    item.append(el("span", "note", message));
    $("event-log").append(item);
  }

  handle(event, id) {
    const data = event.data || {};
    this.events += 1;
    $("event-count").textContent = this.events;
    if (current?.sub) $("reconnects").dataset.duplicates = current.sub.duplicates;
    if (id) $("last-id").textContent = id;
    switch (event.type) {
      case "start":
        this.agent = data.agent_name || this.agent;
        $("run-agent").textContent = this.agent;
        setStatus("running");
        this.log(id, "start", `${data.agent_name} · ${data.model_name}`);
        return;
      case "chunk":
        this.text += data.delta;
        this.textBlock().append(document.createTextNode(data.delta));
        if ($("status").dataset.status === "queued") setStatus("running");
        this.log(id, "chunk", JSON.stringify(data.delta));
        return;
      case "tool_call": {
        this.endBlock();
        const card = el("div", "tool-card");
        const head = el("header");
        head.append(el("span", "tool-badge", "tool"), el("span", "tool-name", data.tool_name), el("span", "tool-state", "running…"));
        card.append(head, el("pre", "tool-args", pretty(data.arguments)));
        $("transcript").append(card);
        this.tools.set(data.call_id, card);
        this.log(id, "tool_call", `${data.tool_name}(${JSON.stringify(data.arguments)})`);
        return;
      }
      case "tool_result": {
        const card = this.tools.get(data.call_id);
        const ok = !data.status || ["completed", "success"].includes(data.status);
        if (card) {
          card.classList.add(ok ? "done" : "failed");
          const took = typeof data.execution_time_ms === "number" ? ` · ${data.execution_time_ms.toFixed(1)} ms` : "";
          card.querySelector(".tool-state").textContent = `${data.status || "completed"}${took}`;
          card.append(el("pre", "tool-result", `→ ${pretty(data.result)}`));
        }
        this.log(id, "tool_result", `${data.tool_name} → ${JSON.stringify(data.result)}`);
        return;
      }
      case "agent_switch": {
        this.endBlock();
        const from = data.from_agent || data.previous_agent || data.from || "?";
        const to = data.to_agent || data.agent_name || data.new_agent || data.to || "?";
        this.agent = to;
        $("run-agent").textContent = to;
        $("transcript").append(el("div", "switch", `handoff: ${from} → ${to}`));
        this.log(id, "agent_switch", `${from} → ${to}`);
        return;
      }
      case "metadata":
        this.log(id, "metadata", `tokens ${data.total_tokens ?? "?"} · ${data.execution_time_ms ?? "?"} ms`);
        return;
      case "reset":
        this.endBlock();
        $("transcript").append(el("div", "notice",
          `Events after ${data.requested} were trimmed from the log; continuing from ${data.first_available}.`));
        this.log(null, "reset", `${data.requested} → ${data.first_available}`);
        return;
      case "error":
        this.endBlock();
        $("transcript").append(el("div", "notice error", `${data.error_type}: ${data.detail}`));
        setStatus(data.error_type === "cancelled" ? "cancelled" : "failed");
        this.log(id, "error", `${data.error_type}: ${data.detail}`);
        return;
      case "complete":
        this.endBlock();
        setStatus(TERMINAL_STATUS.complete);
        this.log(id, "complete", "");
        return;
      default:
        this.log(id, event.type, JSON.stringify(data));
    }
  }
}

async function showSummary(runId, token, renderer, turn) {
  const response = await fetch(`/v1/runs/${runId}/result?token=${encodeURIComponent(token)}`);
  if (!response.ok) return;
  const result = await response.json();
  // a completed run of this page's conversation: its question and answer are now part of the conversation
  if (turn && turn.conversationId === conversation.id && !result.error) recordTurn(turn.agent, turn.input, result.content);
  const meta = result.metadata || {};
  const facts = [
    ["characters", result.content.length],
    ["tool calls", result.tool_calls.length],
    ["tokens", meta.total_tokens ?? "–"],
    ["agent time", meta.execution_time_ms != null ? `${Math.round(meta.execution_time_ms)} ms` : "–"],
    ["outcome", result.error ? `${result.error.error_type}` : "complete"],
  ];
  $("summary-stats").replaceChildren(...facts.map(([k, v]) => {
    const item = el("div");
    item.append(el("dt", "", k), el("dd", "", String(v)));
    return item;
  }));
  const same = result.content === renderer.text;
  $("summary-check").className = `check ${same ? "ok" : "bad"}`;
  $("summary-check").textContent = same
    ? "✓ The streamed text is identical to the stored result."
    : "✗ The streamed text differs from the stored result.";
  $("summary").hidden = false;
}

function shareUrl(runId, token) {
  return `${location.origin}/#run=${runId}&token=${encodeURIComponent(token)}`;
}

async function attach(runId, token, { agent = "", viewer = false, turn = null } = {}) {
  current?.sub.close();
  $("run-panel").hidden = false;
  $("summary").hidden = true; // with the new run id at once: a summary on screen is always this run's
  $("run-id").textContent = runId;
  $("run-agent").textContent = agent;
  $("viewer-badge").hidden = !viewer;
  $("share-link").href = shareUrl(runId, token);
  for (const id of ["event-count", "reconnects"]) $(id).textContent = "0";
  for (const id of ["last-id", "resume-id"]) $(id).textContent = "–";
  showError($("run-error"), "");
  setStatus("queued");

  const status = await fetch(`/v1/runs/${runId}?token=${encodeURIComponent(token)}`);
  const body = await status.json().catch(() => ({}));
  if (!status.ok) {
    setStatus("failed");
    showError($("run-error"), `Cannot open run ${runId}: ${body.detail || status.status}`);
    return;
  }
  $("run-agent").textContent = body.agent;
  setStatus(body.status);

  const renderer = new RunRenderer(body.agent);
  const transport = document.querySelector("input[name=transport]:checked").value;
  let sub = null;
  sub = subscribe(runId, {
    token,
    transport,
    on: { any: (event, id) => renderer.handle(event, id) },
    onStatus: (state, info) => {
      $("conn-state").textContent = `${state} · ${transport.toUpperCase()}`;
      $("reconnects").textContent = sub?.reconnects ?? 0;
      $("reconnects").dataset.duplicates = sub?.duplicates ?? 0; // events the server repeated (must stay 0)
      if (sub && info.resumeId !== undefined && (state === "connecting" || state === "reconnecting")) {
        $("resume-id").textContent = info.resumeId || "start";
        renderer.note(`${info.dropped ? "dropped; " : ""}resuming after ${info.resumeId || "the start"}`);
      }
      if (state === "failed") showError($("run-error"), `Stream failed: ${info.detail || info.httpStatus || "unknown"}`);
      if (state === "done") showSummary(runId, token, renderer, turn);
    },
  });
  current = { runId, token, sub, renderer };
}

async function startRun(event) {
  event.preventDefault();
  showError($("form-error"), "");
  $("start").disabled = true;
  const agent = $("agent").value;
  const input = $("input").value;
  try {
    const response = await fetch("/v1/runs", {
      method: "POST",
      headers: { "content-type": "application/json", ...apiHeaders() },
      body: JSON.stringify({ agent, input, conversation_id: conversation.id }),
    });
    const run = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = Array.isArray(run.detail) ? run.detail.map((d) => d.msg).join("; ") : run.detail;
      showError($("form-error"), `Could not start the run (${response.status}): ${detail || "unknown error"}`);
      return;
    }
    history.replaceState(null, "", `#run=${run.run_id}&token=${encodeURIComponent(run.token)}`);
    $("input").value = "";
    await attach(run.run_id, run.token, { agent, turn: { agent, input, conversationId: conversation.id } });
  } catch (err) {
    showError($("form-error"), `Could not reach the gateway: ${err.message}`);
  } finally {
    $("start").disabled = false;
  }
}

async function cancelRun() {
  if (!current) return;
  $("cancel").disabled = true;
  const url = `/v1/runs/${current.runId}/cancel?token=${encodeURIComponent(current.token)}`;
  const response = await fetch(url, { method: "POST", headers: apiHeaders() }).catch(() => null);
  if (!response || !response.ok) {
    const body = response ? await response.json().catch(() => ({})) : {};
    showError($("run-error"), `Cancel failed (${response?.status ?? "network"}): ${body.detail || "no answer"}`);
    $("cancel").disabled = false;
  }
}

function openFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const runId = params.get("run");
  const token = params.get("token");
  if (runId && token && runId !== current?.runId) attach(runId, token, { viewer: true });
}

$("start-form").addEventListener("submit", startRun);
$("drop").addEventListener("click", () => current?.sub.drop());
$("cancel").addEventListener("click", cancelRun);
$("copy-share").addEventListener("click", async () => {
  if (!current) return;
  await navigator.clipboard?.writeText(shareUrl(current.runId, current.token)).catch(() => {});
  $("copy-share").textContent = "Copied ✓";
  setTimeout(() => { $("copy-share").textContent = "Copy link"; }, 1500);
});
window.addEventListener("hashchange", openFromHash);
await loadAgents();
openFromHash();
