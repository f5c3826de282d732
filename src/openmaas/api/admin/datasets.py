"""`/v1/datasets`: upload a dataset (JSONL, CSV, TSV, CoNLL) and see what it holds.

`POST /v1/datasets` takes the file with optional `format`, `text_column` and
`label_column`; the answer carries the inferred schema, the statistics and the validation
report. Datasets are the files of `/v1/files` (the same ids, the same project rules, the
same 400/413 answers), seen with their contents described. Needs the `training` scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.datasets import dataset_out, dataset_summary_out
from openmaas.api.dataset_audit import record_created, record_deleted
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.datasets.formats import content_sha256
from openmaas.datasets.split import parse_ratios
from openmaas.datasets.stats import label_counts
from openmaas.protocol.common import ListOut
from openmaas.protocol.datasets import (
    DatasetDeletedOut,
    DatasetOut,
    DatasetSplitOut,
    DatasetSummaryOut,
    SplitPartOut,
)

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_dataset(
    services: ServicesDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    file: Annotated[UploadFile, File(description="The dataset file.")],
    format: Annotated[
        str | None, Form(description="jsonl, csv, tsv, conll, text; default: by name, content.")
    ] = None,
    text_column: Annotated[str | None, Form(description="Default: inferred.")] = None,
    label_column: Annotated[str | None, Form(description="Default: inferred.")] = None,
) -> DatasetOut:
    dataset = services.datasets.create(
        file.file,
        filename=file.filename or "upload",
        project=who.project,
        caller=who,
        created_by=who.actor,
        format=format or None,
        text_column=text_column or None,
        label_column=label_column or None,
    )
    record_created(auditor, dataset)
    return dataset_out(dataset)


@router.get("")
def list_datasets(services: ServicesDep, who: PrincipalDep) -> ListOut[DatasetSummaryOut]:
    datasets = services.datasets.list(caller=who)
    return ListOut(data=[dataset_summary_out(dataset) for dataset in datasets])


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, services: ServicesDep, who: PrincipalDep) -> DatasetOut:
    return dataset_out(services.datasets.get(dataset_id, caller=who))


@router.get("/{dataset_id}/split")
def split_dataset(
    dataset_id: str,
    services: ServicesDep,
    who: PrincipalDep,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    ratios: Annotated[
        str, Query(max_length=100, description="train,validation[,test] shares adding to 1.")
    ] = "0.8,0.1,0.1",
) -> DatasetSplitOut:
    """How a seed splits the dataset: rows, labels and content hash of each split."""
    shares = parse_ratios(ratios)
    dataset = services.datasets.get(dataset_id, caller=who)
    splits = services.datasets.splits(dataset_id, caller=who, seed=seed, ratios=shares)
    train, validation, test = (
        SplitPartOut(
            rows=len(part),
            labels=label_counts(part, dataset.task),
            content_sha256=content_sha256(part),
        )
        for part in splits
    )
    return DatasetSplitOut(
        id=dataset.id,
        task=dataset.task.value,
        seed=seed,
        ratios=list(shares),
        train=train,
        validation=validation,
        test=test,
    )


@router.delete("/{dataset_id}")
def delete_dataset(
    dataset_id: str, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> DatasetDeletedOut:
    removed = services.datasets.delete(dataset_id, caller=who)
    record_deleted(auditor, removed)
    return DatasetDeletedOut(id=removed.id)
