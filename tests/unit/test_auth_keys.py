"""Key format, hashing and scopes: pure functions, no database."""

from __future__ import annotations

import hmac
import re

import pytest

from openmaas.auth import keys
from openmaas.auth.entities import Principal
from openmaas.auth.keys import (
    MalformedKey,
    check_pepper,
    format_key,
    generate_key,
    hash_secret,
    new_salt,
    parse_key,
    verify_secret,
)
from openmaas.auth.scopes import Scope, parse_scopes, require, scopes_cover
from openmaas.errors import InvalidRequest, PermissionDenied

PEPPER = b"p" * 32


def test_generated_keys_have_the_documented_format() -> None:
    key = generate_key()
    assert re.fullmatch(r"om-[a-z0-9]{8}_[A-Za-z0-9_-]{43}", key.plaintext)
    assert key.plaintext == format_key(key.prefix, key.secret)
    assert parse_key(key.plaintext) == keys.ParsedKey(prefix=key.prefix, secret=key.secret)


def test_generated_keys_are_distinct() -> None:
    generated = [generate_key() for _ in range(200)]
    assert len({k.prefix for k in generated}) == 200
    assert len({k.secret for k in generated}) == 200


def test_a_secret_may_contain_the_separator() -> None:
    secret = "_" * 10 + "a" * 33
    assert parse_key(format_key("abcd1234", secret)).secret == secret


def test_reprs_hide_the_secret() -> None:
    key = generate_key()
    assert key.secret not in repr(key)
    assert key.secret not in repr(parse_key(key.plaintext))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("sk-abcd1234_" + "a" * 43, "starts with 'om-'"),
        ("om-ABCD1234_" + "a" * 43, "lowercase letters or digits"),
        ("om-abc_" + "a" * 43, "lowercase letters or digits"),
        ("om-abcd1234" + "a" * 43, "lowercase letters or digits"),
        ("om-abcd1234_" + "a" * 31, "32-128 characters"),
        ("om-abcd1234_" + "a" * 42 + "!", "32-128 characters"),
        ("om-abcd1234_" + "a" * 42 + "\n", "32-128 characters"),
        ("om-abcd1234_" + "a" * 5000, "longer than"),
    ],
)
def test_malformed_keys_are_refused_with_a_reason_but_not_the_text(text: str, reason: str) -> None:
    with pytest.raises(MalformedKey) as caught:
        parse_key(text)
    assert reason in caught.value.reason
    if text:
        assert text not in caught.value.reason
        assert "aaaaaaaaaa" not in str(caught.value)


def test_hash_depends_on_salt_secret_and_pepper() -> None:
    key = generate_key()
    salt_a, salt_b = new_salt(), new_salt()
    assert salt_a != salt_b
    digest = hash_secret(PEPPER, salt_a, key.secret)
    assert len(digest) == 32
    assert digest == hash_secret(PEPPER, salt_a, key.secret)
    assert digest != hash_secret(PEPPER, salt_b, key.secret)
    assert digest != key.secret.encode()
    assert verify_secret(PEPPER, salt_a, key.secret, digest)
    assert not verify_secret(PEPPER, salt_a, key.secret + "x", digest)
    assert not verify_secret(b"q" * 32, salt_a, key.secret, digest)
    assert not verify_secret(PEPPER, salt_b, key.secret, digest)


def test_hash_is_hmac_sha256_of_salt_and_secret() -> None:
    salt = bytes(range(16))
    expected = hmac.new(PEPPER, salt + b"secret", "sha256").digest()
    assert hash_secret(PEPPER, salt, "secret") == expected


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    salt = new_salt()
    digest = hash_secret(PEPPER, salt, "s")
    assert verify_secret(PEPPER, salt, "s", digest)
    assert not verify_secret(PEPPER, salt, "t", digest)
    assert len(calls) == 2


def test_short_peppers_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        check_pepper(b"short")
    assert check_pepper(PEPPER) == PEPPER


def test_admin_covers_every_scope_and_others_only_themselves() -> None:
    for required in Scope:
        assert Scope.ADMIN.covers(required)
        assert required.covers(required)
    assert not Scope.INFERENCE.covers(Scope.MODELS_READ)
    assert not Scope.MODELS_WRITE.covers(Scope.MODELS_READ)
    assert not Scope.TRAINING.covers(Scope.ADMIN)
    assert scopes_cover([Scope.INFERENCE, Scope.TRAINING], Scope.TRAINING)
    assert not scopes_cover([Scope.INFERENCE], Scope.ADMIN)
    assert not scopes_cover([], Scope.INFERENCE)


def test_scope_names_are_validated_and_normalized() -> None:
    assert parse_scopes(["training", "inference", "inference"]) == (
        Scope.INFERENCE,
        Scope.TRAINING,
    )
    assert [s.value for s in Scope] == [
        "inference",
        "models:read",
        "models:write",
        "training",
        "admin",
    ]
    with pytest.raises(InvalidRequest, match="unknown scope 'root'"):
        parse_scopes(["root"])
    with pytest.raises(InvalidRequest, match="at least one scope"):
        parse_scopes([])


def test_require_refuses_a_missing_scope_with_403() -> None:
    reader = Principal(project="p", key_id=1, prefix="abcd1234", scopes=(Scope.MODELS_READ,))
    require(reader, Scope.MODELS_READ)
    with pytest.raises(PermissionDenied) as caught:
        require(reader, Scope.MODELS_WRITE)
    assert caught.value.status_code == 403
    assert caught.value.error_type == "permission_error"
    assert "models:write" in caught.value.message
    admin = Principal(project="p", key_id=2, prefix="abcd1235", scopes=(Scope.ADMIN,))
    for scope in Scope:
        require(admin, scope)
