// The Vercel AI SDK's own chat client against a real runcast gateway, driven by tests/test_ai_sdk.py.
//
// `Chat` below is what `useChat` is without React: the `ai` package's AbstractChat (sendMessage, regenerate,
// resumeStream, stop) over an in-memory state, with the same DefaultChatTransport the docs' snippet configures
// (docs/chat.md). Usage: node chat.mjs <scenario> '<json args>'; prints one JSON object (the outcome) on stdout.
import { AbstractChat, DefaultChatTransport } from "ai";

class MemoryChatState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
    this.listeners = new Set();
  }
  changed() {
    for (const listener of this.listeners) listener();
  }
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
    this.changed();
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
    this.changed();
  };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message), ...this.messages.slice(index + 1)];
    this.changed();
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    const state = new MemoryChatState(messages);
    super({ ...init, state });
    this.memory = state;
  }

  /** Resolves once `predicate(this)` holds (checked after every change of the messages). */
  until(predicate, what, timeoutMs = 60_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      const check = () => {
        if (!predicate(this)) return;
        clearTimeout(timer);
        this.memory.listeners.delete(check);
        resolve();
      };
      this.memory.listeners.add(check);
      check();
    });
  }
}

/** The transport as docs/chat.md configures it; `fetch` is wrapped only to record what the gateway answered. */
function transport({ url, agent, headers }, responses) {
  return new DefaultChatTransport({
    api: `${url}/v1/chat/${agent}`,
    headers,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      responses.push({
        method: init?.method ?? "GET",
        url: String(input),
        status: response.status,
        runId: response.headers.get("x-runcast-run-id"),
        runToken: response.headers.get("x-runcast-run-token"),
        protocol: response.headers.get("x-vercel-ai-ui-message-stream"),
      });
      return response;
    },
  });
}

/** docs/chat.md's page: runcast's conversation (history, and the message the active run answers) as UI messages. */
function toUIMessages({ messages, pending_message }) {
  return [...messages, ...(pending_message ? [pending_message] : [])]
    .filter((m) => m.role === "user" || m.role === "assistant")
    .map((m) => ({ id: m.id ?? crypto.randomUUID(), role: m.role, parts: [{ type: "text", text: m.content }] }));
}

async function loadConversation(args) {
  const response = await fetch(`${args.url}/v1/conversations/${args.chatId}`, { headers: args.headers });
  return toUIMessages(await response.json());
}

function newChat(args, responses, messages = []) {
  return new Chat({ id: args.chatId, messages, transport: transport(args, responses) });
}

const lastAssistantText = (chat) => {
  const last = chat.messages.at(-1);
  if (last?.role !== "assistant") return "";
  return last.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
};

const outcome = (chat, responses) => ({
  status: chat.status,
  error: chat.error ? String(chat.error.message ?? chat.error) : null,
  messages: chat.messages,
  responses,
});

async function stopChat(chat, args) {
  // The docs' stop button: abort the request (useChat's stop), then stop the run itself.
  await chat.stop();
  const response = await fetch(`${args.url}/v1/chat/${args.agent}/${args.chatId}/stop`, {
    method: "POST",
    headers: args.headers,
  });
  return { status: response.status, body: response.status === 202 ? await response.json() : null };
}

const scenarios = {
  /** Send `texts` one after the other (then regenerate the last answer, if asked); then try to resume. */
  async turns(args) {
    const responses = [];
    const chat = newChat(args, responses);
    const turns = [];
    for (const text of args.texts) {
      await chat.sendMessage({ text });
      turns.push(outcome(chat, [...responses]));
    }
    if (args.regenerate) {
      await chat.regenerate();
      turns.push(outcome(chat, [...responses]));
    }
    // After the run ended: the transport's own reconnect gets 204 (null), and useChat's resume changes nothing.
    const reconnect = await chat.transport.reconnectToStream({ chatId: args.chatId });
    const before = chat.messages.length;
    await chat.resumeStream();
    return { turns, reconnectAfterEnd: reconnect, resumedMessages: chat.messages.length - before, ...outcome(chat, responses) };
  },

  /** Tab A sends; once it shows text, tab B opens the chat (resume) and tab C tries to send: B ends with A's message. */
  async reconnect(args) {
    const seenA = [];
    const seenB = [];
    const seenC = [];
    const a = newChat(args, seenA);
    const sending = a.sendMessage({ text: args.text });
    await a.until((chat) => lastAssistantText(chat).length > 0, "tab A's first text");
    const partial = lastAssistantText(a);
    const reloaded = await loadConversation(args); // what tab B's page loads: the question being answered
    const b = newChat(args, seenB, reloaded);
    const resuming = b.resumeStream(); // what useChat({resume: true}) does when it mounts
    const c = newChat(args, seenC, structuredClone(reloaded));
    await c.sendMessage({ text: "a second message while the first is being answered" });
    await Promise.all([sending, resuming]);
    return { partial, reloaded, a: outcome(a, seenA), b: outcome(b, seenB), c: outcome(c, seenC) };
  },

  /** Send, and once text shows, stop: useChat's stop() plus the stop endpoint; time until the run has ended. */
  async stop(args) {
    const responses = [];
    const chat = newChat(args, responses);
    const sending = chat.sendMessage({ text: args.text });
    await chat.until((c) => lastAssistantText(c).length > 0, "the first text");
    const started = performance.now();
    const stopped = await stopChat(chat, args);
    const stopMs = performance.now() - started;
    await sending;
    const textAtStop = lastAssistantText(chat);
    return { stopMs, stopped, textAtStop, ...outcome(chat, responses) };
  },
};

const [scenario, raw] = process.argv.slice(2);
if (!scenarios[scenario]) {
  console.error(`usage: node chat.mjs <${Object.keys(scenarios).join("|")}> '<json args>'`);
  process.exit(2);
}
const result = await scenarios[scenario](JSON.parse(raw));
process.stdout.write(JSON.stringify(result) + "\n");
