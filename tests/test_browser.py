"""The demo page in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium) against real
gateway and worker processes on a real Redis: text streams in while the run is live, a share link opens a second viewer
of the same run, "drop connection" resumes with no gap or duplicate, and the page's text equals `/result`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import GatewayProcess, WorkerProcess

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
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium/chromium-driver are missing: .ci/run must install them", pytrace=False)
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
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


def start_run(driver: webdriver.Chrome, url: str, transport: str) -> None:
    driver.get(url + "/")
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
    wait(driver, lambda d: text_of(d, "status").lower() == "completed", "second viewer never saw the end")
    assert page_text(driver) == TEXT
    driver.close()
    driver.switch_to.window(main)

    # The first viewer ends with exactly the input: nothing lost or repeated across the drop.
    wait(driver, lambda d: text_of(d, "status").lower() == "completed", "the run did not complete on the page")
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
    wait(driver, lambda d: d.find_element(By.ID, "summary").is_displayed(), "no summary")
    assert "identical" in text_of(driver, "summary-check")
    driver.save_screenshot(str(shots / f"done-{transport}.png"))


def test_a_share_link_with_a_bad_token_shows_a_clear_error(browser: webdriver.Chrome, site: str):
    driver = browser
    driver.get(f"{site}/#run={'a' * 32}&token=forged.token")
    wait(driver, lambda d: d.find_element(By.ID, "run-error").is_displayed(), "no error shown")
    assert "malformed token" in text_of(driver, "run-error")
    assert text_of(driver, "status").lower() == "failed"
