"""The `/docs` page in a real headless browser: Debian's Chromium, driven by Selenium through
Debian's chromedriver, against a real `social serve` process.

Swagger UI must render the API from files the service serves itself: every script,
stylesheet, image and request comes from the service's own origin (the browser resolves no
other host name, so a CDN link fails at once instead of depending on the network), the
console shows no error, and "Try it out" executes a GET. Without /usr/bin/chromium or
/usr/bin/chromedriver the tests skip with a reason, unless CQRSKIT_REQUIRE_BROWSER=1 (set by
.ci/run, which installs both), where their absence fails them instead."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e._support import Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_BROWSER = os.environ.get("CQRSKIT_REQUIRE_BROWSER") == "1"
WAIT = 20.0
"""Seconds to wait for the page to render, or for one step of "Try it out"."""
NO_REQUEST = frozenset({"data", "blob", "about"})
"""URL schemes whose content is inline: nothing is fetched from any host."""
EXPECTED_PATHS = frozenset({"/users", "/posts", "/health"})

T = TypeVar("T")

# Every URL the page refers to for its scripts, styles, icon and images, and every resource it
# loaded (the Resource Timing entries list those fetched by CSS too, fonts and images).
PAGE_URLS_JS = """
const urls = {scripts: [], links: [], images: [], resources: []};
for (const s of document.scripts) if (s.src) urls.scripts.push(s.src);
for (const l of document.querySelectorAll('link[href]')) urls.links.push(l.href);
for (const i of document.images) urls.images.push(i.currentSrc || i.src);
for (const e of performance.getEntriesByType('resource')) urls.resources.push(e.name);
return urls;
"""
# What Swagger UI shows: the API's title and operation paths, or the error it shows instead
# (for example "Unable to render this definition" for an OpenAPI version it cannot read).
RENDERED_JS = """
const title = document.querySelector('.swagger-ui .info .title');
const paths = Array.from(
    document.querySelectorAll('.opblock-summary-path[data-path]'), e => e.dataset.path);
const error = document.querySelector('.swagger-ui .version-pragma, .swagger-ui .errors-wrapper');
return {
    title: title ? title.textContent : null,
    paths: paths,
    error: error ? error.innerText : null,
};
"""


def _browser_missing() -> str | None:
    """None when both binaries are there, else what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return None
    return (
        f"no headless browser: {', '.join(missing)} missing "
        "(install Debian's chromium and chromium-driver packages)"
    )


@dataclass
class Browser:
    """One headless Chromium. Every request the page sends (Chromium's performance log:
    the DevTools network events) and every console error (its browser log, SEVERE) is kept,
    however the test ends."""

    driver: webdriver.Chrome
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def collect(self) -> None:
        """Move what the logs hold into `requests` and `console_errors`; both logs are
        emptied by each read."""
        for entry in self._log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif message.get("method") == "Network.webSocketCreated":
                self.requests.append(params["url"])
        for entry in self._log("browser"):
            if entry.get("level") == "SEVERE":
                self.console_errors.append(str(entry.get("message")))

    def _log(self, kind: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.driver.get_log(kind)  # type: ignore[no-untyped-call]
        return entries

    def foreign_requests(self, origin: str) -> list[str]:
        self.collect()
        return foreign(self.requests, origin)

    def open(self, url: str) -> None:
        self.collect()  # what an earlier page left behind is not this page's
        self.requests.clear()
        self.console_errors.clear()
        self.driver.get(url)

    def wait(self, what: str, origin: str, condition: Callable[[WebDriver], T | None]) -> T:
        """Wait up to WAIT seconds for `condition` to return a truthy value. Stops early,
        failing, as soon as the page sends a request to another origin or logs a console
        error: the page will not recover, and the message says why."""

        def step(driver: WebDriver) -> T | Literal[False]:
            self.collect()
            if foreign(self.requests, origin) or self.console_errors:
                raise AssertionError(self.diagnosis(f"while waiting for {what}", origin))
            result = condition(driver)
            return False if result is None else result

        try:
            return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(step)
        except TimeoutException:
            raise AssertionError(
                self.diagnosis(f"{what}: not seen within {WAIT:.0f} s", origin)
            ) from None

    def diagnosis(self, what: str, origin: str) -> str:
        self.collect()
        return (
            f"{what}\nrequests to another origin than {origin}: "
            f"{foreign(self.requests, origin)}\nconsole errors: {self.console_errors}\n"
            f"title: {self.driver.title!r}\nbody text: "
            f"{self.driver.find_element(By.TAG_NAME, 'body').text[:800]!r}"
        )


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs that would be fetched from another origin than `origin`."""
    return [
        url for url in urls if urlsplit(url).scheme not in NO_REQUEST and origin_of(url) != origin
    ]


@contextlib.contextmanager
def headless_chromium(profile: Path, window: str, page_load_timeout: float) -> Iterator[Browser]:
    """Debian's Chromium, headless, its profile in ``profile`` and chromedriver's log beside
    it. Skips with the reason when the binaries are missing, unless CQRSKIT_REQUIRE_BROWSER=1
    (as in CI), which makes that a failure."""
    reason = _browser_missing()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"CQRSKIT_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        # No other host resolves and no proxy is used: the page reaches the service on
        # loopback only, so a request to any other host fails at once (and is still seen
        # in the performance log), whatever network the machine has.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--no-proxy-server",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(profile.parent / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(page_load_timeout)
        yield Browser(driver)
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with headless_chromium(profile, "1280,1024", WAIT) as chromium:
        yield chromium


def _rendered(driver: WebDriver) -> dict[str, Any] | None:
    """The title and operation paths Swagger UI shows, once it shows the API's."""
    state: dict[str, Any] = driver.execute_script(RENDERED_JS)
    if state["error"]:
        raise AssertionError(f"Swagger UI shows an error instead of the API: {state['error']!r}")
    if state["title"] and set(state["paths"]) >= EXPECTED_PATHS:
        return state
    return None


def open_docs(browser: Browser, server: Server) -> dict[str, Any]:
    browser.open(f"{server.url}/docs")
    return browser.wait("Swagger UI showing the API", origin_of(server.url), _rendered)


def test_docs_page_renders_from_the_service_alone(browser: Browser, server: Server) -> None:
    origin = origin_of(server.url)
    state = open_docs(browser, server)

    assert "social" in state["title"], state
    assert "social" in browser.driver.title, browser.driver.title
    assert set(state["paths"]) >= EXPECTED_PATHS, state

    urls: dict[str, list[str]] = browser.driver.execute_script(PAGE_URLS_JS)
    assert urls["scripts"], f"the page loaded no script file: {urls}"
    assert urls["links"], f"the page links no stylesheet: {urls}"
    for kind, listed in urls.items():
        assert not foreign(listed, origin), f"{kind} from another origin than {origin}: {urls}"
    assert f"{origin}/openapi.json" in urls["resources"], urls["resources"]
    assert not browser.foreign_requests(origin), browser.diagnosis("requests", origin)
    assert browser.requests, "the performance log recorded no request"
    assert not browser.console_errors, browser.diagnosis("console errors", origin)


def _find(root: WebDriver | WebElement, xpath: str) -> Callable[[WebDriver], WebElement | None]:
    """A wait condition: the first displayed element at `xpath` under `root`."""

    def find(_: WebDriver) -> WebElement | None:
        for element in root.find_elements(By.XPATH, xpath):
            if element.is_displayed():
                return element
        return None

    return find


def test_try_it_out_executes_get_health(browser: Browser, server: Server) -> None:
    origin = origin_of(server.url)
    open_docs(browser, server)
    block_xpath = (
        "//div[contains(@class, 'opblock-get')]"
        "[.//*[contains(@class, 'opblock-summary-path') and @data-path='/health']]"
    )
    block = browser.wait("the GET /health block", origin, _find(browser.driver, block_xpath))
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()

    try_it = ".//button[contains(., 'Try it out')]"
    browser.wait("its 'Try it out' button", origin, _find(block, try_it)).click()
    execute = ".//button[contains(., 'Execute')]"
    browser.wait("its 'Execute' button", origin, _find(block, execute)).click()

    status_xpath = (
        ".//table[contains(@class, 'live-responses-table')]"
        "/tbody//td[contains(@class, 'response-col_status')]"
    )
    status = browser.wait("the live response's status", origin, _find(block, status_xpath))
    assert status.text.strip().startswith("200"), status.text
    body = block.find_element(
        By.CSS_SELECTOR, ".live-responses-table > tbody .response-col_description"
    )
    assert '"status": "ok"' in body.text, body.text
    request_url = block.find_element(By.CSS_SELECTOR, ".request-url pre").text
    assert request_url.strip() == f"{origin}/health", request_url

    browser.collect()
    assert f"{origin}/health" in browser.requests, browser.requests
    assert not browser.foreign_requests(origin), browser.diagnosis("requests", origin)
    assert not browser.console_errors, browser.diagnosis("console errors", origin)
