"""Datasets of images: a `.zip` or `.tar.gz` holding one folder per class
(`Sneaker/0001.png`, ...), or JSON Lines of `{"image": "<data URL or base64>", "label": ...}`.

Archives are read with the rules model archives have (`registry.intake`): no absolute paths,
no `..`, no links or devices, at most OPENMAAS_MAX_ARCHIVE_MEMBERS entries and
OPENMAAS_MAX_EXTRACTED_MB unpacked, counted from the headers before anything is unpacked;
nothing is written to disk. Each image is checked as serving checks it (`openmaas.images`:
size, format, pixel count from the header, then decoded whole, so a truncated file is found);
a bad one is reported by its file name (archives) or line (JSON Lines) and left out. Classes
with fewer than `MIN_IMAGES_PER_CLASS` images are an error (they cannot be split into train,
validation and test). Examples are `{"image": <base64 of the file>, "label": <class>}`.

Example::

    reader = ImageFolderReader(handle, limits=ImageDatasetLimits(), max_problems=100)
    examples = list(reader)
    reader.report().ok, reader.schema.task  # True, Task.IMAGE_CLASSIFICATION
"""

from __future__ import annotations

import base64
import binascii
import shutil
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from openmaas.datasets.formats import Example, Format
from openmaas.datasets.report import ReportBuilder, ValidationReport
from openmaas.datasets.schema import DatasetSchema, Source
from openmaas.errors import InvalidRequest, OpenMaaSError, PayloadTooLarge, UnsafeArtifact
from openmaas.images import ImageLimits, decode_image, image_facts
from openmaas.registry.intake import (
    ArchiveLimits,
    iter_archive_files,
    open_archive,
    safe_member_path,
)

# A class needs an image in each of train, validation and test.
MIN_IMAGES_PER_CLASS = 3
# Fewer than this per class is worth a warning: too few to learn a class from.
FEW_IMAGES_PER_CLASS = 10
# Smaller than this (either side) is an error: no model here sees anything in it.
MIN_SIDE = 8
COPY_CHUNK_BYTES = 1024 * 1024
_SYMLINK = 0o120000
IMAGE_COLUMNS = ("image", "label")


@dataclass(frozen=True, slots=True)
class ImageDatasetLimits:
    image: ImageLimits = field(default_factory=ImageLimits)
    archive: ArchiveLimits = field(
        default_factory=lambda: ArchiveLimits(max_total_bytes=4096 << 20, max_members=1_000_000)
    )


def is_archive(head: bytes) -> bool:
    """A zip, a gzip (a .tar.gz) or a plain tar: the containers image datasets come in."""
    return head.startswith((b"PK\x03\x04", b"\x1f\x8b")) or head[257:262] == b"ustar"


def images_schema(fmt: Format, label_column: str = "label") -> DatasetSchema:
    return DatasetSchema(
        format=fmt,
        source=Source.IMAGE_LABEL,
        columns=("image", label_column),
        text_column="image",
        label_column=label_column,
    )


class ImageChecks:
    """One file's image checks and the per-class tally; `finish` adds the file's problems."""

    def __init__(self, problems: ReportBuilder, limits: ImageLimits) -> None:
        self.problems = problems
        self.limits = limits
        self.classes: Counter[str] = Counter()
        self.channels: Counter[int] = Counter()

    def example(
        self, data: bytes, label: str, *, line: int | None, where: str, column: str | None
    ) -> Example | None:
        """The example, or None with its problem reported."""
        try:
            channels = image_facts(data, self.limits, what=where).channels
            pixels = decode_image(data, self.limits, what=where, channels=channels)
        except OpenMaaSError as exc:
            self.problems.add(line, "unreadable_image", exc.message, column=column)
            return None
        height, width = pixels.shape[:2]
        if min(height, width) < MIN_SIDE:
            self.problems.add(
                line,
                "image_too_small",
                f"{where}: the image is {width} x {height} pixels",
                column=column,
            )
            return None
        self.classes[label] += 1
        self.channels[channels] += 1
        return {"image": base64.b64encode(data).decode("ascii"), "label": label}

    def finish(self) -> None:
        if len(self.channels) > 1:
            grey, colour = self.channels[1], self.channels[3]
            self.problems.add(
                None,
                "mixed_channels",
                f"{grey} grey and {colour} colour images",
                severity="warning",
            )
        for label, count in sorted(self.classes.items()):
            if count < MIN_IMAGES_PER_CLASS:
                self.problems.add(
                    None,
                    "too_few_images",
                    f"class {label!r} has {count} image{'s' if count != 1 else ''}",
                    column="label",
                )
            elif count < FEW_IMAGES_PER_CLASS:
                self.problems.add(
                    None,
                    "few_images",
                    f"class {label!r} has {count} images",
                    column="label",
                    severity="warning",
                )
        if len(self.classes) == 1:
            only = next(iter(self.classes))
            self.problems.add(None, "too_few_labels", f"every image is of class {only!r}")


def image_from_field(value: Any, checks: ImageChecks, line: int) -> bytes | None:
    """The file bytes of a JSON Lines `image` field (a data URL or bare base64)."""
    if not isinstance(value, str) or not value.strip():
        checks.problems.add(
            line,
            "unreadable_image",
            "'image' must be a data URL (data:image/png;base64,...) or base64 text",
            column="image",
        )
        return None
    text = value.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            checks.problems.add(
                line, "unreadable_image", "the data URL is not base64-encoded", column="image"
            )
            return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        checks.problems.add(line, "unreadable_image", "'image' is not valid base64", column="image")
        return None


class ImageFolderReader:
    """An archive of class folders read as examples; the `DatasetReader` interface
    (`schema`, iteration once, `report()`)."""

    def __init__(
        self, head: bytes, rest: IO[bytes], *, limits: ImageDatasetLimits, max_problems: int
    ) -> None:
        """`head`: the file's first bytes, already read; `rest`: the stream after them."""
        self.schema = images_schema(Format.IMAGE_FOLDERS)
        self._head = head
        self._stream = rest
        self._limits = limits
        self._problems = ReportBuilder(max_problems)
        self._checks = ImageChecks(self._problems, limits.image)
        self._report: ValidationReport | None = None

    def __iter__(self) -> Iterator[Example]:
        if self._report is not None:
            raise RuntimeError("an ImageFolderReader reads its file once")
        read = valid = 0
        with tempfile.TemporaryFile() as spooled:
            # zip needs to seek, and the stored file may be a decrypting stream.
            spooled.write(self._head)
            shutil.copyfileobj(self._stream, spooled, COPY_CHUNK_BYTES)
            spooled.seek(0)
            for path, data in _members(spooled, self._limits):
                if PurePosixPath(path).name.startswith("."):
                    continue  # .DS_Store and other hidden files
                read += 1
                parts = PurePosixPath(path).parts
                if len(parts) < 2:
                    self._problems.add(
                        None,
                        "not_in_class_folder",
                        f"file {path!r} is not inside a class folder",
                        column=path,
                    )
                    continue
                example = self._checks.example(
                    data, parts[0], line=None, where=f"file {path!r}", column=path
                )
                if example is not None:
                    valid += 1
                    yield example
        self._checks.finish()
        if valid == 0:
            self._problems.add(None, "no_examples", "the archive holds no valid image")
        self._report = self._problems.build(read, valid)

    def report(self) -> ValidationReport:
        if self._report is None:
            raise RuntimeError("read every example before asking for the report")
        return self._report


def _members(spooled: IO[bytes], limits: ImageDatasetLimits) -> Iterator[tuple[str, bytes]]:
    """(path under the common top folder, first bytes up to the image limit + 1) per file."""
    head = spooled.read(4)
    spooled.seek(0)
    cap = limits.image.max_bytes + 1  # one byte more tells "too large" apart
    if head.startswith(b"PK"):
        yield from _zip_members(spooled, limits.archive, cap)
        return
    try:
        archive = open_archive(spooled)
    except UnsafeArtifact:
        raise InvalidRequest(
            "the file is compressed but not a readable .tar.gz, .tar or .zip archive; upload "
            "a text dataset uncompressed, or images as an archive of class folders",
            param="file",
            code="invalid_file",
        ) from None
    with archive:
        try:
            for path, stream, _size in iter_archive_files(archive, limits.archive):
                yield path, stream.read(cap)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidRequest(
                f"the archive is corrupt ({exc})", param="file", code="invalid_file"
            ) from None


def _zip_members(
    spooled: IO[bytes], limits: ArchiveLimits, cap: int
) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(spooled)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidRequest(
            f"the upload is not a readable .zip archive ({exc})", param="file", code="invalid_file"
        ) from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise PayloadTooLarge(
                f"archive has more than {limits.max_members} entries "
                "(OPENMAAS_MAX_ARCHIVE_MEMBERS)",
                param="file",
            )
        files: list[tuple[str, zipfile.ZipInfo]] = []
        total = 0
        for info in infos:
            path = safe_member_path(info.filename)
            if (info.external_attr >> 16) & 0o170000 == _SYMLINK:
                raise UnsafeArtifact(
                    f"refused archive entry {info.filename!r}: links are not allowed",
                    param="file",
                )
            if info.is_dir():
                continue
            total += info.file_size
            if total > limits.max_total_bytes:
                raise PayloadTooLarge(
                    f"archive unpacks to more than {limits.max_total_bytes // (1 << 20)} MiB "
                    "(OPENMAAS_MAX_EXTRACTED_MB)",
                    param="file",
                )
            files.append((path, info))
        paths = [path for path, _ in files]
        prefix = _common_top_directory(paths)
        for path, info in files:
            try:
                with archive.open(info) as member:
                    data = member.read(cap)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
                data = b""  # reported by name: "the image is empty"
            yield path[len(prefix) :], data


def _common_top_directory(paths: list[str]) -> str:
    """`fashion/` when every file sits under one folder that holds the class folders."""
    if not paths:
        return ""
    tops = {PurePosixPath(p).parts[0] for p in paths}
    if len(tops) == 1 and all(len(PurePosixPath(p).parts) > 2 for p in paths):
        return tops.pop() + "/"
    return ""


def image_label(values: Mapping[str, Any], column: str) -> str | None:
    raw = values.get(column)
    if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw).strip():
        return None
    return str(raw).strip()
