"""Malformed input answers 4xx, never 500 (issue 13): each request here once made the server
answer 500, over real HTTP against a real server."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
import pytest

from tests.factories import write_hf_model
from tests.integration import authed
from tests.integration.conftest import RunningServer
from tests.runtimes.tiny_models import build_gpt2

pytestmark = pytest.mark.integration

# Past a signed 64-bit integer: SQLite's driver raised OverflowError on it.
HUGE_ID = "85679111119000354816"
# The first generation loads the model (torch and transformers) on a busy machine.
LOAD_TIMEOUT_S = 120.0


def _assert_client_error(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]


# -- numbers written with digits that `str.isdigit()` accepts and `int()` does not --------------


@pytest.mark.parametrize("version", ["²", "٣", "1_0", " 1", "+1", "0", HUGE_ID])
def test_a_reference_with_a_version_that_is_not_ascii_digits_answers_400(
    shared_server: RunningServer, version: str
) -> None:
    response = authed.post(
        f"{shared_server.url}/v1/embeddings", json={"model": f"x:{version}", "input": "a"}
    )
    _assert_client_error(response)
    assert response.json()["error"]["code"] == "invalid_reference"


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A3", HUGE_ID])
def test_a_v2_path_version_that_is_not_ascii_digits_answers_400(
    shared_server: RunningServer, version: str
) -> None:
    for url in (
        f"{shared_server.url}/v2/models/x/versions/{version}",
        f"{shared_server.url}/v2/models/x/versions/{version}/ready",
    ):
        _assert_client_error(authed.get(url))
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    _assert_client_error(
        authed.post(f"{shared_server.url}/v2/models/x/versions/{version}/infer", json=infer)
    )


def test_a_v2_header_length_in_unicode_digits_answers_400(shared_server: RunningServer) -> None:
    response = authed.post(
        f"{shared_server.url}/v2/models/x/infer",
        content=b'{"inputs": []}',
        headers={
            # "²" in Latin-1, the encoding HTTP header bytes are read in
            "Inference-Header-Content-Length": b"\xb2",
            "Content-Type": "application/octet-stream",
        },
    )
    _assert_client_error(response)


# -- tensor shapes numpy refuses ----------------------------------------------------------------


def test_a_bytes_tensor_with_65_dimensions_answers_400(shared_server: RunningServer) -> None:
    tensor = {"name": "text", "shape": [1] * 65, "datatype": "BYTES", "data": ["a"]}
    response = authed.post(f"{shared_server.url}/v2/models/x/infer", json={"inputs": [tensor]})
    _assert_client_error(response)
    assert "65 dimensions" in response.json()["error"]


def test_a_binary_bytes_tensor_with_65_dimensions_answers_400(
    shared_server: RunningServer,
) -> None:
    data = struct.pack("<I", 1) + b"a"
    header = (
        '{"inputs": [{"name": "text", "shape": [' + ", ".join(["1"] * 65) + "], "
        f'"datatype": "BYTES", "parameters": {{"binary_data_size": {len(data)}}}}}]}}'
    ).encode()
    response = authed.post(
        f"{shared_server.url}/v2/models/x/infer",
        content=header + data,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    _assert_client_error(response)


@pytest.mark.parametrize("datatype", ["BYTES", "FP32"])
def test_an_empty_tensor_with_a_huge_dimension_answers_400(
    shared_server: RunningServer, datatype: str
) -> None:
    # 0 elements match the empty data, but numpy cannot shape an array with a 2**62 dimension.
    tensor = {"name": "text", "shape": [2**62, 0], "datatype": datatype, "data": []}
    response = authed.post(f"{shared_server.url}/v2/models/x/infer", json={"inputs": [tensor]})
    _assert_client_error(response)


# -- ids past what the store can hold -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/keys/{HUGE_ID}"),
        ("POST", f"/v1/keys/{HUGE_ID}/revoke"),
        ("PUT", f"/v1/keys/{HUGE_ID}/limits"),
        ("GET", f"/v1/audit?after_id={HUGE_ID}"),
        ("GET", "/v1/audit?after_id=4e22"),
        ("GET", f"/v1/usage?key_id={HUGE_ID}"),
        ("GET", f"/v1/registry/models/malformed-ids/versions/{HUGE_ID}"),
        ("GET", f"/v1/registry/models/malformed-ids/compare?a=1&b={HUGE_ID}"),
        ("GET", f"/v1/training/jobs/job-x/events?after={HUGE_ID}"),
    ],
)
def test_an_id_past_64_bits_answers_400(
    shared_server: RunningServer, method: str, path: str
) -> None:
    body: dict[str, object] | None = {"limits": {}} if method == "PUT" else None
    response = httpx.request(method, f"{shared_server.url}{path}", headers=authed.AUTH, json=body)
    _assert_client_error(response)


@pytest.mark.parametrize("route", ["audit", "usage"])
@pytest.mark.parametrize(
    "query",
    [
        "start=9999-12-31T23:59:59-23:59",  # the year 10000 in UTC
        "end=0001-01-01T00:00:00%2B23:59",  # the year 0 in UTC
        "end=0001-01-01T00:00:00",  # the default start, 30 days before, is the year 0
    ],
)
def test_a_timestamp_outside_the_years_1_to_9999_in_utc_answers_400(
    shared_server: RunningServer, route: str, query: str
) -> None:
    response = authed.get(f"{shared_server.url}/v1/{route}?{query}")
    if route == "audit" and query.endswith("T00:00:00"):
        assert response.status_code == 200, response.text  # a window that holds nothing
    else:
        _assert_client_error(response)


def test_an_alias_to_a_version_past_64_bits_answers_400(
    shared_server: RunningServer, tiny_classifier: str
) -> None:
    response = authed.put(
        f"{shared_server.url}/v1/registry/models/{tiny_classifier}/aliases/prod",
        json={"version": int(HUGE_ID)},
    )
    _assert_client_error(response)


@pytest.mark.parametrize("parent_version", [int(HUGE_ID), 0, -5])
def test_a_lineage_parent_version_outside_1_to_64_bits_answers_400(
    shared_server: RunningServer, tmp_path: Path, parent_version: int
) -> None:
    response = authed.post(
        f"{shared_server.url}/v1/registry/models/malformed-lineage/versions",
        json={
            "source": {"type": "path", "path": str(write_hf_model(tmp_path / "model"))},
            "lineage": {"parent_version": parent_version},
        },
    )
    _assert_client_error(response)


# -- empty or malformed source names ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        {"type": "package", "distribution": ""},
        {"type": "spacy", "package": ""},
        {"type": "path", "path": ""},
        {"type": "hub", "repo_id": ""},
    ],
)
def test_an_empty_source_name_answers_400(
    shared_server: RunningServer, source: dict[str, str]
) -> None:
    response = authed.post(
        f"{shared_server.url}/v1/registry/models/malformed-source/versions",
        json={"source": source},
    )
    _assert_client_error(response)


@pytest.mark.parametrize("package", ["x.", ".x", "."])
def test_a_relative_or_dotted_package_name_answers_400(
    shared_server: RunningServer, package: str
) -> None:
    """A package source names a top-level package: anything dotted is refused before any
    lookup (find_spec on a dotted name imports its parent)."""
    response = authed.post(
        f"{shared_server.url}/v1/registry/models/malformed-source/versions",
        json={"source": {"type": "spacy", "package": package}},
    )
    _assert_client_error(response, 400)


# -- sampling parameters at their edges ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2(shared_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_gpt2(tmp_path_factory.mktemp("malformed-gpt2") / "gpt2")
    response = authed.post(
        f"{shared_server.url}/v1/registry/models/malformed-gpt2/versions",
        json={"source": {"type": "path", "path": str(directory)}},
    )
    assert response.status_code == 201, response.text
    return "malformed-gpt2"


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, int(HUGE_ID)])
def test_a_seed_past_64_bits_answers_400(
    shared_server: RunningServer, tiny_gpt2: str, seed: int
) -> None:
    for route, prompt in (("chat/completions", "messages"), ("completions", "prompt")):
        body = {
            "model": tiny_gpt2,
            prompt: [{"role": "user", "content": "hi"}] if prompt == "messages" else "hi",
            "max_tokens": 2,
            "seed": seed,
        }
        response = authed.post(f"{shared_server.url}/v1/{route}", json=body)
        _assert_client_error(response)
        assert response.json()["error"]["param"] == "seed"


@pytest.mark.parametrize(
    "sampling", [{"top_p": 1e-300}, {"temperature": 1e-300}, {"seed": 2**64 - 1}]
)
def test_sampling_at_the_edges_of_its_ranges_answers(
    shared_server: RunningServer, tiny_gpt2: str, sampling: dict[str, float]
) -> None:
    # A top_p or temperature that rounds to 0 in float32 left no token to draw (a 500).
    response = authed.post(
        f"{shared_server.url}/v1/completions",
        json={"model": tiny_gpt2, "prompt": "hi", "max_tokens": 3, **sampling},
        timeout=LOAD_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


# -- strings that are not Unicode text -----------------------------------------------------------

LONE_SURROGATE = rb'"\ud800"'


def test_a_lone_surrogate_in_tags_answers_400_and_listings_keep_working(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    # It was stored, and every listing that showed the model answered 500 from then on.
    name = "malformed-surrogate"
    register = authed.post(
        f"{shared_server.url}/v1/registry/models/{name}/versions",
        json={"source": {"type": "path", "path": str(write_hf_model(tmp_path / "model"))}},
    )
    assert register.status_code == 201, register.text
    for method, path in (("PATCH", name), ("PATCH", f"{name}/versions/1")):
        response = httpx.request(
            method,
            f"{shared_server.url}/v1/registry/models/{path}",
            headers={**authed.AUTH, "Content-Type": "application/json"},
            content=b'{"tags": {"t": ' + LONE_SURROGATE + b"}}",
        )
        _assert_client_error(response)
        assert "surrogate" in response.json()["error"]["message"]
    assert authed.get(f"{shared_server.url}/v1/registry/models").status_code == 200
    assert authed.get(f"{shared_server.url}/v1/registry/models/{name}").status_code == 200


@pytest.fixture(scope="module")
def tiny_classifier(shared_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = write_hf_model(tmp_path_factory.mktemp("malformed-classifier") / "model")
    response = authed.post(
        f"{shared_server.url}/v1/registry/models/malformed-classifier/versions",
        json={"source": {"type": "path", "path": str(directory)}},
    )
    assert response.status_code == 201, response.text
    return "malformed-classifier"


def test_a_lone_surrogate_in_an_input_answers_400(
    shared_server: RunningServer, tiny_classifier: str, tiny_gpt2: str
) -> None:
    # The tokenizer raised a TypeError on it (a 500).
    for route, model, field in (
        ("classify", tiny_classifier, b'"input"'),
        ("moderations", tiny_classifier, b'"input"'),
        ("completions", tiny_gpt2, b'"prompt"'),
    ):
        response = httpx.post(
            f"{shared_server.url}/v1/{route}",
            headers={**authed.AUTH, "Content-Type": "application/json"},
            content=b'{"model": "%s", %s: %s}' % (model.encode(), field, LONE_SURROGATE),
            timeout=LOAD_TIMEOUT_S,
        )
        _assert_client_error(response)


def test_a_surrogate_pair_is_one_character(shared_server: RunningServer, tmp_path: Path) -> None:
    name = "malformed-emoji"
    register = authed.post(
        f"{shared_server.url}/v1/registry/models/{name}/versions",
        json={"source": {"type": "path", "path": str(write_hf_model(tmp_path / "model"))}},
    )
    assert register.status_code == 201, register.text
    response = httpx.patch(
        f"{shared_server.url}/v1/registry/models/{name}",
        headers={**authed.AUTH, "Content-Type": "application/json"},
        content=rb'{"tags": {"mood": "\ud83d\ude00"}}',
    )
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == {"mood": "\U0001f600"}
