"""API key format and hashing: pure functions, no database.

A key reads `om-<prefix>_<secret>`: `prefix` is 8 lowercase letters or digits, public, unique,
shown in listings and used to find the key's row; `secret` is `secrets.token_urlsafe(32)`
(43 characters, 256 bits). Only HMAC-SHA256(pepper, salt + secret) is stored, with a random
salt per key; the pepper is a server secret that never reaches the database, so a leaked
database alone cannot be used to test guesses.

Example::

    key = generate_key()
    salt = new_salt()
    digest = hash_secret(pepper, salt, key.secret)
    parsed = parse_key(key.plaintext)
    assert parsed.prefix == key.prefix
    assert verify_secret(pepper, salt, parsed.secret, digest)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

KEY_MARKER = "om-"
PREFIX_LENGTH = 8
PREFIX_ALPHABET = string.ascii_lowercase + string.digits
SECRET_BYTES = 32  # token_urlsafe(32) -> 43 characters
# Imported keys (OPENMAAS_ADMIN_KEY) may carry a secret of their own, but never a short one:
# 32 url-safe characters are 192 bits.
MIN_SECRET_CHARS = 32
MAX_SECRET_CHARS = 128
MAX_KEY_CHARS = len(KEY_MARKER) + PREFIX_LENGTH + 1 + MAX_SECRET_CHARS
SALT_BYTES = 16
MIN_PEPPER_BYTES = 16
PEPPER_CHECK_LABEL = b"openmaas key pepper check v1"  # what `pepper_fingerprint` signs

_KEY_RE = re.compile(
    rf"{KEY_MARKER}([a-z0-9]{{{PREFIX_LENGTH}}})_"
    rf"([A-Za-z0-9_-]{{{MIN_SECRET_CHARS},{MAX_SECRET_CHARS}}})"
)
KEY_FORMAT_HINT = (
    f"'{KEY_MARKER}' + {PREFIX_LENGTH} lowercase letters or digits + '_' + "
    f"{MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} characters of A-Z, a-z, 0-9, '-' or '_'"
)


class MalformedKey(Exception):
    """The text cannot be an API key. `reason` never contains the text itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedKey:
    prefix: str
    secret: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"ParsedKey(prefix={self.prefix!r}, secret='***')"


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    prefix: str
    secret: str

    @property
    def plaintext(self) -> str:
        return format_key(self.prefix, self.secret)

    def __repr__(self) -> str:
        return f"GeneratedKey(prefix={self.prefix!r}, secret='***')"


def format_key(prefix: str, secret: str) -> str:
    return f"{KEY_MARKER}{prefix}_{secret}"


def new_prefix() -> str:
    return "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))


def generate_key() -> GeneratedKey:
    return GeneratedKey(prefix=new_prefix(), secret=secrets.token_urlsafe(SECRET_BYTES))


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def parse_key(text: str) -> ParsedKey:
    """Split a presented key into prefix and secret, or raise MalformedKey with the reason."""
    # Cheap checks first: the length bound keeps huge headers away from the regex.
    if not text:
        raise MalformedKey("the API key is empty")
    if len(text) > MAX_KEY_CHARS:
        raise MalformedKey(f"the API key is longer than {MAX_KEY_CHARS} characters")
    if not text.startswith(KEY_MARKER):
        raise MalformedKey(f"an API key starts with {KEY_MARKER!r}")
    # fullmatch: `$` would let a trailing newline through.
    match = _KEY_RE.fullmatch(text)
    if match is None:
        raise MalformedKey(f"an API key reads {KEY_FORMAT_HINT}")
    return ParsedKey(prefix=match.group(1), secret=match.group(2))


def check_pepper(pepper: bytes) -> bytes:
    if len(pepper) < MIN_PEPPER_BYTES:
        # A configuration mistake, caught at start-up, never a client's fault.
        raise ValueError(f"the key pepper must be at least {MIN_PEPPER_BYTES} bytes")
    return pepper


def pepper_fingerprint(pepper: bytes) -> str:
    """HMAC-SHA256 keyed by the pepper over a fixed label (hex): what servers sharing a
    database compare, to find one with another pepper, without storing the pepper."""
    return hmac.new(pepper, PEPPER_CHECK_LABEL, hashlib.sha256).hexdigest()


def hash_secret(pepper: bytes, salt: bytes, secret: str) -> bytes:
    """HMAC-SHA256 keyed by the server pepper over salt + secret (32 bytes)."""
    return hmac.new(pepper, salt + secret.encode("ascii"), hashlib.sha256).digest()


def verify_secret(pepper: bytes, salt: bytes, secret: str, expected: bytes) -> bool:
    """Recompute the hash and compare in constant time."""
    return hmac.compare_digest(hash_secret(pepper, salt, secret), expected)
