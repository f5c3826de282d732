"""The console's rollout, optimization, evaluation and lineage pages in real headless Chromium:
a 90/10 split set from the model page's form, listed with what each version did and ended; a
gate's refusal shown; an optimization job started from its form with its deltas against the
parent; an evaluation's confusion matrix; the lineage graph's dataset, job and version nodes.
Every page is checked for console errors, labelled inputs and keyboard reach, and
photographed into docs/console/.

The model's versions are tiny BERT classifiers that each answer one label for every text
(`forced_label`): version 1 "negative", version 2 "positive", so a gate on a mostly negative
file refuses to move `production` from 1 to 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from openmaas import Client
from tests.e2e.browser import (
    ROOT,
    SCREENSHOTS,
    check_page,
    console_errors,
    require_browser,
    screenshot,
    sign_in,
    wait,
    wait_text,
    wait_until_loaded,
)
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.runtimes.tiny_models import build_bert

XSS = '<img src=x id=xss onerror="document.title=1">'
MODEL = "canary"
LABELS = ("negative", "positive")
# A worker's first job waits for torch and the exporter to import (a minute or two on a
# busy 2-core machine).
JOB_WAIT_S = 240


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """This module's server: one job worker (optimization and evaluation jobs), and none of
    the training page's extra recipes, whose import would slow the server's start."""
    require_browser()
    running = start_server(
        tmp_path_factory.mktemp("rollout-console") / "home",
        {"OPENMAAS_WORKERS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(console_server: RunningServer) -> Iterator[Client]:
    with Client(console_server.url, api_key=console_server.key) as client:
        yield client


@pytest.fixture(scope="module")
def canary(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("canary")
    for number, label in enumerate(LABELS, start=1):
        directory = build_bert(
            tmp / label, head="sequence-classification", labels=LABELS, forced_label=label
        )
        assert sdk.upload(MODEL, directory).version == number
    sdk.set_alias(MODEL, "production", 1)
    return MODEL


@pytest.fixture(scope="module")
def dev_file(console_server: RunningServer) -> str:
    """30 labelled reviews, 21 negative; the first holds HTML (a worst example of a version
    that answers "positive", shown as text)."""
    rows = [{"text": XSS, "label": "negative"}]
    rows += [{"text": f"film {i}", "label": LABELS[i % 10 >= 7]} for i in range(1, 30)]
    response = httpx.post(
        f"{console_server.url}/v1/datasets",
        files={"file": ("dev.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())},
        headers=console_server.headers,
        timeout=60,
    )
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


@pytest.fixture(scope="module")
def signed_in(browser: webdriver.Chrome, console_server: RunningServer) -> webdriver.Chrome:
    sign_in(browser, console_server.url, console_server.key)
    return browser


def assert_rendered_as_text(browser: webdriver.Chrome) -> None:
    assert browser.find_elements(By.ID, "xss") == []
    assert XSS in browser.find_element(By.TAG_NAME, "main").text


def only_refusals(browser: webdriver.Chrome, status: int) -> None:
    """The console's only errors are the API's refusals (a resource that answered `status`)."""
    errors = [e["message"] for e in console_errors(browser)]
    assert all(f"status of {status}" in message for message in errors), errors


def classify(server: RunningServer, times: int) -> None:
    with httpx.Client(headers=server.headers, timeout=60) as http:
        for _ in range(times):
            answer = http.post(f"{server.url}/v1/classify", json={"model": MODEL, "input": "hi"})
            assert answer.status_code == 200, answer.text


def split_rows(browser: webdriver.Chrome) -> dict[str, list[str]]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#traffic .split tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    return {row[0]: row for row in cells}


def test_a_split_set_from_the_form_is_listed_with_its_figures_and_ended(
    signed_in: webdriver.Chrome, console_server: RunningServer, canary: str
) -> None:
    browser = signed_in
    browser.get(f"{console_server.url}/ui/models/{canary}")
    wait_until_loaded(browser)
    wait_text(browser, "#traffic", "No alias has a traffic split")
    Select(browser.find_element(By.ID, "traffic-alias")).select_by_value("production")
    browser.find_element(By.ID, "weight-1").send_keys("90")
    browser.find_element(By.ID, "weight-2").send_keys("10")
    browser.find_element(By.ID, "traffic-sticky").send_keys("x-user-id")
    browser.find_element(By.ID, "traffic-reason").send_keys("canary at 10%")
    wait(browser, "#traffic-form button[type=submit]").click()
    wait_text(browser, "#status", "production split: v1 90, v2 10")
    wait_text(browser, "#traffic", "baseline v1")
    classify(console_server, 30)  # no sticky header: spread at random, 90/10
    browser.refresh()
    wait_until_loaded(browser)
    wait_text(browser, "#traffic", "sticky by header x-user-id")
    rows = split_rows(browser)
    assert rows["v1"][1:4] == ["baseline", "90", "90%"]
    assert rows["v2"][1:4] == ["candidate", "10", "10%"]
    assert int(rows["v1"][4]) + int(rows["v2"][4]) == 30  # requests, as the API counted them
    assert rows["v1"][7] != ""  # p50 ms
    api = httpx.get(
        f"{console_server.url}/v1/registry/models/{canary}/traffic",
        headers=console_server.headers,
    ).json()["data"]
    assert [split["versions"] for split in api] == [{"1": 90, "2": 10}]
    browser.execute_script("document.getElementById('h-traffic').scrollIntoView()")
    check_page(browser, "model-traffic")
    wait(browser, "button[aria-label='End the split of production']").click()
    wait_text(browser, "#status", "The split of production ended")
    wait_text(browser, "#traffic", "No alias has a traffic split")
    assert (
        httpx.get(
            f"{console_server.url}/v1/registry/models/{canary}/traffic",
            headers=console_server.headers,
        ).json()["data"]
        == []
    )
    assert console_errors(browser) == []


def test_a_gate_refusal_is_shown(
    signed_in: webdriver.Chrome, console_server: RunningServer, canary: str, dev_file: str
) -> None:
    browser = signed_in
    policy = httpx.put(
        f"{console_server.url}/v1/registry/models/{canary}/aliases/production/policy",
        json={"eval_file": dev_file, "metric": "accuracy"},
        headers=console_server.headers,
        timeout=60,
    )
    assert policy.status_code == 200, policy.text
    browser.get(f"{console_server.url}/ui/models/{canary}")
    wait_until_loaded(browser)
    wait_text(browser, "#gates", f"accuracy on {dev_file}")
    browser.find_element(By.ID, "alias-name").send_keys("production")
    Select(browser.find_element(By.ID, "alias-version")).select_by_value("2")
    wait(browser, "#alias-form button[type=submit]").click()
    WebDriverWait(browser, 60).until(  # both versions are scored first
        lambda b: "Gate refused" in b.find_element(By.ID, "status").text
    )
    refused = wait(browser, "#gates [data-outcome='refused']")
    assert "accuracy" in refused.text
    assert sdk_aliases(console_server, canary) == {"production": 1}
    browser.execute_script("document.getElementById('h-gates').scrollIntoView()")
    screenshot(browser, "model-gates")
    only_refusals(browser, 409)


def sdk_aliases(server: RunningServer, name: str) -> dict[str, int]:
    response = httpx.get(
        f"{server.url}/v1/registry/models/{name}/aliases", headers=server.headers, timeout=30
    )
    aliases: dict[str, int] = response.json()
    return aliases


def job_finished(browser: webdriver.Chrome) -> str | None:
    # Read in the page: the job's part is drawn again every second while it runs.
    status: str | None = browser.execute_script(
        "return document.getElementById('job-status')?.textContent ?? null"
    )
    return status if status in ("succeeded", "failed", "cancelled") else None


def test_an_optimization_job_from_the_form_shows_its_deltas(
    signed_in: webdriver.Chrome, console_server: RunningServer, canary: str
) -> None:
    browser = signed_in
    browser.get(f"{console_server.url}/ui/optimization?model={canary}:1")
    wait_until_loaded(browser)
    Select(browser.find_element(By.ID, "opt-method")).select_by_value("quantize")
    mode = wait(browser, "#set-mode")  # the form is built from the method's defaults
    assert mode.get_attribute("value") == "dynamic"
    check_page(browser, "optimization")
    # A value the API refuses, holding HTML: its message is shown as text.
    mode.clear()
    mode.send_keys(XSS)
    wait(browser, "#opt-form button[type=submit]").click()
    wait_text(browser, "#status", "mode")
    assert browser.find_elements(By.ID, "xss") == []
    assert XSS in browser.find_element(By.ID, "status").text
    only_refusals(browser, 400)
    mode.clear()
    mode.send_keys("dynamic")
    wait(browser, "#opt-form button[type=submit]").click()
    status = WebDriverWait(browser, JOB_WAIT_S).until(job_finished)
    assert status == "succeeded", browser.find_element(By.ID, "job").text
    deltas = wait(browser, "#deltas-table")
    figures = {
        row.find_element(By.TAG_NAME, "th").text: [
            td.text for td in row.find_elements(By.TAG_NAME, "td")
        ]
        for row in deltas.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    for paired in ("p50_latency_ms_batch1", "throughput_per_s_batch32", "size_mb"):
        parent, child, _change, ratio = figures[paired]
        assert float(parent) > 0, paired
        assert float(child) > 0, paired
        assert ratio.endswith("\u00d7"), paired  # the ratio of the two
    assert "builtin_agreement_with_parent" in figures  # quality against the parent
    wait_text(browser, "#events", "registered")
    link = wait(browser, "#registered-version")
    assert link.text.startswith(f"{canary}-int8:")
    browser.execute_script("document.getElementById('h-job').scrollIntoView()")
    screenshot(browser, "optimization-job")
    assert console_errors(browser) == []


def test_an_evaluation_shows_its_confusion_matrix(
    signed_in: webdriver.Chrome, console_server: RunningServer, canary: str, dev_file: str
) -> None:
    browser = signed_in
    browser.get(f"{console_server.url}/ui/evaluations")
    wait_until_loaded(browser)
    check_page(browser, "evaluations")
    browser.find_element(By.ID, "eval-model").send_keys(f"{canary}:2")
    Select(browser.find_element(By.ID, "eval-file")).select_by_value(dev_file)
    browser.find_element(By.ID, "eval-compare").send_keys(f"{canary}:1")
    wait(browser, "#eval-form button[type=submit]").click()
    matrix = WebDriverWait(browser, JOB_WAIT_S).until(
        lambda b: b.find_elements(By.ID, "confusion-matrix")
    )[0]
    counts = [
        [int(td.text) for td in row.find_elements(By.TAG_NAME, "td")]
        for row in matrix.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    # Version 2 answers "positive" for all 30: 21 negatives and 9 positives, all predicted so.
    assert counts == [[0, 21], [0, 9]]
    wait_text(browser, "#report", "accuracy")
    assert "0.3000" in browser.find_element(By.ID, "report").text
    assert browser.find_element(By.ID, "per-class-chart").size["height"] > 0
    wait_text(browser, "#worst", "film")
    assert_rendered_as_text(browser)  # a file row holding HTML
    browser.execute_script("document.getElementById('h-evaluation').scrollIntoView()")
    screenshot(browser, "evaluation-report")
    assert console_errors(browser) == []


def test_the_lineage_graph_links_datasets_jobs_and_versions(
    signed_in: webdriver.Chrome, console_server: RunningServer, canary: str, dev_file: str
) -> None:
    browser = signed_in
    browser.get(f"{console_server.url}/ui/models/{canary}")
    wait_until_loaded(browser)
    graph = wait(browser, "#lineage-graph", visible=False)
    nodes = {
        node.get_attribute("data-id"): node.get_attribute("data-kind")
        for node in graph.find_elements(By.CSS_SELECTOR, ".lineage-node")
    }
    assert nodes[f"dataset:{dev_file}"] == "dataset"  # the file the evaluation scored on
    assert nodes[f"version:{canary}:1"] == "version"
    assert "optimization" in nodes.values()  # the quantize job, from version 1
    assert "evaluation" in nodes.values()
    children = [node for node in nodes if node.startswith(f"version:{canary}-int8:")]
    assert children, nodes  # the other model's version made from this one
    edges = {
        (edge.get_attribute("data-from"), edge.get_attribute("data-to"))
        for edge in graph.find_elements(By.CSS_SELECTOR, "path[data-from]")
    }
    job = next(f for f, t in edges if t == children[0])
    assert (f"version:{canary}:1", job) in edges  # parent → job → child
    link = graph.find_element(By.CSS_SELECTOR, f"a[data-id='{children[0]}']")
    href = link.get_dom_attribute("href")  # an SVG link's attribute, as written
    assert href == f"/ui/models/{canary}-int8"
    browser.execute_script("document.getElementById('h-lineage').scrollIntoView()")
    check_page(browser, "model-lineage")
    browser.get(f"{console_server.url}{href}")
    wait_until_loaded(browser)
    other = wait(browser, "#lineage-graph", visible=False)
    kinds = [n.get_attribute("data-kind") for n in other.find_elements(By.CSS_SELECTOR, "a")]
    assert kinds.count("version") == 2  # parent → job → version
    assert "optimization" in kinds
    assert console_errors(browser) == []


def test_a_key_without_models_write_sees_splits_but_no_controls(
    browser: webdriver.Chrome, console_server: RunningServer, canary: str, sdk: Client
) -> None:
    sdk.set_traffic(canary, "production", {1: 50, 2: 50})
    response = httpx.post(
        f"{console_server.url}/v1/keys",
        json={"name": "reader", "scopes": ["models:read"]},
        headers=console_server.headers,
        timeout=30,
    )
    sign_in(browser, console_server.url, response.json()["key"])
    browser.get(f"{console_server.url}/ui/models/{canary}")
    wait_until_loaded(browser)
    wait_text(browser, "#traffic", "baseline v1")
    assert not browser.find_element(By.ID, "traffic-form").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#traffic button") == []
    nav = [link.text for link in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert "Optimization" not in nav  # it needs `training`
    assert "Evaluations" not in nav
    # Without `training` the graph shows what the versions record; the jobs' lists refuse.
    wait(browser, "#lineage-graph", visible=False)
    only_refusals(browser, 403)


def test_screenshots_are_in_the_docs() -> None:
    expected = {"model-traffic.png", "model-gates.png", "model-lineage.png"}
    expected |= {"optimization.png", "optimization-job.png", "evaluations.png"}
    expected |= {"evaluation-report.png"}
    assert expected <= {p.name for p in SCREENSHOTS.iterdir()}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()
    assert all(f"console/{name}" in docs for name in expected)
