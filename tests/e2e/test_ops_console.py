"""The operations console (``GET /ops``) in a real headless browser (Debian's Chromium
through Selenium, the harness of test_docs_page.py) against a real ``cqrskit serve``
process of tests/e2e/_ops_app.py on SQLite.

The operator logs in with the token (a wrong one shows the form again, and no data); pauses
the projections and sees the lag grow as notes are appended, within a second of each; resumes
them, and sees the poison notes parked with their error (user data shown as text, never as
HTML) and the projection that stops in error; skips one parked note with a reason; removes
the bug, retries, and sees parked and lag go to 0; restarts the stopped projection. The
"Relays" table shows once a relay has reported itself in the read database. The page
loads nothing from another origin and logs no console error (but the login page's 401)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from cqrskit._relays import write_report
from tests.e2e._ops_app import Notebook
from tests.e2e._support import ListeningProcess
from tests.e2e.test_docs_page import WAIT, Browser, foreign, headless_chromium

ROOT = Path(__file__).resolve().parents[2]
CQRSKIT = Path(sys.executable).with_name("cqrskit")
APP = "tests.e2e._ops_app:api"
TOKEN = "console-e2e-token-0123456789abcdef"
SCREENSHOT = os.environ.get("CQRSKIT_OPS_SCREENSHOT")
"""Where to also save the screenshot (docs/images/ops-console.png was made so)."""
STREAM_B = "stream-<i>b</i>"
POISON_B = "poison <img src=x onerror=alert(1)>"


class Served(ListeningProcess):
    """One ``cqrskit serve`` process; its stdout read by a thread, its stderr in a file."""

    def fail_start(self) -> None:
        self.stop()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    """The app serving on SQLite with the bug in place (the marker file exists)."""
    marker = tmp_path / "bug"
    marker.touch()
    command = [str(CQRSKIT), "--app", APP, "--url", f"sqlite:///{tmp_path / 'data'}"]
    env = {"OPS_APP_TOKEN": TOKEN, "OPS_APP_BUG": str(marker)}
    server = Served([*command, "serve", "--port", "0"], tmp_path / "serve.stderr", env)
    try:
        yield server, marker
    finally:
        assert server.stop() == 0, server.stderr()


@pytest.fixture
def http(served: tuple[Served, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].url, timeout=15) as client:
        yield client


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium as test_docs_page.py starts it (no host but loopback resolves)."""
    with headless_chromium(tmp_path / "chromium-profile", "1400,1000", 20) as chromium:
        yield chromium


class Console:
    """The console page as the operator sees it."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.browser = browser
        self.origin = origin

    def wait(self, what: str, condition: Callable[[WebDriver], object]) -> object:
        """Wait up to WAIT seconds for ``condition``; as Browser.wait, fail at once on a
        request to another origin or a console error (but the login page's 401)."""

        def step(driver: WebDriver) -> object:
            self.drop_login_401()
            if foreign(self.browser.requests, self.origin) or self.browser.console_errors:
                raise AssertionError(
                    self.browser.diagnosis(f"while waiting for {what}", self.origin)
                )
            try:
                return condition(driver) or False
            except StaleElementReferenceException:
                return False  # re-rendered under us: look again

        try:
            return WebDriverWait(self.browser.driver, WAIT, poll_frequency=0.05).until(step)
        except TimeoutException:
            raise AssertionError(
                self.browser.diagnosis(f"{what}: not seen within {WAIT:.0f} s", self.origin)
            ) from None

    def cell(self, projection: str, field: str) -> str:
        row = f'#projections tr[data-projection="{projection}"]'
        found = self.browser.driver.find_elements(By.CSS_SELECTOR, f'{row} [data-field="{field}"]')
        return found[0].text if found else ""

    def shows(self, projection: str, **fields: str) -> None:
        def check(_: WebDriver) -> bool:
            return all(self.cell(projection, f) == v for f, v in fields.items())

        self.wait(f"{projection} showing {fields}", check)

    def click(self, what: str, css: str) -> None:
        def enabled(driver: WebDriver) -> WebElement | None:
            for element in driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed() and element.is_enabled():
                    element.click()
                    return element
            return None

        self.wait(what, enabled)

    def parked_rows(self) -> list[tuple[str, str, str]]:
        """(position, stream id, error) of each parked event shown, as text."""
        rows = self.browser.driver.find_elements(By.CSS_SELECTOR, "#parked tbody tr")
        found = []
        for row in rows:
            cells = row.find_elements(By.TAG_NAME, "td")
            found.append((cells[0].text, cells[1].text, cells[5].text))
        return found

    def drop_login_401(self) -> None:
        """The login page comes with a 401, which Chromium logs as a console error."""
        self.browser.collect()
        login = re.compile(
            rf"^{re.escape(self.origin)}/ops(/login)? - Failed to load resource: the server"
            r" responded with a status of 401 \(Unauthorized\)$"
        )
        errors = self.browser.console_errors
        errors[:] = [e for e in errors if not login.match(e)]


def note(http: httpx.Client, stream_id: str, text: str) -> int:
    resp = http.post("/notes", json={"stream_id": stream_id, "text": text})
    assert resp.status_code == 201, resp.text
    position: int = resp.json()["position"]
    return position


async def report_relay(url: str, position: int, holder: str) -> None:
    """A relay's report, as ``cqrskit relay`` writes it into the app's read database."""
    async with Notebook(url, run_projections=False) as notebook:
        now = time.time()
        await notebook.db.write(
            lambda tx: write_report(tx, "NOTES", position, "running", now, holder, stale_before=0)
        )


def test_an_operator_parks_fixes_and_retries_in_the_console(
    browser: Browser, served: tuple[Served, Path], http: httpx.Client, tmp_path: Path
) -> None:
    server, bug = served
    page = Console(browser, server.url)
    driver = browser.driver
    first = note(http, "stream-a", "hello")

    # -- the login form: no data before the token ---------------------------------------------
    browser.open(f"{server.url}/ops")
    page.wait("the login form", lambda d: d.find_elements(By.ID, "token"))
    page.drop_login_401()
    assert "notes" not in driver.page_source
    driver.find_element(By.ID, "token").send_keys("not-the-operator-token")
    driver.find_element(By.ID, "login").click()
    page.wait("the wrong token refused", lambda d: "not the operator token" in d.page_source)
    page.drop_login_401()
    assert "note_count" not in driver.page_source
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "login").click()
    page.shows("notes", state="running", position=str(first), head=str(first), lag_events="0")
    page.shows("note_count", state="running", parked="n/a")

    # -- pause: the lag grows, seen within a second --------------------------------------------
    page.click("Pause of notes", '#projections tr[data-projection="notes"] [data-action="pause"]')
    page.shows("notes", state="paused")
    page.click("Pause of note_count", '[data-projection="note_count"] [data-action="pause"]')
    page.shows("note_count", state="paused")
    for lag, (stream_id, text) in enumerate(
        [
            ("stream-a", "second"),
            (STREAM_B, POISON_B),
            (STREAM_B, "after the poison"),
            ("stream-c", "poison again"),
        ],
        start=1,
    ):
        head = note(http, stream_id, text)
        seen = time.monotonic()
        page.shows("notes", lag_events=str(lag), head=str(head))
        assert time.monotonic() - seen < 1.0, "the page took more than a second to show it"
    assert float(page.cell("notes", "lag_seconds")) >= 0

    # -- resume: the poison notes parked, with their error, as text -----------------------------
    page.click("Resume of notes", '[data-projection="notes"] [data-action="resume"]')
    page.click("Resume of note_count", '[data-projection="note_count"] [data-action="resume"]')
    page.shows("notes", state="running", parked="3", lag_events="0")
    page.shows("note_count", state="error")
    assert "cannot file the note" in page.cell("note_count", "error")
    assert STREAM_B in page.cell("note_count", "error")
    page.wait("the parked events", lambda d: len(page.parked_rows()) == 3)
    rows = page.parked_rows()
    assert [r[1] for r in rows] == [STREAM_B, STREAM_B, "stream-c"]
    assert POISON_B in rows[0][2]  # the error message, shown as typed
    assert rows[1][2] == f"waiting behind position {rows[0][0]}"
    assert not driver.find_elements(By.CSS_SELECTOR, "#parked img, #parked i, #projections i")
    driver.save_screenshot(str(tmp_path / "ops-console.png"))
    if SCREENSHOT:
        shutil.copyfile(tmp_path / "ops-console.png", SCREENSHOT)

    # -- skip one, with a reason ---------------------------------------------------------------
    page.click("Skip of stream-c", '#parked tr[data-stream="stream-c"] [data-action="skip"]')
    page.wait("the skip dialog", lambda d: d.find_element(By.ID, "skip-dialog").is_displayed())
    assert driver.find_element(By.ID, "skip-stream").text == "stream-c"
    driver.find_element(By.ID, "skip-reason").send_keys("a duplicate, dropped")
    driver.find_element(By.ID, "skip-confirm").click()
    page.shows("notes", parked="2")
    page.wait("the skip in the actions", lambda d: "a duplicate, dropped" in d.page_source)

    # -- the fix, then retry: parked and lag back to 0 -------------------------------------------
    bug.unlink()
    page.click("Retry of stream b", '#parked tr [data-action="retry"]')
    page.shows("notes", parked="0", lag_events="0", state="running")
    page.wait("no parked event shown", lambda d: not page.parked_rows())
    assert page.cell("notes", "error") == ""
    page.click("Restart of note_count", '[data-projection="note_count"] [data-action="restart"]')
    page.shows("note_count", state="running", lag_events="0", error="")

    # -- a relay reports itself: its table shows, as text ------------------------------------
    assert not driver.find_element(By.ID, "relays").is_displayed()
    head = note(http, "stream-a", "relayed")
    holder = "host-<b>1</b>:42"
    asyncio.run(report_relay(f"sqlite:///{tmp_path / 'data'}", head - 1, holder))
    page.wait("the relays", lambda d: d.find_element(By.ID, "relays").is_displayed())
    row = '#relays tr[data-relay="NOTES"]'
    cells = {
        c.get_attribute("data-field"): c.text
        for c in driver.find_elements(By.CSS_SELECTOR, f"{row} td")
    }
    assert cells.items() >= {"state": "running", "position": str(head - 1), "head": str(head),
                             "lag_events": "1", "holder": holder}.items()  # fmt: skip

    texts = [text for _, text in http.get("/notes").json()]
    assert texts == ["hello", "second", POISON_B, "after the poison", "relayed"]  # in stream order
    assert not browser.foreign_requests(server.url), browser.diagnosis("requests", server.url)
    assert not browser.console_errors, browser.diagnosis("console errors", server.url)
    with contextlib.suppress(Exception):
        driver.get("about:blank")  # stops the page's polling before the server stops
