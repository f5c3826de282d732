"""Names and references: `name`, `name@alias`, `name:version`, each optionally qualified by
its project (`acme/bert@production`).

Model names are each project's own: two projects may both have a `bert`. An unqualified name
means the caller's own project's model, else the public one of that name (see
`RegistryStore.find_model`); `project/name` names one exactly (admins use it for models of
other projects).

Example::

    ref = parse_reference("bert@production")
    assert ref == Reference(model="bert", alias="production", version=None)
    parse_reference("acme/bert:2").project  # -> "acme"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas.errors import InvalidName, InvalidReference
from openmaas.protocol.common import parse_decimal

# Checked with fullmatch: `$` would also match before a trailing newline ("bad\n").
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
# `latest` always means the newest ready version; it cannot be set by hand.
RESERVED_ALIASES = frozenset({"latest"})
DEFAULT_ALIAS = "production"


PROJECT_SEPARATOR = "/"


@dataclass(frozen=True, slots=True)
class Reference:
    model: str
    alias: str | None = None
    version: int | None = None
    project: str | None = None  # given as `project/name`; None: resolved for the caller

    @property
    def name(self) -> str:
        """The model part as written: `name` or `project/name`."""
        return qualified(self.project, self.model)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def qualified(project: str | None, name: str) -> str:
    """`project/name`, or `name` when no project is given."""
    return name if project is None else f"{project}{PROJECT_SEPARATOR}{name}"


def split_qualified(name: str) -> tuple[str | None, str]:
    """(project, name) of `project/name`, or (None, name); both parts checked."""
    if isinstance(name, str) and PROJECT_SEPARATOR in name:
        project, bare = name.split(PROJECT_SEPARATOR, 1)
        if not MODEL_NAME_RE.fullmatch(project):
            raise InvalidName(
                f"invalid project {project!r} in {name!r}: write project/name with a project "
                "name of 1-128 letters, digits, '.', '_' or '-'",
                param="model",
            )
        return project, check_model_name(bare)
    return None, check_model_name(name)


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            param="name",
        )
    return name


def check_alias(alias: str, *, settable: bool = True) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise InvalidName(
            f"invalid alias {alias!r}: use 1-64 lowercase letters, digits, '_' or '-', "
            "starting with a letter",
            param="alias",
        )
    if settable and alias in RESERVED_ALIASES:
        raise InvalidName(f"alias {alias!r} is reserved and always means the newest version")
    return alias


def parse_reference(text: str) -> Reference:
    """Parse `name`, `name@alias` or `name:version` (version a positive integer), each with
    an optional `project/` in front."""
    if "@" in text and ":" in text:
        raise InvalidReference(
            f"invalid model reference {text!r}: use name, name@alias or name:version",
            param="model",
        )
    if "@" in text:
        name, alias = text.split("@", 1)
        project, model = split_qualified(name)
        return Reference(model, alias=check_alias(alias, settable=False), project=project)
    if ":" in text:
        name, version_text = text.split(":", 1)
        version = parse_decimal(version_text)
        if version is None or version < 1:
            raise InvalidReference(
                f"invalid version {version_text!r} in {text!r}: versions are 1, 2, 3, ...",
                param="model",
            )
        project, model = split_qualified(name)
        return Reference(model, version=version, project=project)
    project, model = split_qualified(text)
    return Reference(model, project=project)
