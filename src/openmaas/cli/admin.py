"""`openmaas admin ...`: offline maintenance of a server's state directory.

Unlike the other commands these do not talk to a server: they open the state directory and
its database themselves, with the server's settings (`OPENMAAS_*` variables, or `--home`).
Stop the servers that use the store before rotating its key: a running server keeps the key
it was started with.

    openmaas admin generate-key --output /etc/openmaas/new.key
    OPENMAAS_ENCRYPTION_KEY_FILE=/etc/openmaas/old.key \\
        openmaas admin rotate-key --new-key-file /etc/openmaas/new.key
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from openmaas.auth.entities import SYSTEM
from openmaas.cli.common import CLIError, JsonFlag, err, human_size, out, plain, print_json, table
from openmaas.errors import ArtifactCorrupted, EncryptionKeyError, OpenMaaSError

if TYPE_CHECKING:  # the server stack is imported when a command runs: the CLI starts fast
    from openmaas.crypto import Keyring
    from openmaas.registry.artifacts import ArtifactStore
    from openmaas.registry.composition import Registry
    from openmaas.registry.entities import FileEntry
    from openmaas.settings import Settings

app = typer.Typer(
    help="Offline maintenance of the state directory (no server): encryption keys.",
    no_args_is_help=True,
)

HomeOption = Annotated[
    Path | None,
    typer.Option(help="State directory (OPENMAAS_HOME).", show_default=False),
]
LOCK_NAME = ".rotate-key.lock"


@app.command("generate-key")
def generate_key(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the key to this new file (mode 600) instead of printing it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a random AES-256 key (base64) for OPENMAAS_ENCRYPTION_KEY(_FILE)."""
    from openmaas.crypto import EncryptionKey

    key = EncryptionKey.generate()
    if output is None:
        sys.stdout.write(key.to_text() + "\n")
        return
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CLIError(f"{output} exists; a key file is never overwritten") from None
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.to_text() + "\n")
    err.print(plain(f"wrote a new key (id {key.key_id}) to {output}"))


@dataclass
class RotationReport:
    key_id: str | None  # the key everything is under now; None: plaintext
    rekeyed: int = 0
    unchanged: int = 0
    rekeyed_bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, what is wrong)


# Areas of the artifact root outside `objects/` that hold files written through the store.
EXTRA_AREAS = ("datasets", "jobs")


@dataclass(frozen=True, slots=True)
class _StoredFile:
    label: str  # how messages name it: model:version/path, or its path in the store
    path: Path
    expected: FileEntry | None  # the manifest entry, when a version owns the file


def _files_to_rekey(registry: Registry) -> list[_StoredFile]:
    files: list[_StoredFile] = []
    owned: set[Path] = set()
    for version, root in registry.files.stored_versions(caller=SYSTEM):
        for entry in version.files:
            path = root / entry.path
            owned.add(path)
            files.append(
                _StoredFile(f"{version.model}:{version.version}/{entry.path}", path, entry)
            )
    # A version's variants (its ONNX export) are checked against their own manifests.
    for version, variant, root in registry.files.stored_variants(caller=SYSTEM):
        for entry in variant.files:
            path = root / entry.path
            owned.add(path)
            label = f"{version.model}:{version.version} {variant.kind} variant/{entry.path}"
            files.append(_StoredFile(label, path, entry))
    # Files no version owns (left by an interrupted registration; swept later by the
    # server) are rewritten too: nothing under the old key may stay behind.
    store = registry.artifacts
    for path in store.stored_files():
        if path not in owned:
            files.append(_StoredFile(str(path.relative_to(store.objects_dir)), path, None))
    # Uploaded datasets and training checkpoints live beside the models, written through
    # the same store: they move to the new key too (GCM authenticates each one as it is read).
    for area in EXTRA_AREAS:
        for path in store.area_files(area):
            files.append(_StoredFile(str(path.relative_to(store.root)), path, None))
    return files


def rekey_store(
    registry: Registry, keys: Keyring, advance: Callable[[int], None] | None = None
) -> RotationReport:
    """Rewrite every file of the artifact store under `keys.current` (plaintext when None),
    reading each with any key of `keys`. Files already under the new key are skipped, so an
    interrupted run is finished by running it again."""
    store = registry.artifacts
    store.sweep_rekey_leftovers()
    report = RotationReport(keys.current.key_id if keys.current is not None else None)
    for item in _files_to_rekey(registry):
        if not item.path.is_file():
            report.problems.append((item.label, "missing"))
            continue
        try:
            changed = store.rekey_file(item.path, keys, expected=item.expected, progress=advance)
        except (ArtifactCorrupted, EncryptionKeyError) as exc:
            report.problems.append((item.label, exc.message))
            continue
        if changed:
            report.rekeyed += 1
            report.rekeyed_bytes += item.expected.size if item.expected else 0
        else:
            report.unchanged += 1
    return report


@app.command("rotate-key")
def rotate_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(help="File holding the new key (base64).", show_default=False),
    ] = None,
    decrypt: Annotated[
        bool, typer.Option("--decrypt", help="Write every file in plaintext: turn encryption off.")
    ] = False,
    old_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the key the store is encrypted with now; default the server's "
            "OPENMAAS_ENCRYPTION_KEY or OPENMAAS_ENCRYPTION_KEY_FILE (none: a plaintext store).",
            show_default=False,
        ),
    ] = None,
    home: HomeOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-encrypt every stored artifact under a new key (or encrypt a plaintext store).

    Each file is rewritten beside itself, fsynced and renamed over the old one: at every
    moment it is complete under the old key or the new one. Interrupted? Run it again.
    """
    from openmaas.crypto import EncryptionKey, Keyring, key_from_settings
    from openmaas.settings import Settings
    from openmaas.wiring import build_artifact_store

    if (new_key_file is None) == (not decrypt):
        raise CLIError("give --new-key-file FILE, or --decrypt to turn encryption off", 2)
    settings = Settings(**({"home": home} if home is not None else {}))  # type: ignore[arg-type]
    try:
        old = EncryptionKey.from_file(old_key_file) if old_key_file else key_from_settings(settings)
        new = EncryptionKey.from_file(new_key_file) if new_key_file is not None else None
    except OpenMaaSError as exc:
        raise CLIError(exc.message) from None
    if old is not None and new is not None and old.key_id == new.key_id:
        raise CLIError(f"the new key is the current key (id {new.key_id}); nothing to rotate", 2)
    if old is None and new is None:
        raise CLIError(
            "the store has no key (OPENMAAS_ENCRYPTION_KEY is not set): nothing to decrypt", 2
        )
    keys = Keyring(new, previous=(old,) if old is not None else ())
    store = build_artifact_store(settings, keys)
    if settings.artifacts_url is None and not store.objects_dir.is_dir():
        raise CLIError(
            f"no artifact store at {settings.artifact_root}; is OPENMAAS_HOME (or --home) the "
            "server's state directory?"
        )
    report = _rotate_locked(settings, store, keys)
    if as_json:
        print_json(
            {
                "key_id": report.key_id,
                "rekeyed": report.rekeyed,
                "unchanged": report.unchanged,
                "problems": [{"path": p, "problem": m} for p, m in report.problems],
            }
        )
    else:
        _print_report(report, new_key_file)
    if report.problems:
        raise typer.Exit(1)


def _rotate_locked(settings: Settings, store: ArtifactStore, keys: Keyring) -> RotationReport:
    from filelock import FileLock, Timeout

    from openmaas.wiring import build_registry

    registry = build_registry(settings, artifacts=store)
    try:
        with FileLock(store.root / LOCK_NAME, timeout=0):
            stored = registry.files.stored_versions(caller=SYSTEM)
            total = sum(v.size_bytes for v, _ in stored)
            with _progress() as progress:
                task = progress.add_task("re-encrypting", total=total or None)
                return rekey_store(registry, keys, lambda n: progress.advance(task, n))
    except Timeout:
        raise CLIError(f"another rotate-key is running on {store.root}") from None
    finally:
        registry.db.close()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<14}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _print_report(report: RotationReport, new_key_file: Path | None) -> None:
    target = f"key id {report.key_id}" if report.key_id else "plaintext"
    out.print(
        plain(
            f"{report.rekeyed} file(s) rewritten under {target} "
            f"({human_size(report.rekeyed_bytes)}); {report.unchanged} already were"
        )
    )
    if report.problems:
        grid = table("FILE", "PROBLEM", title=f"{len(report.problems)} file(s) left as they were")
        for path, problem in report.problems:
            grid.add_row(plain(path), plain(problem))
        out.print(grid)
        return
    if new_key_file is not None:
        out.print(
            plain(
                f"Start the server with the new key, e.g. OPENMAAS_ENCRYPTION_KEY_FILE="
                f"{new_key_file}; the old key no longer opens anything."
            )
        )
    else:
        out.print(plain("Unset OPENMAAS_ENCRYPTION_KEY(_FILE) before starting the server."))
