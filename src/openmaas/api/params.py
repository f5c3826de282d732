"""Path parameters several routes share, bounded to what the store can look up.

A number past `MAX_ROW_ID` names no row; unbounded, it reached SQLite's driver, which raises
OverflowError (a 500) instead of finding nothing. Bounded here, it answers 400 saying why.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from openmaas.protocol.common import MAX_ROW_ID

KeyIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The key's id.")]
VersionPath = Annotated[
    int, Path(ge=1, le=MAX_ROW_ID, description="A version number: 1, 2, 3, ...")
]
