"""Path parameters several routes share, bounded to what the store can look up.

A number past `MAX_ROW_ID` names no row; unbounded, it reached SQLite's driver, which raises
OverflowError (a 500) instead of finding nothing. Bounded here, it answers 400 saying why.

A model's name in a path may come with `?project=`: names are each project's own, and an
admin names another project's model that way (`/v1/registry/models/bert?project=acme`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from openmaas.protocol.common import MAX_ROW_ID
from openmaas.registry.names import qualified

KeyIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The key's id.")]
VersionPath = Annotated[
    int, Path(ge=1, le=MAX_ROW_ID, description="A version number: 1, 2, 3, ...")
]


def model_in_project(
    name: Annotated[str, Path(description="The model's name.")],
    project: Annotated[
        str | None,
        Query(
            description="The project the model belongs to (an admin naming another "
            "project's model). Default: the caller's own project's model of that name, else "
            "the public one."
        ),
    ] = None,
) -> str:
    """The model as the registry names it: `name`, or `project/name`."""
    return qualified(project, name)


ModelPath = Annotated[str, Depends(model_in_project)]
