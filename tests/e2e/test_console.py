"""The web console in real headless Chromium: sign-in, the overview, keys, and what a key
without `admin` sees. Every page is checked for console errors, labelled inputs and keyboard
reach, and photographed into docs/console/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

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
from tests.integration.waiting import wait_for

# Stored-XSS attempts: had any been rendered as HTML, the image would be in the page (and
# its handler blocked by the page's Content-Security-Policy, an error in the console).
XSS = '<img src=x id=xss onerror="document.title=1">'
LABELS = ["negative", "neutral", "positive"]


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
            "params": {"labels": LABELS},
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


def test_keys_are_created_shown_once_and_revoked_and_projects_get_limits(
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
    browser.find_element(By.ID, "project-name").send_keys("acme")
    browser.find_element(By.ID, "project-description").send_keys(XSS)
    wait(browser, "#create-project button[type=submit]").click()
    wait_text(browser, "#projects", "acme")
    assert_rendered_as_text(browser)
    Select(browser.find_element(By.ID, "limits-target")).select_by_value("project:acme")
    browser.find_element(By.ID, "limit-requests_per_minute").send_keys("600")
    wait(browser, "#limits-form button[type=submit]").click()
    wait_text(browser, "#projects", "requests_per_minute 600")
    project = httpx.get(f"{console_server.url}/v1/projects/acme", headers=console_server.headers)
    assert project.json()["limits"] == {"requests_per_minute": 600}
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def two_versions(
    console_server: RunningServer, tmp_path_factory: pytest.TempPathFactory, stored_xss: str
) -> str:
    """A model with two versions that differ in params, metrics and tags; `prod` moved from
    v1 to v2 (so it has a history to roll back)."""
    source = model_dir(tmp_path_factory.mktemp("two") / "model")
    for version, (lr, accuracy) in enumerate([(0.1, 0.81), (0.05, 0.86)], start=1):
        response = httpx.post(
            f"{console_server.url}/v1/registry/models/compare-me/versions",
            json={
                "source": {"type": "path", "path": str(source)},
                "params": {"labels": LABELS, "learning_rate": lr, "epochs": 3},
                "metrics": {"accuracy": accuracy},
                "tags": {"stage": f"try-{version}"},
                "alias": "prod",
            },
            headers=console_server.headers,
            timeout=60,
        )
        assert response.status_code == 201, response.text
    return "compare-me"


def test_two_versions_side_by_side_and_an_alias_rolled_back(
    browser: webdriver.Chrome, console_server: RunningServer, two_versions: str
) -> None:
    browser.get(f"{console_server.url}/ui/models/{two_versions}")
    wait_until_loaded(browser)
    wait_text(browser, "#history", "prod")
    check_page(browser, "model")
    wait(browser, "#compare-form button[type=submit]").click()
    table = wait(browser, "#comparison-table")
    differing = [row.text for row in table.find_elements(By.CSS_SELECTOR, "tr.diff")]
    assert "param learning_rate 0.1 0.05" in differing
    assert "metric accuracy 0.81 0.86" in differing
    assert "tag stage try-1 try-2" in differing
    assert not any(row.startswith("param epochs") for row in differing)
    screenshot(browser, "model-compare")
    wait(browser, "button[aria-label='Roll back prod']").click()
    wait_text(browser, "#status", "prod rolled back to v1")
    aliases = httpx.get(
        f"{console_server.url}/v1/registry/models/{two_versions}/aliases",
        headers=console_server.headers,
    ).json()
    assert aliases == {"prod": 1}
    wait_text(browser, "#history", "rolled back in the console")
    browser.find_element(By.ID, "alias-name").send_keys("staging")
    wait(browser, "#alias-form button[type=submit]").click()
    wait_text(browser, "#status", "staging now points at v2")
    wait_text(browser, "#aliases", "staging")
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def vader(console_server: RunningServer) -> str:
    """The catalog's rule-based sentiment classifier: loads and answers in milliseconds."""
    response = httpx.post(
        f"{console_server.url}/v1/catalog/vader/register", headers=console_server.headers
    )
    assert response.status_code == 201, response.text
    return "vader"


def test_usage_by_day_model_and_key_with_the_csv_export(
    browser: webdriver.Chrome, console_server: RunningServer, vader: str
) -> None:
    for text in ("good", "bad", "fine"):
        httpx.post(
            f"{console_server.url}/v1/classify",
            json={"model": vader, "input": text},
            headers=console_server.headers,
        ).raise_for_status()

    def recorded() -> bool:
        report = httpx.get(
            f"{console_server.url}/v1/usage",
            params={"model": vader},
            headers=console_server.headers,
        ).json()
        return report["total"]["requests"] >= 3

    wait_for("the usage to be written", recorded, timeout_s=30)
    browser.get(f"{console_server.url}/ui/usage")
    wait_until_loaded(browser)
    wait_text(browser, "#by-day", vader)
    wait_text(browser, "#by-key", "om-")
    check_page(browser, "usage")
    href = wait(browser, "#csv").get_attribute("href")
    assert href is not None
    export = httpx.get(href, headers=console_server.headers)
    assert export.headers["content-type"].startswith("text/csv")
    assert vader in export.text


def test_the_audit_log_filters_by_action(
    browser: webdriver.Chrome, console_server: RunningServer, two_versions: str
) -> None:
    browser.get(f"{console_server.url}/ui/audit")
    wait_until_loaded(browser)
    wait_text(browser, "#events", "key.create")
    browser.find_element(By.ID, "audit-action").send_keys("alias.rollback")
    browser.find_element(By.CSS_SELECTOR, "#audit-filter button[type=submit]").click()
    WebDriverWait(browser, WAIT_S).until(
        lambda b: "key.create" not in b.find_element(By.ID, "events").text
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    assert rows
    assert all("alias.rollback" in row.text for row in rows)
    check_page(browser, "audit")


def test_the_playground_calls_a_classifier_and_shows_the_request_as_code(
    browser: webdriver.Chrome, console_server: RunningServer, vader: str
) -> None:
    browser.get(f"{console_server.url}/ui/playground?model={vader}")
    wait_until_loaded(browser)
    wait_text(browser, "#pg-task", "text-classification")
    field = browser.find_element(By.ID, "pg-texts")
    field.clear()
    field.send_keys(f"What a wonderful day!\n{XSS}")
    wait(browser, "#playground-form button[type=submit]").click()
    scores = wait_text(browser, "#scores", "positive")
    assert "What a wonderful day!" in scores.text
    assert_rendered_as_text(browser)
    assert wait(browser, "#pg-chart").size["height"] > 0
    check_page(browser, "playground")
    curl = browser.find_element(By.ID, "snippet-curl").text
    python = browser.find_element(By.ID, "snippet-python").text
    env = {**os.environ, "OPENMAAS_API_KEY": console_server.key}
    for command in (["bash", "-c", curl], [sys.executable, "-c", python]):
        ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "positive" in ran.stdout


def test_a_dataset_is_uploaded_and_its_report_read(
    browser: webdriver.Chrome, console_server: RunningServer, tmp_path: Path
) -> None:
    rows = ["text,label", "I loved it,positive", f'"{XSS}",negative', ",positive"]
    rows += [f"example {i},{'positive' if i % 2 else 'negative'}" for i in range(20)]
    upload = tmp_path / "reviews.csv"
    upload.write_text("\n".join(rows) + "\n")
    browser.get(f"{console_server.url}/ui/datasets")
    wait_until_loaded(browser)
    browser.find_element(By.ID, "ds-file").send_keys(str(upload))
    wait(browser, "#upload-form button[type=submit]").click()
    wait_text(browser, "#status", "Uploaded reviews.csv")
    assert browser.find_element(By.ID, "upload-progress").get_attribute("value") == "100"
    report = wait_text(browser, "#report", "empty")
    assert "4" in [cell.text for cell in report.find_elements(By.CSS_SELECTOR, "td")]  # line
    wait_text(browser, "#split", "did not pass validation")
    wait_text(browser, "#preview", "I loved it")
    assert_rendered_as_text(browser)  # a row holding HTML
    check_page(browser, "datasets")


@pytest.fixture(scope="module")
def training_set(console_server: RunningServer) -> str:
    """200 short reviews, half positive, as JSON Lines: a dataset that passes validation."""
    lines = [
        json.dumps({"text": f"{word} film number {i} was {word}", "label": label})
        for i in range(100)
        for word, label in (("great", "positive"), ("awful", "negative"))
    ]
    response = httpx.post(
        f"{console_server.url}/v1/datasets",
        files={"file": ("reviews.jsonl", ("\n".join(lines) + "\n").encode())},
        headers=console_server.headers,
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "processed"
    dataset_id: str = response.json()["id"]
    return dataset_id


def curve_points(browser: webdriver.Chrome) -> int:
    return int(browser.find_element(By.ID, "curve").get_attribute("data-points") or 0)


def test_a_training_job_from_the_form_grows_its_curve_and_is_cancelled(
    browser: webdriver.Chrome, console_server: RunningServer, training_set: str
) -> None:
    sign_in(browser, console_server.url, console_server.key)  # whichever tests ran before
    browser.get(f"{console_server.url}/ui/training?recipe=slow_textcnn")
    wait_until_loaded(browser)
    wait(browser, "#hp-step_delay_s")  # the form is built from the recipe's defaults
    Select(browser.find_element(By.ID, "job-dataset")).select_by_value(training_set)
    # A value the API refuses, holding HTML: its message is shown as text.
    optimizer = browser.find_element(By.ID, "hp-optimizer")
    optimizer.clear()
    optimizer.send_keys(XSS)
    wait(browser, "#job-form button[type=submit]").click()
    wait_text(browser, "#status", "must be one of")
    assert_rendered_as_text(browser)
    refused = console_errors(browser)
    assert [e for e in refused if "status of 400" not in e["message"]] == [], refused
    optimizer.clear()
    optimizer.send_keys("adamw")
    for name, value in {
        "n_epochs": "4",
        "batch_size": "8",
        "embedding_dim": "16",
        "n_filters": "8",
        "step_delay_s": "0.1",
    }.items():
        field = browser.find_element(By.ID, f"hp-{name}")
        field.clear()
        field.send_keys(value)
    wait(browser, "#job-form button[type=submit]").click()
    # The worker starts with the server; its first job waits for torch to import.
    WebDriverWait(browser, 90).until(
        lambda b: curve_points(b) >= 1 and b.find_element(By.ID, "job-status").text == "running"
    )
    seen = curve_points(browser)
    WebDriverWait(browser, WAIT_S).until(lambda b: curve_points(b) > seen)  # while it runs
    # Pushed by the server (server-sent events), not polled.
    assert browser.find_element(By.ID, "curve").get_attribute("data-source") == "stream"
    wait(browser, "#cancel-job").click()
    wait_text(browser, "#job-status", "cancelled")
    wait_text(browser, "#events", "Step")
    browser.execute_script("document.getElementById('h-job').scrollIntoView()")
    check_page(browser, "training")


def test_a_fine_tuning_recipe_takes_a_registered_base_model(
    browser: webdriver.Chrome, console_server: RunningServer, training_set: str
) -> None:
    """frozen_encoder fits a head over a registered encoder's embeddings: the form offers the
    registered models as its base; the job trains on the chosen one and registers a model."""
    encoder = "all-minilm-l6-v2"
    registered = httpx.post(
        f"{console_server.url}/v1/catalog/{encoder}/register",
        headers=console_server.headers,
        timeout=120,
    )
    assert registered.status_code == 201, registered.text
    sign_in(browser, console_server.url, console_server.key)
    browser.get(f"{console_server.url}/ui/training?recipe=slow_textcnn")
    wait_until_loaded(browser)
    assert not browser.find_element(By.ID, "job-base-model").is_displayed()  # from scratch
    Select(browser.find_element(By.ID, "job-recipe")).select_by_value("frozen_encoder")
    base = Select(wait(browser, "#job-base-model"))
    assert encoder in [option.get_attribute("value") for option in base.options]
    base.select_by_value(encoder)
    Select(browser.find_element(By.ID, "job-dataset")).select_by_value(training_set)
    browser.find_element(By.ID, "job-model").send_keys("over-minilm")
    wait(browser, "#job-form button[type=submit]").click()

    def status(b: webdriver.Chrome) -> str:  # read in the page: the job's part is redrawn
        return str(b.execute_script("return document.getElementById('job-status')?.textContent"))

    WebDriverWait(browser, 180).until(lambda b: status(b) in ("succeeded", "failed"))
    assert status(browser) == "succeeded", browser.find_element(By.ID, "job").text
    job_id = browser.current_url.split("job=")[1]
    job = httpx.get(
        f"{console_server.url}/v1/training/jobs/{job_id}", headers=console_server.headers
    ).json()
    assert job["base_model"] == encoder
    assert job["base_version"].startswith(f"{encoder}:")  # pinned when the job was created
    assert wait(browser, "#registered-model").text == job["fine_tuned_model"]
    assert console_errors(browser) == []


def test_the_playground_highlights_entities_in_the_text(
    browser: webdriver.Chrome, console_server: RunningServer
) -> None:
    registered = httpx.post(
        f"{console_server.url}/v1/catalog/en-core-web-sm/register",
        headers=console_server.headers,
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    browser.get(f"{console_server.url}/ui/playground?model=en-core-web-sm")
    wait_until_loaded(browser)
    wait_text(browser, "#pg-task", "token-classification")
    field = browser.find_element(By.ID, "pg-texts")
    field.clear()
    field.send_keys("Alice flew from Paris to <b>Berlin</b> on Monday.")
    wait(browser, "#playground-form button[type=submit]").click()
    WebDriverWait(browser, 60).until(  # spaCy loads on the first request
        lambda b: b.find_elements(By.CSS_SELECTOR, "#result mark")
    )
    marks = [
        (mark.get_attribute("data-label"), mark.text)
        for mark in browser.find_elements(By.CSS_SELECTOR, "#result mark")
    ]
    # Each entity is marked in place, its label beside it.
    assert ("GPE", "ParisGPE") in marks
    assert "<b>" in browser.find_element(By.ID, "result").text  # the input's HTML, as text
    assert browser.find_elements(By.CSS_SELECTOR, "#result b") == []
    screenshot(browser, "playground-ner")
    assert console_errors(browser) == []


def test_the_model_page_renders_stored_html_as_text(
    browser: webdriver.Chrome, console_server: RunningServer, stored_xss: str
) -> None:
    browser.get(f"{console_server.url}/ui/models/xss-model")
    wait_until_loaded(browser)
    wait_text(browser, "#versions", "v1")
    assert_rendered_as_text(browser)
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
    browser.get(f"{console_server.url}/ui/models/compare-me")
    wait_until_loaded(browser)
    assert not browser.find_element(By.ID, "alias-form").is_displayed()  # no models:write
    assert browser.find_elements(By.CSS_SELECTOR, "button[aria-label^='Roll back']") == []
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


def test_pages_fit_a_narrow_screen(
    browser: webdriver.Chrome, console_server: RunningServer, two_versions: str
) -> None:
    browser.set_window_size(390, 844)
    try:
        for path, name in (("/ui/", "overview-narrow"), (f"/ui/models/{two_versions}", None)):
            browser.get(f"{console_server.url}{path}")
            wait_until_loaded(browser)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, path
            if name:
                screenshot(browser, name)
        assert console_errors(browser) == []
    finally:
        browser.set_window_size(1280, 900)


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
    expected = {"sign-in.png", "overview.png", "keys.png", "model.png", "model-compare.png"}
    expected |= {"usage.png", "audit.png", "playground.png", "datasets.png", "training.png"}
    assert expected <= {p.name for p in shots.iterdir()}
