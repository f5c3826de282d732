"""Debian's headless Chromium, driven by Selenium, for the web console's end-to-end tests.

One browser per test module (`open_browser`); helpers sign in, read Chromium's console log,
check that the keyboard reaches every control and that every input has a label, and save a
screenshot of each page into docs/console/ (docs/console.md shows them).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
CONSOLE_ASSET = ROOT / "src" / "openmaas" / "api" / "ui" / "static" / "vendor" / "chart.umd.js"
WAIT_S = 20.0
# What the keyboard should reach: every visible, enabled control.
CONTROLS = (
    "a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex='-1'])"
)


def require_browser() -> tuple[str, str]:
    """Chromium and its driver, or a failure that says how to install them: these tests never
    skip quietly (`make test` installs both, with the console's assets)."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "the console's browser tests need Debian's chromium and chromium-driver: "
            "make system-deps"
        )
    if not CONSOLE_ASSET.is_file():
        pytest.fail("the console's assets are not built: make console-assets")
    return chromium, driver


@contextmanager
def open_browser(*extra_arguments: str) -> Iterator[webdriver.Chrome]:
    """Headless Chromium; `extra_arguments` are more of its command-line switches."""
    chromium, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        *extra_arguments,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield browser
    finally:
        browser.quit()


def wait(browser: webdriver.Chrome, css: str, *, visible: bool = True) -> WebElement:
    condition = (
        expected_conditions.visibility_of_element_located
        if visible
        else expected_conditions.presence_of_element_located
    )
    element: WebElement = WebDriverWait(browser, WAIT_S).until(condition((By.CSS_SELECTOR, css)))
    return element


def wait_text(browser: webdriver.Chrome, css: str, text: str) -> WebElement:
    WebDriverWait(browser, WAIT_S).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )
    return browser.find_element(By.CSS_SELECTOR, css)


def wait_until_loaded(browser: webdriver.Chrome) -> None:
    """Every section the page's script fills has been filled (or said why not); the parts
    that show the outcome of an action (aria-live) fill later."""
    WebDriverWait(browser, WAIT_S).until(
        lambda b: b.execute_script(
            "return [...document.querySelectorAll('section > div[id]:not([aria-live])')]"
            ".every((d) => d.childElementCount > 0)"
        )
    )


def sign_in(browser: webdriver.Chrome, url: str, key: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/ui/sign-in")
    field = wait(browser, "#api-key")
    field.send_keys(key)
    field.send_keys(Keys.ENTER)
    WebDriverWait(browser, WAIT_S).until(lambda b: b.current_url.rstrip("/").endswith("/ui"))
    wait_until_loaded(browser)


def console_errors(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """Chromium's console entries at error level since the last call (the log is drained)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def unlabeled_inputs(browser: webdriver.Chrome) -> list[str]:
    found: list[str] = browser.execute_script(
        """
        return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
          .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label')
                        && !e.getAttribute('aria-labelledby'))
          .map((e) => e.outerHTML);
        """
    )
    return found


def unreachable_controls(browser: webdriver.Chrome) -> list[str]:
    """Controls that Tab, pressed from the top of the page, never focuses."""
    controls: list[WebElement] = [
        element
        for element in browser.find_elements(By.CSS_SELECTOR, CONTROLS)
        if element.is_displayed() and element.is_enabled()
    ]
    # Start from a focusable point before everything else on the page.
    browser.execute_script(
        "const start = document.createElement('span'); start.id = 'tab-start';"
        "start.tabIndex = 0; document.body.prepend(start); start.focus();"
    )
    missing = list(controls)
    # A date field takes a Tab stop per part: allow a few per control.
    for _ in range(4 * len(controls) + 8):
        if not missing:
            break
        webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.switch_to.active_element
        missing = [element for element in missing if element != focused]
    browser.execute_script("document.getElementById('tab-start').remove()")
    return [element.get_attribute("outerHTML") or "" for element in missing]


def screenshot(browser: webdriver.Chrome, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def check_page(browser: webdriver.Chrome, name: str) -> None:
    """The page's screenshot, then what every page must pass: no console errors, labelled
    inputs, every control reachable by keyboard."""
    screenshot(browser, name)
    assert console_errors(browser) == []
    assert unlabeled_inputs(browser) == []
    unreachable = unreachable_controls(browser)
    assert unreachable == []
    browser.execute_script("document.activeElement && document.activeElement.blur()")
