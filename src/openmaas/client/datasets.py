"""Training datasets (OpenAI's Files API underneath): upload, list, inspect, split, delete.

Example::

    dataset = client.upload_dataset("reviews.csv", text_column="review", label_column="stars")
    print(dataset.status, dataset.stats.rows, dataset.report.errors)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from openmaas.client.packing import ProgressCallback, upload_reader
from openmaas.client.resource import Resource, segment
from openmaas.protocol.datasets import (
    DatasetDeletedOut,
    DatasetOut,
    DatasetSplitOut,
    DatasetSummaryOut,
)


class DatasetsResource(Resource):
    """`/v1/datasets`, and the file content under `/v1/files`."""

    def upload_dataset(
        self,
        path: str | Path,
        *,
        format: str | None = None,  # the API's field name
        text_column: str | None = None,
        label_column: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> DatasetOut:
        """Upload a JSONL, CSV, TSV or CoNLL file as a training dataset (streamed).

        The answer carries the inferred schema, the statistics and the validation report; a
        file with problems comes back with `status == "error"` and every problem by line. One
        that cannot be read at all raises `APIError` (400 `invalid_file`), one too large 413.
        `progress` receives `UploadProgress("upload", ...)` reports.
        """
        local = Path(path).expanduser()
        if not local.is_file():
            raise FileNotFoundError(f"no such file: {local}")
        fields = {"format": format, "text_column": text_column, "label_column": label_column}
        data = {name: value for name, value in fields.items() if value}
        with upload_reader(local, progress) as reader:
            files = {"file": (local.name, reader, "application/octet-stream")}
            return self._one(
                "POST", "/v1/datasets", DatasetOut, files=files, data=data, upload=True
            )

    def list_datasets(self) -> list[DatasetSummaryOut]:
        """Your project's datasets (every project's for an admin key), newest first."""
        return self._list("GET", "/v1/datasets", DatasetSummaryOut)

    def get_dataset(self, dataset_id: str) -> DatasetOut:
        return self._one("GET", f"/v1/datasets/{segment(dataset_id)}", DatasetOut)

    def dataset_split(
        self,
        dataset_id: str,
        *,
        seed: int = 0,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> DatasetSplitOut:
        """Rows, labels and content hash of the train/validation/test split a seed gives."""
        params = {"seed": seed, "ratios": ",".join(str(float(ratio)) for ratio in ratios)}
        path = f"/v1/datasets/{segment(dataset_id)}/split"
        return self._one("GET", path, DatasetSplitOut, params=params)

    def dataset_content(self, dataset_id: str) -> bytes:
        """The file's bytes as uploaded."""
        return self._request("GET", f"/v1/files/{segment(dataset_id)}/content").content

    def delete_dataset(self, dataset_id: str) -> DatasetDeletedOut:
        return self._one("DELETE", f"/v1/datasets/{segment(dataset_id)}", DatasetDeletedOut)
