"""A bounded schemathesis run over the whole OpenAPI finds no server error (issue 13).

Every operation the server documents gets generated requests, valid and invalid (examples,
boundary cases, then random ones), with the admin key, against a real server over real HTTP.
The only check is that nothing answers 5xx; conformance of status codes and bodies is another
matter. The seed is fixed and generation deterministic, so a run repeats exactly; the audit's
run found 14 server errors on 4 operations in 34k requests.

A failure prints each request as curl. It runs with the suite; `-m "not schemathesis"` leaves
it out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import engine
from schemathesis.engine import Status, events

from tests.integration.authed import AUTH
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.runtimes.tiny_models import build_bert, build_gpt2

pytestmark = [pytest.mark.integration, pytest.mark.schemathesis]

SEED = 13
# Per operation and phase; with the boundary cases of the coverage phase the run sends
# about 6,000 requests, every operation among them (the test prints the count).
MAX_EXAMPLES = 18
REQUEST_TIMEOUT_S = 30.0


# Tiny models the run names half the time where an operation takes a model, so requests reach
# the registry, the engine and the runtimes instead of stopping at 404.
MODELS = ("fuzz-classifier", "fuzz-embedder", "fuzz-gpt2")
# Limits of 0 requests a minute on the admin's project or key would stop the run: the limits
# operations act on a project and a key of their own.
SPARE_PROJECT = "fuzz-spare"
# The delete operations run first: they name a model of their own, or nothing would be left.
DOOMED = "fuzz-doomed"
MODEL_PARAMETERS = ("path.name", "path.model_name", "path.model_id", "query.model", "body.model")


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("schemathesis")
    running = start_server(root / "home", {"OPENMAAS_THREADS": "2"})
    try:  # also when a registration fails: the server would outlive the run
        _register_models(running, root / "models")
        yield running
    finally:
        stop_server(running)


def _register_models(server: RunningServer, root: Path) -> None:
    directories = {
        "fuzz-classifier": build_bert(
            root / "classifier", head="sequence-classification", labels=["no", "yes"]
        ),
        "fuzz-embedder": build_bert(root / "embedder"),
        "fuzz-gpt2": build_gpt2(root / "gpt2"),
        DOOMED: build_bert(root / "doomed"),
    }
    for name, directory in directories.items():
        response = httpx.post(
            f"{server.url}/v1/registry/models/{name}/versions",
            headers=AUTH,
            json={"source": {"type": "path", "path": str(directory)}},
            timeout=REQUEST_TIMEOUT_S,
        )
        assert response.status_code == 201, response.text


def _spare_key_id(server: RunningServer) -> int:
    for path, body in (
        ("projects", {"name": SPARE_PROJECT}),
        ("keys", {"name": "schemathesis-spare", "scopes": ["inference"], "project": SPARE_PROJECT}),
    ):
        response = httpx.post(f"{server.url}/v1/{path}", headers=AUTH, json=body)
        assert response.status_code == 201, response.text
    key_id: int = response.json()["id"]
    return key_id


def _config(spare_key_id: int) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": AUTH,
            "workers": 1,  # one at a time: the order of requests, and so the run, repeats
            "request-timeout": REQUEST_TIMEOUT_S,
            "suppress-health-check": ["all"],
            "dictionaries": {
                "models": {"values": [*MODELS, f"{MODELS[0]}:1"]},
                "doomed": {"values": [DOOMED]},
            },
            "parameters": {
                key: {"dictionary": "models", "probability": 0.5} for key in MODEL_PARAMETERS
            },
            "warnings": False,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            # Stateful chains need links the schema does not declare.
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
            # A generated key id could name the admin key this run uses: revoking or limiting
            # it would stop the run, so these operations act on a key of their own.
            "operations": [
                {
                    "include-path-regex": r"^/v1/keys/\{key_id\}/(revoke|limits)$",
                    "parameters": {"key_id": spare_key_id},
                },
                {
                    "include-path": "/v1/projects/{name}/limits",
                    "parameters": {"path.name": SPARE_PROJECT},
                },
                {
                    "include-method": "DELETE",
                    "include-path-regex": r"^/v1/registry/models/\{name\}",
                    "parameters": {"path.name": {"dictionary": "doomed", "probability": 0.5}},
                },
            ],
        }
    )


def _server_errors(event: events.ScenarioFinished) -> list[str]:
    found = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                found.append(f"{event.label}: {check.failure_info.code_sample}")
    return found


# About 2 minutes on two busy cores; the suite's 300 s default leaves too little margin.
@pytest.mark.timeout(900)
def test_no_operation_answers_a_server_error(fuzzed_server: RunningServer) -> None:
    config = _config(_spare_key_id(fuzzed_server))
    schema = schemathesis.openapi.from_url(
        f"{fuzzed_server.url}/openapi.json", config=config, headers=AUTH
    )
    failures: list[str] = []
    errors: list[str] = []
    tested = 0
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested += len(event.recorder.cases)
            failures.extend(_server_errors(event))
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "info", event)))
    assert not errors, "\n".join(errors)
    assert not failures, "\n\n".join(failures)
    print(f"{tested} requests")
    assert tested > 1000  # the run reached the operations
    # The admin key survived the run, so every request it sent was authenticated.
    assert httpx.get(f"{fuzzed_server.url}/v1/keys/self", headers=AUTH).status_code == 200
