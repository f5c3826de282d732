"""The console's playgrounds in real headless Chromium, each calling a real model through the
public API: embeddings (a similarity matrix whose values agree with the API's vectors), rerank,
translation, summarization, chat streamed token by token, and transcription of an uploaded
file and of a recording from the microphone (Chromium's fake microphone plays speech that
espeak-ng synthesized). Each shows the request as curl and as Python with the `openai` client,
and both are run. Screenshots go into docs/console/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.browser import (
    check_page,
    console_errors,
    open_browser,
    require_browser,
    sign_in,
    wait,
    wait_text,
    wait_until_loaded,
)
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.runtimes.tiny_models import build_gpt2

# What espeak-ng says into Chromium's fake microphone, and the words Whisper must hear in it.
SPOKEN = "Please open the window and turn on the light."
HEARD = ("please", "open", "window", "light")
# Models load on their first request: Whisper and MiniLM take seconds on a busy machine.
ANSWER_S = 120.0
CATALOG = ("all-minilm-l6-v2", "apertium-eng-spa", "textrank", "whisper-tiny-en")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """SPOKEN as a 16-bit mono WAV (espeak-ng), or None where espeak-ng is not installed."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run([espeak, "-v", "en-us", "-s", "130", "-w", str(path), SPOKEN], check=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_browser()
    running = start_server(tmp_path_factory.mktemp("playgrounds") / "home")
    for name in CATALOG:
        response = httpx.post(
            f"{running.url}/v1/catalog/{name}/register", headers=running.headers, timeout=120
        )
        assert response.status_code == 201, response.text
    gpt2 = build_gpt2(tmp_path_factory.mktemp("gpt2") / "gpt2")
    response = httpx.post(
        f"{running.url}/v1/registry/models/tiny-chat/versions",
        json={"source": {"type": "path", "path": str(gpt2)}},
        headers=running.headers,
        timeout=120,
    )
    assert response.status_code == 201, response.text
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def browser(server: RunningServer, speech: Path | None) -> Iterator[webdriver.Chrome]:
    """Signed in as the admin key; the microphone, where there is speech, plays it once."""
    microphone = (
        [
            "--use-fake-ui-for-media-stream",  # allow the microphone without asking
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech}%noloop",
        ]
        if speech is not None
        else []
    )
    with open_browser(*microphone) as opened:
        sign_in(opened, server.url, server.key)
        yield opened


def choose(browser: webdriver.Chrome, server: RunningServer, model: str, task: str) -> None:
    browser.get(f"{server.url}/ui/playground?model={model}")
    wait_until_loaded(browser)
    wait_text(browser, "#pg-task", task)


def enter_texts(browser: webdriver.Chrome, texts: list[str]) -> None:
    field = browser.find_element(By.ID, "pg-texts")
    field.clear()
    field.send_keys("\n".join(texts))


def run(browser: webdriver.Chrome) -> None:
    wait(browser, "#playground-form button[type=submit]").click()
    WebDriverWait(browser, ANSWER_S).until(
        lambda b: (
            b.find_element(By.ID, "status").text in ("Done.",)
            or "error" in (b.find_element(By.ID, "status").get_attribute("class") or "")
        )
    )
    assert browser.find_element(By.ID, "status").text == "Done."


def api(server: RunningServer, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server.url}{path}", json=body, headers=server.headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def run_snippets(
    browser: webdriver.Chrome, server: RunningServer, cwd: Path | None = None
) -> tuple[str, str]:
    """Run the page's curl and Python snippets as a user would (the key in the environment);
    what each printed."""
    curl = browser.find_element(By.ID, "snippet-curl").text
    python = browser.find_element(By.ID, "snippet-python").text
    env = {**os.environ, "OPENMAAS_API_KEY": server.key}
    printed = []
    for command in (["bash", "-c", curl], [sys.executable, "-c", python]):
        ran = subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=ANSWER_S
        )
        assert ran.returncode == 0, ran.stderr
        printed.append(ran.stdout)
    return printed[0], printed[1]


def test_embeddings_show_a_similarity_matrix_that_agrees_with_the_api(
    browser: webdriver.Chrome, server: RunningServer
) -> None:
    texts = [
        "A cat sleeps on the warm windowsill.",
        "My kitten naps in the sun.",
        "Stock markets fell sharply today.",
        "Shares dropped at the opening bell.",
    ]
    choose(browser, server, "all-minilm-l6-v2", "embedding")
    enter_texts(browser, texts)
    run(browser)
    rows = wait(browser, "#similarity").find_elements(By.CSS_SELECTOR, "tbody tr")
    shown = np.array(
        [[float(td.text) for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    )
    vectors = np.array(
        [
            item["embedding"]
            for item in api(
                server, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": texts}
            )["data"]
        ]
    )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert shown.shape == (4, 4)
    np.testing.assert_allclose(shown, unit @ unit.T, atol=0.0006)  # shown to 3 decimals
    assert shown[0, 1] > shown[0, 2]  # the cats are closer to each other than to the markets
    check_page(browser, "playground-embeddings")
    curl, python = run_snippets(browser, server)
    assert len(json.loads(curl)["data"]) == 4
    assert [line.split()[0] for line in python.splitlines()] == ["0", "1", "2", "3"]


def test_rerank_orders_the_texts_against_a_query_as_the_api_does(
    browser: webdriver.Chrome, server: RunningServer
) -> None:
    documents = [
        "Stock markets fell sharply today.",
        "Cats often sleep on warm windowsills.",
        "The recipe needs two eggs.",
    ]
    query = "Where do cats sleep?"
    choose(browser, server, "all-minilm-l6-v2", "embedding")
    Select(browser.find_element(By.ID, "pg-mode")).select_by_value("rerank")
    wait_text(browser, "#pg-task", "rerank")
    enter_texts(browser, documents)
    field = wait(browser, "#pg-query")
    field.clear()
    field.send_keys(query)
    run(browser)
    shown = [li.text for li in wait(browser, "#ranking").find_elements(By.TAG_NAME, "li")]
    answer = api(
        server, "/v1/rerank", {"model": "all-minilm-l6-v2", "query": query, "documents": documents}
    )
    expected = [f"{r['relevance_score']:.3f} · {documents[r['index']]}" for r in answer["results"]]
    assert shown == expected
    assert "Cats" in shown[0]
    check_page(browser, "playground-rerank")
    curl, python = run_snippets(browser, server)
    assert json.loads(curl)["results"][0]["index"] == 1
    assert "relevance_score" in python


@pytest.mark.parametrize(
    ("model", "task", "texts", "path", "body"),
    [
        (
            "apertium-eng-spa",
            "translation",
            ["The house is big.", "I like the red car."],
            "/v1/translate",
            lambda texts: {"model": "apertium-eng-spa", "input": texts},
        ),
        (
            "textrank",
            "summarization",
            [
                "OpenMaaS serves models. It batches requests to use the machine well.",
                "Metrics are exported for Prometheus. Users call it with clients they have.",
                "Models are versioned, and aliases move between versions.",
            ],
            "/v1/summarize",
            lambda texts: {"model": "textrank", "input": "\n".join(texts)},
        ),
    ],
    ids=["translation", "summarization"],
)
def test_text_to_text_playgrounds_show_what_the_api_answers(
    browser: webdriver.Chrome,
    server: RunningServer,
    model: str,
    task: str,
    texts: list[str],
    path: str,
    body: Any,
) -> None:
    choose(browser, server, model, task)
    enter_texts(browser, texts)
    run(browser)
    shown = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#result p.output")]
    expected = [item["text"] for item in api(server, path, body(texts))["data"]]
    assert shown == expected
    assert all(shown)
    check_page(browser, f"playground-{task}")
    curl, python = run_snippets(browser, server)
    assert [item["text"] for item in json.loads(curl)["data"]] == expected
    assert expected[0] in python


def test_chat_streams_its_answer_token_by_token(
    browser: webdriver.Chrome, server: RunningServer
) -> None:
    choose(browser, server, "tiny-chat", "text-generation")
    enter_texts(browser, ["Tell me a story about a cat."])
    # Each change of the answer, as the page makes it: when, and how long the answer was.
    browser.execute_script(
        """
        window.seen = [];
        new MutationObserver(() => {
          const output = document.getElementById('chat-output');
          if (output) window.seen.push([performance.now(), output.textContent.length]);
        }).observe(document.getElementById('result'),
                   {childList: true, subtree: true, characterData: true});
        """
    )
    run(browser)
    output = browser.find_element(By.ID, "chat-output")
    seen: list[list[float]] = browser.execute_script("return window.seen")
    lengths = [length for _, length in seen if length > 0]
    assert len(output.text) > 0
    assert int(output.get_attribute("data-chunks") or 0) >= 3
    assert len(lengths) >= 3  # the answer grew in steps...
    assert lengths == sorted(lengths)
    assert lengths[0] < lengths[-1]
    growing = [moment for moment, length in seen if 0 < length < lengths[-1]]
    assert len({round(moment) for moment in growing}) >= 2  # ...at different moments
    check_page(browser, "playground-chat")
    curl, python = run_snippets(browser, server)
    assert curl.rstrip().endswith("data: [DONE]")  # the curl asks for the stream too
    assert python.strip()


@pytest.fixture
def needs_speech(speech: Path | None) -> Path:
    if speech is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    return speech


def heard(text: str) -> list[str]:
    words = text.lower()
    return [word for word in HEARD if word in words]


def test_an_uploaded_recording_is_transcribed(
    browser: webdriver.Chrome, server: RunningServer, needs_speech: Path, tmp_path: Path
) -> None:
    choose(browser, server, "whisper-tiny-en", "speech-recognition")
    browser.find_element(By.ID, "pg-audio").send_keys(str(needs_speech))
    run(browser)
    transcript = wait(browser, "#transcript").text
    assert heard(transcript) == list(HEARD), transcript
    check_page(browser, "playground-transcription")
    shutil.copy(needs_speech, tmp_path / "clip.wav")  # the file the snippets name
    curl, python = run_snippets(browser, server, cwd=tmp_path)
    assert heard(json.loads(curl)["text"]) == list(HEARD)
    assert heard(python) == list(HEARD)


def test_speech_recorded_from_the_microphone_is_transcribed(
    browser: webdriver.Chrome, server: RunningServer, needs_speech: Path
) -> None:
    choose(browser, server, "whisper-tiny-en", "speech-recognition")
    seconds = len(needs_speech.read_bytes()) / (22050 * 2)  # espeak-ng: 22.05 kHz, 16 bits
    wait(browser, "#record").click()
    wait_text(browser, "#recording", "Recording")
    time.sleep(seconds + 1.0)  # the fake microphone plays the speech in real time
    wait(browser, "#record-stop").click()
    transcript = (
        WebDriverWait(browser, ANSWER_S)
        .until(lambda b: b.find_elements(By.ID, "transcript"))[0]
        .text
    )
    assert heard(transcript) == list(HEARD), transcript
    assert "Recorded" in browser.find_element(By.ID, "recording").text
    assert console_errors(browser) == []
