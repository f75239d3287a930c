"""The Vercel AI SDK's own client (`ai` from npm, pinned in tests/node/package-lock.json) against real gateway and
worker processes on a real Redis: `AbstractChat` (what `useChat` runs) with `DefaultChatTransport` pointed at
`/v1/chat/{agent}`, as docs/chat.md shows it. The Node side is tests/node/chat.mjs; these tests check what it got
against runcast's own view of the run (`/v1/runs/{id}/result`, the run's stream in Redis).

`npm ci` in tests/node installs the packages (`.ci/run` does it). Without them these tests are skipped, loudly,
except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from runcast.shared.keys import heartbeat_key
from runcast.shared.streaming import StreamingEvent
from tests.support.processes import GatewayProcess, WorkerProcess, start_all
from tests.support.requirements import ON_CI, require

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "chat.mjs"
AGENTS = "tests.support.chat_agents:registry"

_MISSING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! runcast tests: {what}: the Vercel AI SDK tests (tests/test_ai_sdk.py) are SKIPPED.
!! Run `npm ci` in tests/node (node >= 18). Under CI=true this fails.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def _node_or_skip() -> str:
    node = shutil.which("node")
    missing = "node is not on PATH" if node is None else None
    if missing is None and not (NODE_DIR / "node_modules" / "ai" / "package.json").exists():
        missing = "tests/node/node_modules is missing"
    if missing is not None and not ON_CI:
        sys.stderr.write(_MISSING.format(what=missing))
    require(missing is None, f"needs the AI SDK: {missing} (run `npm ci` in tests/node)")
    assert node is not None
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return _node_or_skip()


@pytest.fixture(scope="module")
def site(node: str, module_redis_url: str) -> Iterator[str]:
    gateway = GatewayProcess(module_redis_url)
    worker = WorkerProcess(module_redis_url, RUNCAST_AGENTS=AGENTS)
    start_all(gateway, worker)
    yield gateway.url
    gateway.stop()
    worker.stop()


def run_node(node: str, scenario: str, **args: Any) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(SCRIPT), scenario, json.dumps(args)], cwd=NODE_DIR, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"node {scenario} failed ({done.returncode}):\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def new_chat_id() -> str:
    return f"chat-{uuid.uuid4().hex[:16]}"


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def result_of(site: str, response: dict[str, Any]) -> dict[str, Any]:
    """runcast's own final result of the run a chat response streamed (its id and token are response headers)."""
    answer = httpx.get(f"{site}/v1/runs/{response['runId']}/result", params={"token": response["runToken"]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_message_streams_back_as_the_assistant_message_with_tool_parts_and_the_runs_text(node: str, site: str):
    chat_id = new_chat_id()
    out = run_node(node, "turns", url=site, agent="demo", chatId=chat_id, texts=["What is (17 + 25) * 3?"])

    assert out["status"] == "ready" and out["error"] is None
    user, assistant = out["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    post = out["responses"][0]
    assert post["method"] == "POST" and post["status"] == 200 and post["protocol"] == "v1"
    assert assistant["id"] == post["runId"]  # the assistant message is the run
    assert assistant["metadata"]["runId"] == post["runId"] and assistant["metadata"]["agent"] == "demo"

    result = result_of(site, post)
    assert result["is_complete"] and result["error"] is None
    assert text_of(assistant) == result["content"] == "Let me calculate (17 + 25) * 3.\n\nThe answer is 126."
    types = [part["type"] for part in assistant["parts"]]
    assert types == ["step-start", "text", "tool-calculator", "step-start", "text"]
    tool = assistant["parts"][2]
    assert tool["state"] == "output-available"
    assert tool["input"] == {"expression": "(17 + 25) * 3"} and tool["output"] == 126
    assert tool["toolCallId"] == result["tool_calls"][0]["call_id"]
    assert all(part.get("state", "done") == "done" for part in assistant["parts"] if part["type"] == "text")


def test_reconnect_after_the_run_ended_gets_204_and_resume_adds_nothing(node: str, site: str):
    out = run_node(node, "turns", url=site, agent="echo", chatId=new_chat_id(), texts=["hello there"])
    assert out["reconnectAfterEnd"] is None  # DefaultChatTransport.reconnectToStream returns null on 204
    statuses = [(r["method"], r["status"]) for r in out["responses"]]
    assert statuses == [("POST", 200), ("GET", 204), ("GET", 204)]
    assert out["resumedMessages"] == 0 and out["status"] == "ready"
    assert text_of(out["messages"][-1]) == "hello there"


def test_a_second_turn_sees_the_first_and_a_regenerate_replaces_the_last_turn(node: str, site: str):
    chat_id = new_chat_id()
    out = run_node(
        node,
        "turns",
        url=site,
        agent="chat",
        chatId=chat_id,
        texts=["My name is Ada.", "What is my name?"],
        regenerate=True,
    )
    first, second, regenerated = out["turns"]
    assert text_of(first["messages"][-1]) == "Earlier messages: 0. You said: My name is Ada."
    expected = 'Earlier messages: 2. Before, you said "My name is Ada.". You said: What is my name?'
    assert text_of(second["messages"][-1]) == expected
    # regenerate: the client drops the last answer and asks again; runcast cuts that turn from its history too,
    # so the agent sees the same two earlier messages (not four), and a new run answers.
    assert [m["role"] for m in regenerated["messages"]] == ["user", "assistant", "user", "assistant"]
    assert text_of(regenerated["messages"][-1]) == expected
    assert regenerated["messages"][-1]["id"] != second["messages"][-1]["id"]
    conversation = httpx.get(f"{site}/v1/conversations/{chat_id}").json()
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant", "user", "assistant"]
    assert conversation["messages"][-1]["id"] == regenerated["messages"][-1]["id"]
    assert conversation["active_run_id"] is None


def test_a_second_tab_joins_mid_run_and_ends_with_the_identical_message(node: str, site: str):
    out = run_node(node, "reconnect", url=site, agent="slowdemo", chatId=new_chat_id(), text="What is 6 * 7?")
    a, b, c = out["a"], out["b"], out["c"]
    assert a["status"] == b["status"] == "ready" and a["error"] is None and b["error"] is None
    resume = b["responses"][0]
    assert resume["method"] == "GET" and resume["status"] == 200, "tab B must have found the run still going"
    assert resume["runId"] == a["responses"][0]["runId"]
    final_a, final_b = a["messages"][-1], b["messages"][-1]
    assert len(out["partial"]) < len(text_of(final_a)), "tab B joined after the end"
    assert out["reloaded"] == [a["messages"][0]]  # the page's reload shows the question being answered
    assert b["messages"] == a["messages"]  # the same messages: ids, metadata, text, the tool call's input and output
    assert text_of(final_b) == result_of(site, resume)["content"]
    assert any(part["type"] == "tool-calculator" and part["output"] == 42 for part in final_b["parts"])
    # Tab C sent while the run was going: one active run per chat, so a 409 naming it, and no second run.
    assert [r["status"] for r in c["responses"]] == [409]
    assert c["status"] == "error" and resume["runId"] in c["error"]


def test_stop_ends_the_run_within_a_second_and_every_viewer_sees_it_end(node: str, site: str, module_redis_url: str):
    chat_id = new_chat_id()
    out = run_node(node, "stop", url=site, agent="slowdemo", chatId=chat_id, text="What is 6 * 7?")
    post = out["responses"][0]
    assert out["stopped"]["status"] == 202 and out["stopped"]["body"] == {
        "run_id": post["runId"],
        "status": "cancelled",
    }
    assert out["stopMs"] < 1000, f"stop took {out['stopMs']:.0f} ms"
    assert out["status"] == "ready" and out["error"] is None  # a stop is not an error for useChat

    result = result_of(site, post)
    assert result["error"]["error_type"] == "cancelled"
    assert out["textAtStop"] and len(result["content"]) < len("Let me calculate 6 * 7.\n\nThe answer is 42.")
    # The worker stops the agent too (within its cancel poll): its heartbeat goes away and nothing more is appended.
    client = redis_sync.Redis.from_url(module_redis_url, decode_responses=True)
    deadline = time.monotonic() + 10
    while client.exists(heartbeat_key(post["runId"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.exists(heartbeat_key(post["runId"])), "the worker kept running the stopped agent"
    entries = client.xrange(f"runcast:{{{post['runId']}}}:events")
    last = StreamingEvent.from_json(entries[-1][1]["event"])
    assert last.type.value == "error" and last.data.error_type == "cancelled"
    # Nothing is left to resume, and the next message of the chat is answered at once.
    assert httpx.get(f"{site}/v1/chat/slowdemo/{chat_id}/stream").status_code == 204
    client.close()
