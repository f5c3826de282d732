"""Progress display for uploads: packing, then sending, then waiting for the server.

Drawn on stderr and only on a terminal, so piped output and `--json` stay clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from openmaas.cli.common import err
from openmaas.client.packing import ProgressCallback, UploadProgress

_LABELS = {"pack": "packing", "upload": "uploading"}


class _Bytes(DownloadColumn):
    def render(self, task: Task) -> Text:
        # The "server checking files" row has no size: show nothing rather than "0/? bytes".
        return Text("") if task.total is None else super().render(task)


class _Speed(TransferSpeedColumn):
    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else super().render(task)


class UploadDisplay:
    """Turns `UploadProgress` reports into one rich bar per phase."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._waiting: TaskID | None = None

    def __call__(self, event: UploadProgress) -> None:
        task = self._tasks.get(event.phase)
        if task is None:
            task = self._progress.add_task(_LABELS[event.phase], total=event.total)
            self._tasks[event.phase] = task
        self._progress.update(task, completed=event.done, total=event.total)
        if event.phase == "upload" and event.done >= event.total and self._waiting is None:
            # The server now unpacks, scans and hashes everything before it answers.
            self._waiting = self._progress.add_task("server checking files", total=None)


@contextmanager
def upload_progress() -> Iterator[ProgressCallback]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<22}"),
        BarColumn(),
        _Bytes(binary_units=True),
        _Speed(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with progress:
        yield UploadDisplay(progress)


@contextmanager
def working(message: str) -> Iterator[None]:
    """A spinner on stderr while the server works (registration hashes every file)."""
    if not err.is_terminal:
        yield
        return
    with err.status(message):
        yield
