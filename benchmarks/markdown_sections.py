"""Each benchmark script owns one `## ` section of `docs/benchmarks.md` and rewrites only it;
the section says what the figures were measured on.

Example::

    write_section(DOCS_PATH, "## Training: BBC News\\n\\n| ... |\\n")
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
NEW_DOCUMENT = (
    "# Benchmarks\n\nFigures from the scripts in `benchmarks/`; each script rewrites its own "
    "section.\n"
)


def replace_section(document: str, section: str) -> str:
    """`document` with the `## ` section that `section` starts with replaced (or appended),
    every other section kept as it was."""
    heading = section.splitlines()[0].rstrip()
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        head = document.rstrip("\n")
        return f"{head}\n\n{section}" if head else section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + (f"\n{rest}" if rest else "")


def write_section(path: Path, section: str) -> None:
    """Read `path` only now, just before writing: other scripts (and people) edit it too."""
    document = path.read_text(encoding="utf-8") if path.exists() else NEW_DOCUMENT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(document, section), encoding="utf-8")


def describe_environment(packages: Sequence[str], threads: int) -> str:
    """The machine and library versions a section's figures were measured with."""
    versions = ", ".join(f"{package} {_version(package)}" for package in packages)
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {versions}; "
        f"torch threads {threads}"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def add_run_arguments(parser: argparse.ArgumentParser, *, rounds: bool = True) -> None:
    """The options every benchmark script takes: `--quick` (a smoke run that writes nothing),
    `--output` (the Markdown to update) and, with `rounds`, `--rounds` (default 3; 1 with
    `--quick`: read it with `chosen_rounds`)."""
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes no docs")
    if rounds:
        parser.add_argument("--rounds", type=int, default=None, help="default 3; 1 with --quick")
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="Markdown to update")


def chosen_rounds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    rounds: int = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    return rounds


def publish(section: str, args: argparse.Namespace) -> None:
    """Print a script's section, and write it into `args.output` unless `args.quick`."""
    print()
    print(section)
    if args.quick:
        print("--quick: docs not written")
    else:
        write_section(args.output, section)
        print(f"wrote {args.output}")
