"""Batches (`/v1/batches`) and the files they read and write (`/v1/files`).

Example::

    requests = client.upload_file("requests.jsonl", purpose="batch")
    batch = client.create_batch(requests.id, "/v1/embeddings")
    batch = client.wait_for_batch(batch.id)
    for line in client.file_content(batch.output_file_id).splitlines():
        print(json.loads(line)["custom_id"])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from openmaas.client.packing import ProgressCallback, upload_reader
from openmaas.client.resource import Resource, segment, wait_until
from openmaas.protocol.batches import BatchCreate, BatchListOut, BatchOut
from openmaas.protocol.datasets import FileDeletedOut, FileOut

FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchesResource(Resource):
    """`/v1/batches`, and `/v1/files` of any purpose."""

    # -- files ---------------------------------------------------------------------------

    def upload_file(
        self, path: str | Path, *, purpose: str = "batch", progress: ProgressCallback | None = None
    ) -> FileOut:
        """Upload a file (streamed): `batch` requests (JSON Lines) or `fine-tune` data."""
        local = Path(path).expanduser()
        if not local.is_file():
            raise FileNotFoundError(f"no such file: {local}")
        with upload_reader(local, progress) as reader:
            files = {"file": (local.name, reader, "application/octet-stream")}
            return self._one(
                "POST", "/v1/files", FileOut, files=files, data={"purpose": purpose}, upload=True
            )

    def get_file(self, file_id: str) -> FileOut:
        return self._one("GET", f"/v1/files/{segment(file_id)}", FileOut)

    def file_content(self, file_id: str) -> bytes:
        """A file's bytes: an upload as sent, or a batch's output or error file."""
        return self._request("GET", f"/v1/files/{segment(file_id)}/content").content

    def delete_file(self, file_id: str) -> FileDeletedOut:
        return self._one("DELETE", f"/v1/files/{segment(file_id)}", FileDeletedOut)

    # -- batches -------------------------------------------------------------------------

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        *,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> BatchOut:
        """Run the requests of an uploaded `batch` file against `endpoint`. A file with
        bad lines gives a batch with status `failed` whose `errors` name the lines."""
        body = BatchCreate(
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=dict(metadata) if metadata else None,
        )
        return self._one(
            "POST", "/v1/batches", BatchOut, json=body.model_dump(mode="json", exclude_none=True)
        )

    def get_batch(self, batch_id: str) -> BatchOut:
        return self._one("GET", _batch_path(batch_id), BatchOut)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> BatchListOut:
        """Your project's batches, newest first; pass the last id as `after` for the next
        page."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self._one("GET", "/v1/batches", BatchListOut, params=params)

    def cancel_batch(self, batch_id: str) -> BatchOut:
        """Stop a batch: `cancelling` until the requests in flight are answered and its
        files written, then `cancelled`."""
        return self._one("POST", f"{_batch_path(batch_id)}/cancel", BatchOut)

    def wait_for_batch(
        self, batch_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> BatchOut:
        """Block until the batch has finished (completed, failed, expired or cancelled)."""
        return wait_until(
            lambda: self.get_batch(batch_id),
            lambda batch: batch.status in FINISHED,
            lambda batch: f"batch {batch_id} is still {batch.status}",
            poll_s=poll_s,
            timeout_s=timeout_s,
        )


def _batch_path(batch_id: str) -> str:
    return f"/v1/batches/{segment(batch_id)}"
