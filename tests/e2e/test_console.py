"""The web console in real headless Chromium: sign-in, the overview, keys, and what a key
without `admin` sees. Every page is checked for console errors, labelled inputs and keyboard
reach, and photographed into docs/console/."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import (
    WAIT_S,
    check_page,
    console_errors,
    screenshot,
    sign_in,
    wait,
    wait_text,
    wait_until_loaded,
)
from tests.e2e.conftest import create_key, model_dir
from tests.integration.conftest import RunningServer

# Stored-XSS attempts: had any been rendered as HTML, the image would be in the page (and
# its handler blocked by the page's Content-Security-Policy, an error in the console).
XSS = '<img src=x id=xss onerror="document.title=1">'


@pytest.fixture(scope="module")
def stored_xss(console_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model whose description and tags, and a key whose name, are HTML."""
    source = model_dir(tmp_path_factory.mktemp("xss") / "model")
    response = httpx.post(
        f"{console_server.url}/v1/registry/models/xss-model/versions",
        json={
            "source": {"type": "path", "path": str(source)},
            "description": XSS,
            "tags": {"note": XSS},
        },
        headers=console_server.headers,
        timeout=60,
    )
    assert response.status_code == 201, response.text
    httpx.patch(
        f"{console_server.url}/v1/registry/models/xss-model",
        json={"description": XSS},
        headers=console_server.headers,
        timeout=30,
    ).raise_for_status()
    create_key(console_server, XSS, "inference")
    return XSS


def assert_rendered_as_text(browser: webdriver.Chrome) -> None:
    assert browser.find_elements(By.ID, "xss") == []
    assert XSS in browser.find_element(By.TAG_NAME, "main").text


def test_the_sign_in_page(browser: webdriver.Chrome, console_server: RunningServer) -> None:
    browser.get(f"{console_server.url}/ui/")
    wait(browser, "#api-key")  # signed out: sent to sign in
    assert browser.current_url.endswith("/ui/sign-in")
    check_page(browser, "sign-in")


def test_signing_in_leaves_the_browser_only_an_httponly_cookie(
    browser: webdriver.Chrome, console_server: RunningServer
) -> None:
    sign_in(browser, console_server.url, console_server.key)
    (cookie,) = browser.get_cookies()
    assert cookie["name"] == "openmaas_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP here; tests/integration/test_console_sessions
    assert "expiry" in cookie
    assert console_server.key not in cookie["value"]
    stored = browser.execute_script(
        "return [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage)]"
    )
    assert stored == ["", "{}", "{}"]
    assert console_server.key not in browser.page_source


def test_the_overview_renders_stored_html_as_text(
    browser: webdriver.Chrome, console_server: RunningServer, stored_xss: str
) -> None:
    browser.get(f"{console_server.url}/ui/")
    wait_until_loaded(browser)
    wait_text(browser, "#models", "xss-model")
    assert_rendered_as_text(browser)
    check_page(browser, "overview")


def test_a_key_is_created_shown_once_and_revoked(
    browser: webdriver.Chrome, console_server: RunningServer, stored_xss: str
) -> None:
    browser.get(f"{console_server.url}/ui/keys")
    wait_until_loaded(browser)
    assert_rendered_as_text(browser)  # a key named with HTML
    check_page(browser, "keys")
    browser.find_element(By.ID, "key-name").send_keys("e2e-created")
    browser.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
    secret = wait_text(browser, "#new-key", "om-").text
    models = httpx.get(
        f"{console_server.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}
    )
    assert models.status_code == 200
    wait_text(browser, "#keys", "e2e-created")
    screenshot(browser, "keys-created")
    browser.refresh()  # shown once: gone from the page once it is left
    wait_until_loaded(browser)
    assert secret not in browser.page_source
    wait(browser, "button[aria-label='Revoke e2e-created']").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: b.switch_to.alert).accept()
    wait_text(browser, "#status", "Revoked")
    refused = httpx.get(
        f"{console_server.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 401
    assert console_errors(browser) == []


def test_a_key_without_admin_sees_no_admin_page_and_gets_403(
    browser: webdriver.Chrome, console_server: RunningServer
) -> None:
    _, viewer = create_key(console_server, "viewer", "inference", "models:read")
    sign_in(browser, console_server.url, viewer)
    nav = [link.text for link in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert "Overview" in nav
    assert "Keys" not in nav
    check_page(browser, "overview-viewer")
    browser.get(f"{console_server.url}/ui/keys")
    assert "admin" in wait(browser, "#forbidden").text
    screenshot(browser, "forbidden")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/keys', {credentials: 'same-origin'}).then((r) => done(r.status));"
    )
    assert status == 403
    # The only errors: the refused page and the refused call, both 403.
    errors = console_errors(browser)
    assert all("403" in entry["message"] for entry in errors), [e["message"] for e in errors]


def test_signing_out_ends_the_session_on_the_server(
    browser: webdriver.Chrome, console_server: RunningServer
) -> None:
    sign_in(browser, console_server.url, console_server.key)
    token = browser.get_cookie("openmaas_session")["value"]
    wait(browser, "#sign-out").click()
    wait(browser, "#api-key")
    assert browser.get_cookies() == []
    cookies = {"openmaas_session": token}
    replayed = httpx.get(f"{console_server.url}/v1/models", cookies=cookies)
    assert replayed.status_code == 401
    page = httpx.get(f"{console_server.url}/ui/", cookies=cookies)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/sign-in"


def test_screenshots_are_in_the_docs() -> None:
    shots = Path(__file__).resolve().parents[2] / "docs" / "console"
    assert {"sign-in.png", "overview.png", "keys.png"} <= {p.name for p in shots.iterdir()}
