// The demo page's composer: the agents the workers serve (GET /v1/agents), each with an input that suits it, and the
// conversation the page's runs continue (every run is sent with its conversation_id, so the agent sees the earlier
// turns; a completed run's question and answer join the thread, as they join the conversation in Redis).
const $ = (id) => document.getElementById(id);

const SAMPLES = {
  demo: "What is (17 + 25) * 3?",
  triage: "Please work out 12 * 12 for me.",
  chat: "Hi! My name is Ada.",
  echo: "Hello from runcast! Every token you see here was appended to a Redis Stream by a worker and fanned out to this page by a stateless gateway.",
};
const DEFAULT_AGENT = "demo";

export const sampleFor = (agent) => SAMPLES[agent] ?? "Hello!";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

let selected = DEFAULT_AGENT; // the agent whose sample index.html opens with

/** Select an agent; the input follows unless the user has written their own. */
export function selectAgent(name) {
  const input = $("input");
  if (!input.value.trim() || input.value === sampleFor(selected)) input.value = sampleFor(name);
  selected = name;
  $("agent").value = name;
  for (const item of document.querySelectorAll("#agent-list li")) {
    item.classList.toggle("active", item.dataset.agent === name);
  }
}

export async function loadAgents() {
  let agents = [];
  try {
    agents = await fetch("/v1/agents").then((r) => r.json());
  } catch {
    /* the page still works with the default option */
  }
  if (!Array.isArray(agents) || !agents.length) {
    $("agent-list").replaceChildren(el("li", "muted", "No worker has registered its agents yet."));
    return;
  }
  $("agent").replaceChildren(...agents.map((a) => Object.assign(el("option", "", a.name), { value: a.name, title: a.description })));
  $("agent-list").replaceChildren(...agents.map((a) => {
    const item = el("li");
    item.dataset.agent = a.name;
    const pick = el("button", "agent-name", a.name);
    pick.type = "button";
    pick.addEventListener("click", () => selectAgent(a.name));
    item.append(pick, el("span", "agent-desc", a.description));
    return item;
  }));
  $("agent").addEventListener("change", (event) => selectAgent(event.target.value));
  selectAgent((agents.find((a) => a.name === DEFAULT_AGENT) || agents[0]).name);
}

function newId() {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  return `demo-${random}`;
}

/** The conversation this page continues: its id, and the turns that completed in it. */
export const conversation = { id: newId(), turns: [] };

export function newConversation() {
  conversation.id = newId();
  conversation.turns = [];
  renderThread();
}

export function recordTurn(agent, question, answer) {
  conversation.turns.push({ agent, question, answer });
  renderThread();
}

function renderThread() {
  $("conversation-id").textContent = conversation.id;
  const count = conversation.turns.length;
  $("turn-count").textContent = `${count} turn${count === 1 ? "" : "s"}`;
  $("thread").replaceChildren(...conversation.turns.map((turn) => {
    const item = el("li", "turn");
    item.append(el("div", "turn-user", turn.question), el("div", "turn-agent", turn.answer));
    item.querySelector(".turn-agent").dataset.agent = turn.agent;
    return item;
  }));
  $("start").textContent = count ? "Continue" : "Start run";
}

$("new-conversation").addEventListener("click", newConversation);
renderThread();
