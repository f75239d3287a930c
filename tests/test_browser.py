"""The demo page in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium) against real
gateway and worker processes on a real Redis: text streams in while the run is live, a share link opens a second viewer
of the same run, "drop connection" resumes with no gap or duplicate, and the page's text equals `/result`."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runcast.shared.ids import new_run_id
from runcast.shared.keys import events_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streaming import (
    StreamingChunk,
    StreamingError,
    StreamingEvent,
    StreamingEventType,
    StreamingMetadata,
    StreamingToolCall,
    StreamingToolResult,
)
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from tests.support.processes import TEST_SECRET, GatewayProcess, WorkerProcess
from tests.support.requirements import require

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
TEXT = " ".join(f"token{i}" for i in range(50)) + " — the end."
WAIT_S = 40  # generous: CI has 2 cores shared with everything else

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    require(
        os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    )
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium must not phone home; we name both binaries
    profile = tempfile.mkdtemp(prefix="runcast-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(module_redis_url: str) -> Iterator[str]:
    """A gateway and a worker process; tokens 70 ms apart so a run stays live long enough to watch and interrupt."""
    gateway = GatewayProcess(module_redis_url, RUNCAST_SCRIPTED_DELAY_MS="70")
    worker = WorkerProcess(module_redis_url, RUNCAST_SCRIPTED_DELAY_MS="70")
    worker.start()
    gateway.start()
    yield gateway.url
    gateway.stop()
    worker.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Screenshots go to a temporary folder (docs/demo.png is one of them, chosen by hand)."""
    folder = Path(os.environ.get("RUNCAST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def page_text(driver: webdriver.Chrome) -> str:
    return driver.execute_script(
        "return [...document.querySelectorAll('#transcript .msg-text')].map((e) => e.textContent).join('')"
    )


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def wait(driver: webdriver.Chrome, condition, message: str):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message)


def wait_until_rendered(driver: webdriver.Chrome) -> None:
    """The page shows the `/result` summary once the run's terminal event has been delivered and rendered (the status
    pill alone is not enough: a viewer of a finished run shows the status from `GET /v1/runs/{id}` at once)."""
    wait(driver, lambda d: d.find_element(By.ID, "summary").is_displayed(), "the run was never rendered to its end")


def open_page(driver: webdriver.Chrome, url: str) -> None:
    """A fresh document each time (a hash-only change would keep the previous run's page state)."""
    driver.get("about:blank")
    driver.get(url)


def start_run(driver: webdriver.Chrome, url: str, transport: str) -> None:
    open_page(driver, url + "/")
    wait(
        driver,
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#agent option[value=echo]")
            or "echo" in [o.text for o in d.find_elements(By.CSS_SELECTOR, "#agent option")]
        ),
        "agents never loaded",
    )
    driver.execute_script("document.getElementById('agent').value = 'echo'")
    box = driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys(TEXT)
    driver.find_element(By.CSS_SELECTOR, f"input[name=transport][value={transport}]").click()
    driver.find_element(By.ID, "start").click()


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_page_streams_shares_and_resumes_after_a_dropped_connection(
    browser: webdriver.Chrome, site: str, shots: Path, transport: str
):
    driver = browser
    start_run(driver, site, transport)
    main = driver.current_window_handle

    # Streaming, seen partway: the status says running while only part of the text is there.
    partial = wait(
        driver,
        lambda d: len(page_text(d)) > 20 and text_of(d, "status").lower() == "running" and page_text(d),
        "no text streamed while running",
    )
    assert TEXT.startswith(partial) and len(partial) < len(TEXT)
    driver.save_screenshot(str(shots / f"streaming-{transport}.png"))
    run_id = text_of(driver, "run-id")
    share = driver.find_element(By.ID, "share-link").get_attribute("href")
    assert share.startswith(f"{site}/#run={run_id}&token=")

    # Drop the connection mid-run: it reconnects, resuming after the last id it had, and the counter goes up.
    ids_before = driver.execute_script(
        "return [...document.querySelectorAll('#event-log .id')].map(e => e.textContent)"
    )
    assert text_of(driver, "reconnects") == "0"
    driver.find_element(By.ID, "drop").click()
    wait(driver, lambda d: text_of(d, "reconnects") == "1", "the reconnect counter did not move")
    resumed_from = wait(
        driver, lambda d: text_of(d, "resume-id") not in ("", "\u2013") and text_of(d, "resume-id"), "no resume id"
    )
    assert resumed_from not in ("start", ""), resumed_from
    ids_at_drop = driver.execute_script(
        "return [...document.querySelectorAll('#event-log .id')].map(e => e.textContent)"
    )
    assert resumed_from in ids_at_drop and len(ids_at_drop) >= len(ids_before)
    assert text_of(driver, "status").lower() == "running", "the drop must happen while the run is live"

    # A second viewer from the share link, opened while the run is still going, sees the same run.
    driver.switch_to.new_window("window")
    driver.get(share)
    wait(driver, lambda d: text_of(d, "run-id") == run_id, "the share link did not open the run")
    assert driver.find_element(By.ID, "viewer-badge").is_displayed()
    wait_until_rendered(driver)
    assert text_of(driver, "status").lower() == "completed"
    assert page_text(driver) == TEXT
    driver.close()
    driver.switch_to.window(main)

    # The first viewer ends with exactly the input: nothing lost or repeated across the drop.
    wait_until_rendered(driver)
    assert text_of(driver, "status").lower() == "completed"
    assert page_text(driver) == TEXT
    assert text_of(driver, "reconnects") == "1"
    duplicates = driver.find_element(By.ID, "reconnects").get_attribute("data-duplicates")
    assert duplicates == "0", "the server sent events the page already had: the resume id was not honoured"
    ids = driver.execute_script("return [...document.querySelectorAll('#event-log .id')].map(e => e.textContent)")
    event_ids = [i for i in ids if i != "—"]
    assert len(event_ids) == len(set(event_ids)), "an event was shown twice"
    token = share.split("token=", 1)[1]
    result = httpx.get(f"{site}/v1/runs/{run_id}/result", params={"token": httpx.URL(f"?t={token}").params["t"]})
    assert result.status_code == 200 and result.json()["content"] == page_text(driver) == TEXT
    assert "identical" in text_of(driver, "summary-check")
    driver.save_screenshot(str(shots / f"done-{transport}.png"))


def test_a_share_link_with_a_bad_token_shows_a_clear_error(browser: webdriver.Chrome, site: str):
    driver = browser
    open_page(driver, f"{site}/#run={'a' * 32}&token=forged.token")
    wait(driver, lambda d: d.find_element(By.ID, "run-error").is_displayed(), "no error shown")
    assert "malformed token" in text_of(driver, "run-error")
    assert text_of(driver, "status").lower() == "failed"


def seed_run(redis_url: str, events: list[StreamingEvent], trim_to: int | None = None) -> tuple[str, str]:
    """A run whose events the test writes itself (no worker): every event type the page must render."""
    run_id = new_run_id()

    async def write() -> None:
        redis = redis_from_url(redis_url)
        try:
            log = StreamLog(redis)
            await log.create_run(run_id, "triage", "what is 6 * 7?")
            for event in events:
                await log.append(run_id, event)
            if trim_to is not None:
                await redis.xtrim(events_key(run_id), maxlen=trim_to, approximate=False)
        finally:
            await redis.aclose()

    asyncio.run(write())
    return run_id, issue_token(TEST_SECRET.encode(), run_id, 600)


def handoff_run_events(run_id: str) -> list[StreamingEvent]:
    def ev(kind: StreamingEventType, data: object) -> StreamingEvent:
        return StreamingEvent(kind, data, run_id=run_id)  # type: ignore[arg-type]

    return [
        ev(StreamingEventType.START, StreamingMetadata("triage", "scripted")),
        ev(StreamingEventType.CHUNK, StreamingChunk("Handing over.", "Handing over.", False, 1)),
        ev(StreamingEventType.AGENT_SWITCH, {"from_agent": "triage", "to_agent": "demo"}),
        ev(StreamingEventType.TOOL_CALL, StreamingToolCall("calculator", {"expression": "6 * 7"}, "call-1")),
        ev(StreamingEventType.TOOL_RESULT, StreamingToolResult("calculator", "call-1", 42, "completed", 0.4)),
        ev(StreamingEventType.CHUNK, StreamingChunk("The answer", "The answer", False, 2)),
        ev(StreamingEventType.CHUNK, StreamingChunk("The answer is 42.", " is 42.", False, 3)),
        ev(StreamingEventType.METADATA, StreamingMetadata("demo", "scripted", 2, 17, 12.5)),
    ]


def test_page_renders_tool_calls_results_and_agent_switches(
    browser: webdriver.Chrome, site: str, module_redis_url: str, shots: Path
):
    run_id = new_run_id()
    events = [*handoff_run_events(run_id), StreamingEvent(StreamingEventType.COMPLETE, {}, run_id=run_id)]
    run_id, token = seed_run(module_redis_url, events)
    driver = browser
    open_page(driver, f"{site}/#run={run_id}&token={token}")
    wait_until_rendered(driver)
    assert text_of(driver, "status").lower() == "completed"

    agents = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#transcript .msg-agent")]
    assert [a.lower() for a in agents] == ["triage", "demo"]
    assert page_text(driver) == "Handing over.The answer is 42."
    assert driver.find_element(By.CSS_SELECTOR, "#transcript .switch").text == "handoff: triage → demo"
    card = driver.find_element(By.CSS_SELECTOR, "#transcript .tool-card.done")
    assert "calculator" in card.text and '"expression": "6 * 7"' in card.text and "→ 42" in card.text
    assert "completed · 0.4 ms" in card.text
    types = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#event-log .type")]
    assert types == [
        "start",
        "chunk",
        "agent_switch",
        "tool_call",
        "tool_result",
        "chunk",
        "chunk",
        "metadata",
        "complete",
    ]
    assert "identical" in text_of(driver, "summary-check")
    driver.save_screenshot(str(shots / "handoff.png"))


def test_page_shows_a_cancelled_run_and_a_trimmed_log_without_hiding_the_gap(
    browser: webdriver.Chrome, site: str, module_redis_url: str
):
    run_id = new_run_id()
    cancelled = StreamingEvent(StreamingEventType.ERROR, StreamingError("cancelled", "cancelled by the user"))
    run_id, token = seed_run(module_redis_url, [*handoff_run_events(run_id), cancelled], trim_to=3)
    driver = browser
    open_page(driver, f"{site}/#run={run_id}&token={token}")
    wait_until_rendered(driver)
    assert text_of(driver, "status").lower() == "cancelled"
    notices = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#transcript .notice")]
    assert len(notices) == 2
    assert "trimmed" in notices[0]
    assert notices[1] == "cancelled: cancelled by the user"
    assert page_text(driver) == " is 42.", "only what was kept is shown, after the reset notice"
    assert driver.find_element(By.ID, "cancel").get_attribute("disabled") is not None


def agent_list(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    return [
        (item.find_element(By.CSS_SELECTOR, ".agent-name").text, item.find_element(By.CSS_SELECTOR, ".agent-desc").text)
        for item in driver.find_elements(By.CSS_SELECTOR, "#agent-list li")
    ]


def input_value(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "input").get_attribute("value")


def pick_agent(driver: webdriver.Chrome, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#agent-list li[data-agent={name}] button").click()


def send(driver: webdriver.Chrome, text: str) -> str:
    """Type `text`, start the run, wait until it is rendered to its end; the run id."""
    before = text_of(driver, "run-id") if driver.find_element(By.ID, "run-panel").is_displayed() else ""
    box = driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "start").click()
    run_id = wait(driver, lambda d: text_of(d, "run-id") not in ("", before) and text_of(d, "run-id"), "no new run")
    wait_until_rendered(driver)
    return run_id


def thread(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    return [
        (turn.find_element(By.CSS_SELECTOR, ".turn-user").text, turn.find_element(By.CSS_SELECTOR, ".turn-agent").text)
        for turn in driver.find_elements(By.CSS_SELECTOR, "#thread .turn")
    ]


def test_page_opens_on_arithmetic_for_the_calculator_agent_and_lists_every_agent(browser: webdriver.Chrome, site: str):
    driver = browser
    open_page(driver, site + "/")
    agents = httpx.get(f"{site}/v1/agents").json()
    wait(driver, lambda d: len(agent_list(d)) == len(agents), "the agent list never showed")
    assert agent_list(driver) == [(a["name"], a["description"]) for a in agents]
    assert driver.find_element(By.ID, "agent").get_attribute("value") == "demo"
    assert input_value(driver) == "What is (17 + 25) * 3?"
    assert driver.find_element(By.CSS_SELECTOR, "#agent-list li.active").get_attribute("data-agent") == "demo"

    pick_agent(driver, "chat")  # the input follows the agent while it is the sample...
    assert driver.find_element(By.ID, "agent").get_attribute("value") == "chat"
    assert input_value(driver) == "Hi! My name is Ada."
    box = driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys("my own words")
    pick_agent(driver, "demo")  # ...never over what the user wrote
    assert input_value(driver) == "my own words"

    send(driver, "What is (17 + 25) * 3?")
    assert page_text(driver) == "Let me calculate (17 + 25) * 3.\n\nThe answer is 126."
    assert "→ 126" in driver.find_element(By.CSS_SELECTOR, "#transcript .tool-card.done").text


def test_a_second_message_continues_the_conversation(browser: webdriver.Chrome, site: str, shots: Path):
    driver = browser
    open_page(driver, site + "/")
    wait(driver, lambda d: agent_list(d), "the agent list never showed")
    conversation = text_of(driver, "conversation-id")
    pick_agent(driver, "chat")

    first = send(driver, "My name is Ada.")
    assert page_text(driver) == "Earlier messages: 0. You said: My name is Ada."
    assert thread(driver) == [("My name is Ada.", "Earlier messages: 0. You said: My name is Ada.")]
    assert driver.find_element(By.CSS_SELECTOR, "#thread .turn-agent").get_attribute("data-agent") == "chat"
    assert text_of(driver, "start") == "Continue"

    second = send(driver, "What is my name?")
    assert page_text(driver) == 'Earlier messages: 2. Before, you said "My name is Ada.". You said: What is my name?'
    assert len(thread(driver)) == 2 and text_of(driver, "turn-count") == "2 turns"
    token = driver.find_element(By.ID, "share-link").get_attribute("href").split("token=", 1)[1]
    status = httpx.get(f"{site}/v1/runs/{second}", params={"token": httpx.URL(f"?t={token}").params["t"]}).json()
    assert status["conversation_id"] == conversation and second != first
    driver.save_screenshot(str(shots / "conversation.png"))

    driver.find_element(By.ID, "new-conversation").click()
    assert thread(driver) == [] and text_of(driver, "conversation-id") != conversation
    send(driver, "Hello again.")
    assert page_text(driver) == "Earlier messages: 0. You said: Hello again."
