"""The rows a batch adds to its job: the batch row (counts, input problems, files, moments)
and one result row per request once it has its answer.

A result is written once per line (a line answered twice, by a run that lost its job and
the run that took it over, keeps its first answer), so a batch that resumes after a restart
skips exactly the lines already answered.

Example::

    store = BatchStore(db)
    store.record(job_id, [Result(line=3, id="batch_req_..", custom_id="a", status_code=200,
                                 request_id="..", body={...})])
    store.answered(job_id)  # {3}
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from openmaas.batches.entities import RequestCounts
from openmaas.jobs.records import aware, now
from openmaas.store.database import Database
from openmaas.store.tables import BatchResultRow, BatchRow

RESULT_PAGE = 1000  # result rows read at a time when the files are written


@dataclass(frozen=True, slots=True)
class Result:
    """A request's answer (`status_code`, `body`) or, for one that never ran, `error`."""

    line: int
    id: str
    custom_id: str
    status_code: int | None
    request_id: str | None = None
    body: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class BatchState:
    total: int
    errors: tuple[Mapping[str, Any], ...]
    in_progress_at: datetime | None
    cancelling_at: datetime | None
    finalizing_at: datetime | None
    expired_at: datetime | None
    output_file_id: str | None
    error_file_id: str | None


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the batch row -----------------------------------------------------------------------

    def admit(self, job_id: str, total: int) -> None:
        with self.db.transaction() as session:
            session.merge(BatchRow(job_id=job_id, total=total, errors=[], in_progress_at=now()))

    def refuse(self, job_id: str, errors: Sequence[Mapping[str, Any]]) -> None:
        with self.db.transaction() as session:
            session.merge(BatchRow(job_id=job_id, total=0, errors=[dict(e) for e in errors]))

    def states(self, job_ids: Collection[str]) -> dict[str, BatchState]:
        if not job_ids:
            return {}
        with self.db.transaction() as session:
            rows = session.scalars(select(BatchRow).where(BatchRow.job_id.in_(list(job_ids))))
            return {row.job_id: _state(row) for row in rows}

    def state(self, job_id: str) -> BatchState | None:
        return self.states([job_id]).get(job_id)

    def mark(self, job_id: str, **moments: datetime) -> None:
        """Set `cancelling_at`, `finalizing_at` or `expired_at` (kept when already set)."""
        with self.db.transaction() as session:
            row = session.get(BatchRow, job_id, with_for_update=True)
            if row is None:
                return
            for name, moment in moments.items():
                if getattr(row, name) is None:
                    setattr(row, name, moment)

    def set_files(self, job_id: str, output_file_id: str | None, error_file_id: str | None) -> None:
        with self.db.transaction() as session:
            row = session.get(BatchRow, job_id, with_for_update=True)
            if row is not None:
                row.output_file_id, row.error_file_id = output_file_id, error_file_id

    # -- results -----------------------------------------------------------------------------

    def record(self, job_id: str, results: Sequence[Result]) -> None:
        """Keep the answers of these lines; a line already answered keeps its answer."""
        if not results:
            return
        with self.db.transaction() as session:
            present = set(
                session.scalars(
                    select(BatchResultRow.line).where(
                        BatchResultRow.job_id == job_id,
                        BatchResultRow.line.in_([r.line for r in results]),
                    )
                )
            )
            moment = now()
            for result in results:
                if result.line in present:
                    continue
                present.add(result.line)
                session.add(
                    BatchResultRow(
                        job_id=job_id,
                        line=result.line,
                        id=result.id,
                        custom_id=result.custom_id,
                        status_code=result.status_code,
                        request_id=result.request_id,
                        body=result.body,
                        error=dict(result.error) if result.error is not None else None,
                        created_at=moment,
                    )
                )

    def answered(self, job_id: str) -> set[int]:
        with self.db.transaction() as session:
            return set(
                session.scalars(select(BatchResultRow.line).where(BatchResultRow.job_id == job_id))
            )

    def results(self, job_id: str) -> Iterator[Result]:
        """Every recorded result in input order, read a page at a time."""
        after = 0
        while True:
            with self.db.transaction() as session:
                rows = session.scalars(
                    select(BatchResultRow)
                    .where(BatchResultRow.job_id == job_id, BatchResultRow.line > after)
                    .order_by(BatchResultRow.line)
                    .limit(RESULT_PAGE)
                ).all()
                page = [_result(row) for row in rows]
            if not page:
                return
            yield from page
            after = page[-1].line

    def counts(self, job_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        """(succeeded, failed) answers recorded per batch."""
        if not job_ids:
            return {}
        ok = BatchResultRow.status_code.between(200, 299)
        with self.db.transaction() as session:
            rows = session.execute(
                select(
                    BatchResultRow.job_id,
                    func.sum(case((ok, 1), else_=0)),
                    func.count(),
                )
                .where(BatchResultRow.job_id.in_(list(job_ids)))
                .group_by(BatchResultRow.job_id)
            ).all()
        return {job_id: (int(good or 0), int(all_) - int(good or 0)) for job_id, good, all_ in rows}

    def request_counts(self, job_id: str, total: int) -> RequestCounts:
        good, bad = self.counts([job_id]).get(job_id, (0, 0))
        return RequestCounts(total=total, completed=good, failed=bad)


def _state(row: BatchRow) -> BatchState:
    return BatchState(
        total=row.total,
        errors=tuple(dict(e) for e in row.errors or ()),
        in_progress_at=aware(row.in_progress_at),
        cancelling_at=aware(row.cancelling_at),
        finalizing_at=aware(row.finalizing_at),
        expired_at=aware(row.expired_at),
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
    )


def _result(row: BatchResultRow) -> Result:
    return Result(
        line=row.line,
        id=row.id,
        custom_id=row.custom_id,
        status_code=row.status_code,
        request_id=row.request_id,
        body=row.body,
        error=dict(row.error) if row.error is not None else None,
    )
