"""`/v1/files` through the official `openai` client and `/v1/datasets` through the SDK and
the CLI, against a real server: uploads, validation reports, splits, project isolation,
the training scope, size limits and the audit log.

Real data (AG News, CoNLL-2003) comes from ../shared/datasets, in small slices.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from openmaas import APIError, Client
from openmaas.auth.entities import SYSTEM
from openmaas.datasets.service import DatasetService, DatasetStatus
from openmaas.errors import NotFound
from openmaas.registry.artifacts import ArtifactStore
from openmaas.store.database import Database
from tests.conftest import SHARED_DATASETS
from tests.factories import member
from tests.integration.conftest import RunningServer, assert_api_error, start_server, stop_server

pytestmark = pytest.mark.integration

DATA = SHARED_DATASETS or Path("shared-datasets-missing")
AG_NEWS = DATA / "ag_news" / "test.csv"
CONLL = DATA / "conll2003" / "dev.txt"
OPENMAAS = Path(sys.executable).parent / "openmaas"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="needs the shared datasets")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def head_lines(path: Path, count: int) -> bytes:
    with path.open("rb") as handle:
        return b"".join(handle.readline() for _ in range(count))


def chat_jsonl(count: int) -> bytes:
    lines = []
    for i in range(count):
        messages = [
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": str(2 * i)},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The module's one server; its 1 MB dataset limit (every other upload here is far
    smaller) is the one test_an_oversized_upload_is_a_413 goes over."""
    running = start_server(
        tmp_path_factory.mktemp("shared") / "home", {"OPENMAAS_MAX_DATASET_MB": "1"}
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def openai_admin(shared_server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{shared_server.url}/v1", api_key=shared_server.key, max_retries=0
    ) as client:
        yield client


def new_key(sdk: Client, *scopes: str, project: str = "default") -> str:
    return sdk.create_key(f"ds-{time.monotonic_ns()}", list(scopes), project=project).key


# -- the OpenAI Files API ---------------------------------------------------------------------


def test_the_openai_client_creates_lists_reads_and_deletes_files(
    openai_admin: openai.OpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(chat_jsonl(12))
    with path.open("rb") as handle:
        created = openai_admin.files.create(file=handle, purpose="fine-tune")
    assert created.id.startswith("file-")
    assert (created.object, created.purpose, created.status) == ("file", "fine-tune", "processed")
    assert (created.filename, created.bytes) == ("train.jsonl", path.stat().st_size)
    assert created.status_details is None
    assert abs(created.created_at - time.time()) < 60

    listed = openai_admin.files.list()
    assert created.id in [item.id for item in listed.data]
    assert created.id in [item.id for item in openai_admin.files.list(purpose="fine-tune").data]
    assert openai_admin.files.list(purpose="batch").data == []
    assert openai_admin.files.retrieve(created.id) == created
    assert openai_admin.files.content(created.id).read() == path.read_bytes()

    deleted = openai_admin.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        openai_admin.files.retrieve(created.id)


def test_the_raw_shapes_are_openais(shared_server: RunningServer) -> None:
    url, headers = f"{shared_server.url}/v1/files", bearer(shared_server.key)
    files = {"file": ("a.jsonl", chat_jsonl(3), "application/jsonl")}
    created = httpx.post(url, headers=headers, files=files, data={"purpose": "fine-tune"})
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {
        "id",
        "object",
        "bytes",
        "created_at",
        "filename",
        "purpose",
        "status",
    }  # status_details only when the file has problems (OpenAI: a string or absent)
    page = httpx.get(url, headers=headers, params={"limit": 1}).json()
    assert (page["object"], len(page["data"]), page["first_id"]) == ("list", 1, body["id"])
    deleted = httpx.delete(f"{url}/{body['id']}", headers=headers).json()
    assert deleted == {"id": body["id"], "object": "file", "deleted": True}


def test_a_file_failing_validation_is_kept_with_status_error(
    openai_admin: openai.OpenAI, sdk: Client, tmp_path: Path
) -> None:
    path = tmp_path / "broken.jsonl"
    rows = [{"text": "good", "label": "pos"}, {"text": "bad"}, {"text": "", "label": "neg"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with path.open("rb") as handle:
        created = openai_admin.files.create(file=handle, purpose="fine-tune")
    assert created.status == "error"
    assert created.status_details is not None
    assert "line 2" in created.status_details
    report = sdk.get_dataset(created.id).report
    assert [(p.line, p.code, p.column) for p in report.problems][:2] == [
        (2, "missing_label", "label"),
        (3, "empty_text", "text"),
    ]
    assert all(p.hint for p in report.problems)


def test_unreadable_files_and_other_purposes_are_a_400(openai_admin: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        openai_admin.files.create(file=("empty.jsonl", b""), purpose="fine-tune")
    assert exc.value.code == "invalid_file"
    with pytest.raises(openai.BadRequestError) as exc:
        openai_admin.files.create(file=("a.jsonl", chat_jsonl(2)), purpose="assistants")
    assert exc.value.param == "purpose"


def test_an_oversized_upload_is_a_413(shared_server: RunningServer) -> None:
    server = shared_server
    line = json.dumps({"text": "x" * 1000, "label": "a"}).encode() + b"\n"
    # Just over the setting: the service refuses it, naming the setting.
    over = httpx.post(
        f"{server.url}/v1/files",
        headers=bearer(server.key),
        files={"file": ("big.jsonl", line * 1100, "application/jsonl")},
        data={"purpose": "fine-tune"},
        timeout=60,
    )
    assert over.status_code == 413, over.text[:300]
    assert "OPENMAAS_MAX_DATASET_MB" in over.json()["error"]["message"]
    # Far over: the body limit stops it before it is read.
    far = httpx.post(
        f"{server.url}/v1/files",
        headers=bearer(server.key),
        files={"file": ("big.jsonl", line * 3 * 1024, "application/jsonl")},
        data={"purpose": "fine-tune"},
        timeout=60,
    )
    assert far.status_code == 413
    assert far.json()["error"]["code"] == "payload_too_large"


# -- /v1/datasets ---------------------------------------------------------------------------


@needs_data
def test_a_csv_dataset_with_schema_stats_report_and_splits(sdk: Client, tmp_path: Path) -> None:
    path = tmp_path / "ag_news.csv"
    path.write_bytes(head_lines(AG_NEWS, 500))
    seen: list[int] = []
    dataset = sdk.upload_dataset(path, progress=lambda event: seen.append(event.done))
    assert seen[-1] == path.stat().st_size
    assert (dataset.status, dataset.format, dataset.task) == (
        "processed",
        "csv",
        "text-classification",
    )
    assert (dataset.schema_.text_column, dataset.schema_.label_column) == ("column_3", "column_1")
    assert dataset.stats.rows == 500
    assert sum(dataset.stats.labels.values()) == 500
    assert dataset.stats.words is not None
    assert dataset.report.ok
    assert len(dataset.content_sha256) == 64

    split = sdk.dataset_split(dataset.id, seed=11, ratios=(0.8, 0.1, 0.1))
    assert (split.train.rows, split.validation.rows, split.test.rows) == (400, 50, 50)
    for part, share in ((split.train, 0.8), (split.validation, 0.1), (split.test, 0.1)):
        for label, total in dataset.stats.labels.items():
            assert abs(part.labels.get(label, 0) - total * share) < 1
    assert sdk.dataset_split(dataset.id, seed=11) == split
    assert sdk.dataset_split(dataset.id, seed=12).train.content_sha256 != split.train.content_sha256
    with pytest.raises(APIError) as exc:
        sdk.dataset_split(dataset.id, ratios=(0.5, 0.6))
    assert_api_error(exc, 400, "invalid_request")

    assert dataset.id in [item.id for item in sdk.list_datasets()]
    assert sdk.dataset_content(dataset.id) == path.read_bytes()
    assert sdk.delete_dataset(dataset.id).deleted
    with pytest.raises(APIError) as exc:
        sdk.get_dataset(dataset.id)
    assert_api_error(exc, 404, "file_not_found")


@needs_data
def test_a_conll_dataset_and_named_columns(sdk: Client, tmp_path: Path) -> None:
    path = tmp_path / "dev.conll"
    path.write_bytes(head_lines(CONLL, 600))
    dataset = sdk.upload_dataset(path)
    assert (dataset.task, dataset.schema_.tag_scheme) == ("token-classification", "iob1")
    assert dataset.report.ok
    assert set(dataset.stats.labels) == {"PER", "LOC", "ORG", "MISC"}
    split = sdk.dataset_split(dataset.id, seed=0)
    assert split.train.rows + split.validation.rows + split.test.rows == dataset.stats.rows

    table = tmp_path / "reviews.tsv"
    table.write_text("id\theadline\tscore\n1\tfine\tgood\n2\tpoor\tbad\n3\tok\tgood\n")
    named = sdk.upload_dataset(table, text_column="headline", label_column="score")
    assert (named.schema_.text_column, named.schema_.label_column) == ("headline", "score")
    with pytest.raises(APIError) as exc:
        sdk.upload_dataset(table, text_column="body")
    assert_api_error(exc, 400, "invalid_request")
    assert exc.value.param == "text_column"


def test_dataset_changes_are_audited(sdk: Client, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(chat_jsonl(4))
    dataset = sdk.upload_dataset(path)
    sdk.delete_dataset(dataset.id)
    events = sdk.audit(target=f"datasets/{dataset.id}").data
    assert [event.action for event in events] == ["dataset.create", "dataset.delete"]
    assert events[0].after is not None
    assert events[0].after["content_sha256"] == dataset.content_sha256
    assert events[1].before is not None
    assert events[1].before["id"] == dataset.id


# -- tenants and scopes ---------------------------------------------------------------------


def test_another_projects_file_is_404_exactly_like_a_missing_one(
    shared_server: RunningServer, sdk: Client
) -> None:
    for name in ("ds-tenant-a", "ds-tenant-b"):
        sdk.create_project(name)
    key_a = new_key(sdk, "training", project="ds-tenant-a")
    key_b = new_key(sdk, "training", project="ds-tenant-b")
    url = shared_server.url
    created = httpx.post(
        f"{url}/v1/files",
        headers=bearer(key_a),
        files={"file": ("mine.jsonl", chat_jsonl(3), "application/jsonl")},
        data={"purpose": "fine-tune"},
    ).json()
    hidden_id, absent_id = created["id"], "file-000000000000000000000000"

    def same_as_missing(method: str, path: str) -> None:
        hidden = httpx.request(method, f"{url}{path.format(hidden_id)}", headers=bearer(key_b))
        absent = httpx.request(method, f"{url}{path.format(absent_id)}", headers=bearer(key_b))
        assert hidden.status_code == absent.status_code == 404, (path, hidden.text)
        assert hidden.text.replace(hidden_id, absent_id) == absent.text, path

    for method, path in (
        ("GET", "/v1/files/{}"),
        ("GET", "/v1/files/{}/content"),
        ("DELETE", "/v1/files/{}"),
        ("GET", "/v1/datasets/{}"),
        ("GET", "/v1/datasets/{}/split"),
        ("DELETE", "/v1/datasets/{}"),
    ):
        same_as_missing(method, path)
    for path in ("/v1/files", "/v1/datasets"):
        listed = httpx.get(f"{url}{path}", headers=bearer(key_b)).json()["data"]
        assert hidden_id not in [item["id"] for item in listed]
        mine = httpx.get(f"{url}{path}", headers=bearer(key_a)).json()["data"]
        assert [item["id"] for item in mine] == [hidden_id]
    # Admins see every project's files; the owner still has it.
    assert httpx.get(f"{url}/v1/files/{hidden_id}", headers=bearer(shared_server.key)).is_success
    assert httpx.get(f"{url}/v1/files/{hidden_id}", headers=bearer(key_a)).is_success


def test_each_purpose_needs_its_scope(shared_server: RunningServer, sdk: Client) -> None:
    """Fine-tuning files need the training scope, batch files the inference scope; a key
    sees only the files of the purposes its scopes cover."""
    url = shared_server.url
    upload: dict[str, Any] = {
        "files": {"file": ("a.jsonl", chat_jsonl(2), "application/jsonl")},
        "data": {"purpose": "fine-tune"},
    }
    batch_upload: dict[str, Any] = {
        "files": {"file": ("requests.jsonl", b'{"custom_id": "a"}\n', "application/jsonl")},
        "data": {"purpose": "batch"},
    }
    for scope in ("models:read", "models:write"):
        key = new_key(sdk, scope)
        for method, path, extra in (
            ("POST", "/v1/files", upload),
            ("POST", "/v1/files", batch_upload),
            ("GET", "/v1/files", {}),
            ("POST", "/v1/datasets", {"files": upload["files"]}),
            ("GET", "/v1/datasets", {}),
        ):
            response = httpx.request(method, f"{url}{path}", headers=bearer(key), **extra)
            assert response.status_code == 403, (scope, method, path)
            assert response.json()["error"]["code"] == "insufficient_scope"
    assert httpx.get(f"{url}/v1/files").status_code == 401
    training, inference = new_key(sdk, "training"), new_key(sdk, "inference")
    dataset = httpx.post(f"{url}/v1/files", headers=bearer(training), **upload)
    assert dataset.status_code == 200, dataset.text
    requests = httpx.post(f"{url}/v1/files", headers=bearer(inference), **batch_upload)
    assert requests.status_code == 200, requests.text
    assert (requests.json()["purpose"], requests.json()["status"]) == ("batch", "processed")
    # Each key is refused the other's purpose, and sees only its own purpose's files.
    for key, other in ((training, batch_upload), (inference, upload)):
        refused = httpx.post(f"{url}/v1/files", headers=bearer(key), **other)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["param"] == "purpose"
    for key, mine, theirs in (
        (training, dataset.json()["id"], requests.json()["id"]),
        (inference, requests.json()["id"], dataset.json()["id"]),
    ):
        listed = [f["id"] for f in httpx.get(f"{url}/v1/files", headers=bearer(key)).json()["data"]]
        assert mine in listed
        assert theirs not in listed
        for path in ("/v1/files/{}", "/v1/files/{}/content"):
            assert httpx.get(f"{url}{path.format(theirs)}", headers=bearer(key)).status_code == 404
        content = httpx.get(f"{url}/v1/files/{mine}/content", headers=bearer(key))
        assert content.status_code == 200
    assert httpx.get(f"{url}/v1/datasets", headers=bearer(inference)).status_code == 403
    # A batch file is no dataset, wherever a dataset is asked for.
    not_a_dataset = httpx.get(
        f"{url}/v1/datasets/{requests.json()['id']}", headers=bearer(shared_server.key)
    )
    assert not_a_dataset.status_code == 400
    assert not_a_dataset.json()["error"]["code"] == "not_a_dataset"
    deleted = httpx.delete(f"{url}/v1/files/{requests.json()['id']}", headers=bearer(inference))
    assert deleted.json() == {"id": requests.json()["id"], "object": "file", "deleted": True}


@pytest.mark.postgres
def test_the_dataset_records_on_sqlite_and_postgresql(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.migrate()
    try:
        store = ArtifactStore(tmp_path / "artifacts")
        store.start()
        service = DatasetService(db, store)
        service.start()
        good = b"text,label\n" + b"".join(
            b"row %d,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(9)
        )
        ids = [
            service.create(
                io.BytesIO(good),
                filename=f"{i}.csv",
                project="p1" if i < 3 else "p2",
                caller=SYSTEM,
            ).id
            for i in range(4)
        ]
        broken = service.create(
            io.BytesIO(b"text,label\nx,\n"), filename="b.csv", project="p1", caller=SYSTEM
        )
        assert broken.status is DatasetStatus.ERROR
        assert [d.id for d in service.list(caller=member("p1"))] == [broken.id, *ids[2::-1]]
        assert [d.id for d in service.list(caller=member("p1"), after=ids[2], limit=1)] == [ids[1]]
        assert [d.id for d in service.list(caller=member("p2"))] == [ids[3]]
        assert len(service.list(caller=SYSTEM)) == 5
        again = service.get(ids[0], caller=member("p1"))
        assert again.stats.labels == {"a": 5, "b": 4}
        assert again.schema.text_column == "text"
        assert service.get(broken.id, caller=SYSTEM).report.problems[0].line == 2
        with pytest.raises(NotFound):
            service.get(ids[0], caller=member("p2"))
        service.delete(ids[0], caller=member("p1"))
        assert [d.id for d in service.list(caller=member("p1"), order="asc")] == [
            ids[1],
            ids[2],
            broken.id,
        ]
    finally:
        db.close()


# -- the command line -----------------------------------------------------------------------


def cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": server.key}
    return subprocess.run(
        [str(OPENMAAS), "datasets", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_uploads_lists_shows_and_deletes(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    path = tmp_path / "reviews.csv"
    rows = "".join(f"review {i},{'pos' if i % 3 else 'neg'}\n" for i in range(30))
    path.write_text("text,label\n" + rows)
    uploaded = cli(shared_server, "upload", str(path), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = json.loads(uploaded.stdout)["id"]

    listed = cli(shared_server, "list")
    assert listed.returncode == 0, listed.stderr
    assert dataset_id in listed.stdout

    shown = cli(shared_server, "show", dataset_id)
    assert shown.returncode == 0, shown.stderr
    assert "text-classification" in shown.stdout
    assert "pos" in shown.stdout
    assert "content sha256" in shown.stdout

    broken = tmp_path / "broken.csv"
    broken.write_text("text,label\ngood,pos\n,neg\nfine,\n")
    failed = cli(shared_server, "upload", str(broken))
    assert failed.returncode == 1
    assert "empty_text" not in failed.stdout  # people see the problem, not its code
    assert "is empty" in failed.stdout
    assert "no label" in failed.stdout

    deleted = cli(shared_server, "delete", dataset_id)
    assert deleted.returncode == 0, deleted.stderr
    gone = cli(shared_server, "show", dataset_id)
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: no such file")


# -- the examples of docs/datasets.md ---------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"
DOC_FILE = re.compile(r"`([\w.]+)`:\n\n```(\w+)\n(.*?)```", re.DOTALL)
DOC_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
PLACEHOLDER_ID = "file-3f0c..."


def uploading_blocks(language: str) -> list[str]:
    text = DOCS.read_text()
    start = text.index("## Uploading")
    section = text[start : text.index("\n## ", start + 1)]
    return [body for lang, body in DOC_BLOCK.findall(section) if lang == language]


def test_the_docs_upload_examples_run_as_written(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    for name, _, body in DOC_FILE.findall(DOCS.read_text()):
        (tmp_path / name).write_text(body)
    env = {
        **os.environ,
        "OPENMAAS_URL": shared_server.url,
        "OPENMAAS_API_KEY": shared_server.key,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
    }
    [script] = uploading_blocks("python")
    result = subprocess.run(
        [sys.executable, "-c", script.replace("http://127.0.0.1:8000", shared_server.url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    uploaded, dataset, split = result.stdout.splitlines()
    assert uploaded.startswith("file-")
    assert uploaded.endswith(" processed")
    assert dataset.startswith("text-classification 4 ")
    assert split == "2 1 1"

    [commands] = uploading_blocks("bash")
    dataset_id = uploaded.split()[0]
    for line in commands.splitlines():
        command = line.split("#")[0].strip().replace(PLACEHOLDER_ID, dataset_id)
        ran = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, (command, ran.stderr)
