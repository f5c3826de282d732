"""Side-by-side comparison of two versions of one model."""

from __future__ import annotations

import dataclasses
from typing import Any

from openmaas.registry.entities import ModelVersion, VersionComparison


def compare_versions(a: ModelVersion, b: ModelVersion) -> VersionComparison:
    metrics: dict[str, dict[str, float | None]] = {}
    for name in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(name), b.metrics.get(name)
        delta = vb - va if va is not None and vb is not None else None
        metrics[name] = {"a": va, "b": vb, "delta": delta}
    params: dict[str, dict[str, Any]] = {}
    for name in sorted(set(a.params) | set(b.params)):
        if a.params.get(name, _MISSING) != b.params.get(name, _MISSING):
            params[name] = {"a": a.params.get(name), "b": b.params.get(name)}
    files_a = {f.path: f.sha256 for f in a.files}
    files_b = {f.path: f.sha256 for f in b.files}
    changed = tuple(sorted(p for p in files_a.keys() & files_b.keys() if files_a[p] != files_b[p]))
    fields = {
        field.name: {"a": getattr(a, field.name), "b": getattr(b, field.name)}
        for field in dataclasses.fields(ModelVersion)
        if field.name not in _NOT_FIELDS and getattr(a, field.name) != getattr(b, field.name)
    }
    return VersionComparison(
        model=a.model,
        a=a.version,
        b=b.version,
        metrics=metrics,
        params=params,
        files_added=tuple(sorted(files_b.keys() - files_a.keys())),
        files_removed=tuple(sorted(files_a.keys() - files_b.keys())),
        files_changed=changed,
        files_unchanged=len(files_a.keys() & files_b.keys()) - len(changed),
        lineage={"a": a.lineage.to_dict(), "b": b.lineage.to_dict()},
        fields=fields,
    )


_MISSING = object()
# Every other field of a version is compared. These are not: the versions' identity, what has
# a section of its own, and when a version was stored and which aliases point at it now
# (these say nothing about what it is).
_NOT_FIELDS = frozenset(
    {"model", "version", "metrics", "params", "files", "lineage", "created_at", "aliases"}
)
