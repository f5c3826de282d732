"""The caller is explicit on every service, and a missing one is refused everywhere.

Walks the public methods of every service the server builds (`wiring.Services`): each one
that takes `caller` must refuse `caller=None` with MissingCaller before it reads or changes
anything, whatever its other arguments; each one that takes no caller must be on the short
list below of methods that touch no tenant data. A new service method that reads tenant data
without a caller fails this test.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openmaas.auth import access
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import MissingCaller, ModelNotFound
from openmaas.settings import Settings
from openmaas.wiring import Services

# Public methods without a caller, and why each is not tenant data.
NO_CALLER: dict[str, set[str]] = {
    # lifecycle, change listeners, and the artifact sweep's own bookkeeping
    # (`variant_location`: where a variant's files are, for `ModelFiles.open_variant`,
    # which takes the caller)
    "RegistryStore": {
        "add_listener",
        "changed",
        "stored_locations",
        "stored_version_rows",
        "variant_location",
    },
    "VariantService": set(),
    "AliasService": set(),
    "RegistrationService": set(),
    "ModelFiles": {"root_of", "start"},
    "Registry": {"add_listener", "start"},
    "DatasetService": {"start"},
    # `authenticate` is how a caller comes to exist; `check_pepper` is start-up's own check
    # of the server's configuration against its database, before any caller exists
    "AuthService": {"authenticate", "check_pepper"},
    # writing usage and audit records is the server's own work; reading them needs a caller
    "UsageRecorder": {"close", "flush", "knows_project", "record", "start"},
    "AuditLog": {"record"},
    "JobService": {"kind"},
    # token_bound/generation_bound: upper bounds of a request's tokens from its inputs alone;
    # replica_sets: where loaded versions run (the model list filters by caller itself)
    "InferenceEngine": {
        "close",
        "generation_bound",
        "is_loaded",
        "is_ready",
        "replica_sets",
        "start",
        "token_bound",
    },
    # the built-in catalog: public definitions, registered as SYSTEM
    "CatalogService": {"entries", "get", "register", "register_available"},
}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(
        Settings(home=tmp_path, catalog_autoregister=False, workers=0, admin_key=None)
    )
    built.start()
    yield built
    built.close()


def _service_objects(services: Services) -> dict[str, object]:
    registry = services.registry
    found = [
        registry.store,
        registry.aliases,
        registry.registration,
        registry.files,
        registry.variants,
        registry,
        services.datasets,
        services.auth,
        services.usage,
        services.audit,
        services.jobs,
        services.engine,
        services.catalog,
    ]
    return {type(service).__name__: service for service in found}


def _public_methods(service: object) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(type(service), inspect.isfunction)
        if not name.startswith("_")
    }


def _call_without_caller(method: Any, signature: inspect.Signature) -> object:
    """Call with None for every required argument and for the caller; run what it returns
    (a coroutine, an iterator) far enough to reach its first statement."""
    arguments: dict[str, Any] = {}
    positional: list[Any] = []
    for name, parameter in list(signature.parameters.items())[1:]:  # skip self
        if name == "caller":
            arguments[name] = None
        elif parameter.default is inspect.Parameter.empty and parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional.append(None)
        elif parameter.default is inspect.Parameter.empty and parameter.kind is (
            inspect.Parameter.KEYWORD_ONLY
        ):
            arguments[name] = None
    result = method(*positional, **arguments)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    if isinstance(result, Iterator):
        return next(result)
    return result


def test_every_service_method_takes_a_caller_or_is_listed(services: Services) -> None:
    objects = _service_objects(services)
    assert set(objects) == set(NO_CALLER)
    for name, service in objects.items():
        without = {m for m, s in _public_methods(service).items() if "caller" not in s.parameters}
        assert without == NO_CALLER[name], f"{name}: methods without a caller: {without}"


def test_every_service_method_refuses_a_missing_caller(services: Services) -> None:
    refused: list[str] = []
    for name, service in _service_objects(services).items():
        for method_name, signature in _public_methods(service).items():
            if "caller" not in signature.parameters:
                continue
            method = getattr(service, method_name)
            with pytest.raises(MissingCaller, match="explicit caller"):
                _call_without_caller(method, signature)
            refused.append(f"{name}.{method_name}")
    # every registry, dataset, auth, metering, job and engine entry point
    assert len(refused) >= 50, refused


def test_access_decisions_fail_closed_without_a_caller() -> None:
    lost: Any = None  # what a thread or another process that lost its caller would pass
    assert not access.is_admin(lost)
    assert not access.can_see("acme", False, lost)
    assert not access.can_see("acme", True, lost)
    assert not access.can_change("acme", False, lost)
    with pytest.raises(ModelNotFound):
        access.check_visible("m", "acme", True, lost)
    with pytest.raises(MissingCaller):
        access.require_caller(lost)


def test_the_system_principal_is_explicit_and_no_ambient_caller_exists() -> None:
    assert access.is_admin(SYSTEM)
    assert access.can_see("acme", False, SYSTEM)
    tenant = Principal(project="acme", key_id=3, prefix="acme0003", scopes=(Scope.INFERENCE,))
    assert access.can_see("acme", False, tenant)
    assert not access.can_see("other", False, tenant)
    assert access.can_see("other", True, tenant)
    # No context variable decides access: nothing to set, nothing to inherit.
    assert not any(
        hasattr(access, name) for name in ("set_principal", "current_principal", "acting_as")
    )
