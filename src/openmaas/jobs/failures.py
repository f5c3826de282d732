"""What a tenant is told when its job fails: a clear message, never a traceback or a path.

A job's error and events are read by its project's keys. The worker logs the traceback (with
the job id) for the operator; the job records one line: a domain error's own message, or for
anything else the exception's type and the first line of its message, with absolute paths
replaced (they name the server's directories) and a bounded length. Database errors quote
SQL and connection details, so they are reported by type only.

Example::

    public_message(FileNotFoundError(2, "No such file", "/srv/openmaas/training/x"))
    # -> "FileNotFoundError: [Errno 2] No such file: '<server path>'"
"""

from __future__ import annotations

import re

from openmaas.errors import OpenMaaSError

MAX_MESSAGE_CHARS = 500
SERVER_PATH = "<server path>"
# An absolute path of two or more components (POSIX, Windows, or under `~`); a relative
# one (`weights/model.bin`) says nothing of the server and stays.
_PATH = re.compile(r"(?<![\w.:])(?:~|[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")
_INTERNAL_MODULES = ("sqlalchemy.", "psycopg", "sqlite3")


def public_message(exc: BaseException) -> str:
    """One line for the job's error: what went wrong, with nothing of the server's insides."""
    if isinstance(exc, OpenMaaSError):
        return redact_paths(_first_line(exc.message)) or type(exc).__name__
    kind = type(exc).__name__
    if type(exc).__module__.startswith(_INTERNAL_MODULES):
        return f"{kind}: an internal error of the job system; the operator's log has the details"
    text = redact_paths(_first_line(str(exc)))
    return f"{kind}: {text}" if text else kind


def redact_paths(text: str) -> str:
    return _PATH.sub(SERVER_PATH, text)[:MAX_MESSAGE_CHARS]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
