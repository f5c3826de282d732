"""JSON bodies with lone UTF-16 surrogates are refused at decoding (issue 13)."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
from fastapi import APIRouter

import openmaas.api
from openmaas.api.json_body import StrictJSONRoute, loads_strict


@pytest.mark.parametrize(
    "body",
    [rb'{"a": "\ud800"}', rb'{"\udfff": 1}', rb'[["x", {"t": "a\uDBFFb"}]]', rb'"\ude00\ud83d"'],
)
def test_a_lone_surrogate_anywhere_is_refused(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError, match="lone UTF-16 surrogate"):
        loads_strict(body)


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (rb'{"emoji": "\ud83d\ude00"}', {"emoji": "\U0001f600"}),  # a pair is one character
        (rb'{"text": "\\ud800"}', {"text": "\\ud800"}),  # an escaped backslash, then letters
        ('{"text": "caf\u00e9 \U0001f600"}'.encode(), {"text": "caf\u00e9 \U0001f600"}),
    ],
)
def test_text_is_decoded_as_json_loads_does(body: bytes, value: object) -> None:
    assert loads_strict(body) == value


def test_every_router_of_the_api_decodes_strictly() -> None:
    routers = []
    for module_info in pkgutil.walk_packages(openmaas.api.__path__, "openmaas.api."):
        module = importlib.import_module(module_info.name)
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            routers.append(module_info.name)
            assert router.route_class is StrictJSONRoute, module_info.name
            assert all(isinstance(r, StrictJSONRoute) for r in router.routes), module_info.name
    assert len(routers) >= 10
