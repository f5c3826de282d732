"""Names and references: `name`, `name@alias`, `name:version`.

Example::

    ref = parse_reference("bert@production")
    assert ref == Reference(model="bert", alias="production", version=None)
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


@dataclass(frozen=True, slots=True)
class Reference:
    model: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.model}:{self.version}"
        if self.alias is not None:
            return f"{self.model}@{self.alias}"
        return self.model


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
    """Parse `name`, `name@alias` or `name:version` (version a positive integer)."""
    if "@" in text and ":" in text:
        raise InvalidReference(
            f"invalid model reference {text!r}: use name, name@alias or name:version",
            param="model",
        )
    if "@" in text:
        name, alias = text.split("@", 1)
        return Reference(check_model_name(name), alias=check_alias(alias, settable=False))
    if ":" in text:
        name, version_text = text.split(":", 1)
        version = parse_decimal(version_text)
        if version is None or version < 1:
            raise InvalidReference(
                f"invalid version {version_text!r} in {text!r}: versions are 1, 2, 3, ...",
                param="model",
            )
        return Reference(check_model_name(name), version=version)
    return Reference(check_model_name(text))
