"""The auth service: projects, API keys (shown once, stored hashed), authentication.

Example::

    auth = AuthService(db, pepper=settings.key_pepper)
    plaintext = auth.bootstrap_admin_key(caller=SYSTEM)  # print once; None when keys exist
    key, secret = auth.create_key("default", "ci", [Scope.INFERENCE], caller=admin)
    principal = auth.authenticate(secret)
    require(principal, Scope.INFERENCE)

Every method that reads or changes projects and keys takes the caller explicitly and refuses
a missing one (`MissingCaller`) or one without the `admin` scope; `authenticate` is how a
caller comes to be, so it takes none.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas.auth.access import require_admin
from openmaas.auth.entities import DEFAULT_PROJECT, ApiKey, Principal, Project
from openmaas.auth.keys import (
    GeneratedKey,
    MalformedKey,
    check_pepper,
    generate_key,
    hash_secret,
    new_salt,
    parse_key,
    pepper_fingerprint,
    verify_secret,
)
from openmaas.auth.scopes import Scope, parse_scopes
from openmaas.errors import (
    ApiKeyNotFound,
    AuthenticationFailed,
    Conflict,
    InvalidName,
    InvalidRequest,
    PepperMismatch,
    ProjectNotFound,
)
from openmaas.store.database import Database
from openmaas.store.tables import ApiKeyRow, ConsoleSessionRow, ProjectRow, ServerCheckRow

# Same rule as model names, so a project name is safe in paths, URLs and headers; checked
# with fullmatch (`$` would also match before a trailing newline).
PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_KEY_NAME_CHARS = 128
PEPPER_CHECK = "key_pepper"  # its row in `server_checks`
# last_used_at is informational; writing it on every request would make each request a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A new prefix colliding with an existing one is a one-in-10^12 event; retrying a few times
# turns it into never.
PREFIX_ATTEMPTS = 5
BOOTSTRAP_KEY_NAME = "bootstrap admin"

MISSING_KEY = "no API key: send it as 'Authorization: Bearer <key>' or in the 'X-API-Key' header"
# One message for an unknown prefix and a wrong secret: callers cannot probe prefixes.
INVALID_KEY = "invalid API key"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _active_principal(
    row: ApiKeyRow, project: str, project_limits: dict[str, Any] | None, moment: datetime
) -> Principal:
    """Who a key row stands for, if it is neither revoked nor expired at `moment`."""
    if row.revoked_at is not None:
        raise AuthenticationFailed("this API key has been revoked", code="api_key_revoked")
    if row.expires_at is not None and moment >= _aware(row.expires_at):
        raise AuthenticationFailed("this API key has expired", code="api_key_expired")
    return Principal(
        project=project,
        key_id=row.id,
        prefix=row.prefix,
        scopes=parse_scopes(row.scopes),
        expires_at=_optional_aware(row.expires_at),
        project_limits=dict(project_limits or {}),
        key_limits=dict(row.limits or {}),
    )


def _optional_aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else _aware(moment)


def check_project_name(name: str) -> str:
    if not isinstance(name, str) or not PROJECT_NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid project name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            param="name",
        )
    return name


def check_key_name(name: str) -> str:
    if not name or len(name) > MAX_KEY_NAME_CHARS or not name.isprintable():
        raise InvalidName(
            f"a key name is 1-{MAX_KEY_NAME_CHARS} printable characters", param="name"
        )
    return name


class AuthService:
    """Projects and their API keys; turns a presented key into a Principal."""

    def __init__(self, db: Database, pepper: bytes) -> None:
        self.db = db
        self._pepper = check_pepper(pepper)
        # Hashed against when the prefix is unknown, so that answer takes as long as a
        # wrong secret for a known prefix.
        self._decoy_salt = new_salt()
        self._decoy_hash = hash_secret(self._pepper, self._decoy_salt, "decoy")

    # -- projects -----------------------------------------------------------------------

    def create_project(
        self, name: str, description: str = "", *, caller: Principal, actor: str = ""
    ) -> Project:
        require_admin(caller)
        check_project_name(name)
        try:
            with self.db.transaction() as session:
                if session.scalar(select(ProjectRow.id).where(ProjectRow.name == name)):
                    raise Conflict(f"project {name!r} already exists", param="name")
                row = ProjectRow(
                    name=name,
                    description=description,
                    created_at=_now(),
                    created_by=actor,
                    limits={},
                )
                session.add(row)
                session.flush()
                return self._project_entity(row)
        except IntegrityError:
            # Another process created it between our check and our insert.
            raise Conflict(f"project {name!r} already exists", param="name") from None

    def list_projects(self, *, caller: Principal) -> list[Project]:
        require_admin(caller)
        with self.db.transaction() as session:
            rows = session.scalars(select(ProjectRow).order_by(ProjectRow.name)).all()
            return [self._project_entity(row) for row in rows]

    def get_project(self, name: str, *, caller: Principal) -> Project:
        require_admin(caller)
        with self.db.transaction() as session:
            return self._project_entity(self._project_row(session, name))

    # -- keys ---------------------------------------------------------------------------

    def create_key(
        self,
        project: str,
        name: str,
        scopes: Iterable[Scope | str],
        *,
        expires_at: datetime | None = None,
        caller: Principal,
        actor: str = "",
    ) -> tuple[ApiKey, str]:
        """Create a key; the plaintext in the answer is the only copy there will ever be."""
        require_admin(caller)
        check_key_name(name)
        granted = parse_scopes(scopes)
        expires = _optional_aware(expires_at)
        if expires is not None and expires <= _now():
            raise InvalidRequest("expires_at must be in the future", param="expires_at")
        with self.db.transaction() as session:
            project_row = self._project_row(session, project)
            key = self._unused_key(session)
            row = self._insert_key(session, project_row, name, key, granted, expires, actor)
            return self._key_entity(row, project_row.name), key.plaintext

    def list_keys(self, project: str | None = None, *, caller: Principal) -> list[ApiKey]:
        """Every key (revoked and expired included), oldest first; never hashes or secrets."""
        require_admin(caller)
        with self.db.transaction() as session:
            query = select(ApiKeyRow, ProjectRow.name).join(
                ProjectRow, ApiKeyRow.project_id == ProjectRow.id
            )
            if project is not None:
                query = query.where(ApiKeyRow.project_id == self._project_row(session, project).id)
            rows = session.execute(query.order_by(ApiKeyRow.id)).all()
            return [self._key_entity(row, project_name) for row, project_name in rows]

    def get_key(self, key_id: int, *, caller: Principal) -> ApiKey:
        require_admin(caller)
        with self.db.transaction() as session:
            row, project_name = self._key_row(session, key_id)
            return self._key_entity(row, project_name)

    def revoke_key(self, key_id: int, *, caller: Principal, actor: str = "") -> ApiKey:
        """Revoke a key; the next authenticate with it fails. Revoking twice changes nothing."""
        require_admin(caller)
        with self.db.transaction() as session:
            row, project_name = self._key_row(session, key_id, lock=True)
            if row.revoked_at is None:
                row.revoked_at = _now()
                row.revoked_by = actor
            # Its console sessions end with it, in every server process on this database.
            session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.key_id == key_id))
            return self._key_entity(row, project_name)

    def bootstrap_admin_key(
        self, given_plaintext: str | None = None, *, caller: Principal
    ) -> str | None:
        """On a store without any key, create an admin key in the default project.

        With `given_plaintext` (OPENMAAS_ADMIN_KEY) that key is imported instead of a new one
        generated. Returns the plaintext to print once, or None when keys already exist.
        Start-up's own work: the caller is `SYSTEM`.
        """
        require_admin(caller)
        given: GeneratedKey | None = None
        if given_plaintext is not None:
            try:
                parsed = parse_key(given_plaintext)
            except MalformedKey as exc:
                raise InvalidRequest(
                    f"OPENMAAS_ADMIN_KEY is not a valid API key: {exc.reason}",
                    param="admin_key",
                ) from None
            given = GeneratedKey(prefix=parsed.prefix, secret=parsed.secret)
        with self.db.transaction() as session:
            # Locking the default project serializes servers starting together, so exactly
            # one of them creates the key.
            project_row = self._lock_or_create_default_project(session)
            if session.scalar(select(ApiKeyRow.id).limit(1)) is not None:
                return None
            key = given or self._unused_key(session)
            self._insert_key(
                session, project_row, BOOTSTRAP_KEY_NAME, key, (Scope.ADMIN,), None, "bootstrap"
            )
            return key.plaintext

    def check_pepper(self) -> None:
        """At start: this server's pepper against the one the database's first server
        recorded (its fingerprint, `keys.pepper_fingerprint`); recorded now when none is.
        Another pepper raises `PepperMismatch`: every stored key's hash would be foreign."""
        mine = pepper_fingerprint(self._pepper)
        with self.db.transaction() as session:
            # Locking the default project serializes servers starting together, so the first
            # one's fingerprint is the one recorded.
            self._lock_or_create_default_project(session)
            stored = session.get(ServerCheckRow, PEPPER_CHECK)
            if stored is None:
                session.add(ServerCheckRow(name=PEPPER_CHECK, value=mine, created_at=_now()))
                return
            recorded = stored.value
        if not hmac.compare_digest(recorded, mine):
            raise PepperMismatch()

    # -- limits -------------------------------------------------------------------------

    def set_project_limits(
        self, name: str, limits: Mapping[str, Any], *, caller: Principal
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Replace a project's limits (already validated); returns (before, after)."""
        require_admin(caller)
        with self.db.transaction() as session:
            row = self._project_row(session, name)
            before = dict(row.limits or {})
            row.limits = dict(limits)
            return before, dict(row.limits)

    def set_key_limits(
        self, key_id: int, limits: Mapping[str, Any], *, caller: Principal
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Replace a key's own limit overrides (already validated); returns (before, after)."""
        require_admin(caller)
        with self.db.transaction() as session:
            row, _ = self._key_row(session, key_id, lock=True)
            before = dict(row.limits or {})
            row.limits = dict(limits)
            return before, dict(row.limits)

    # -- authentication -----------------------------------------------------------------

    def authenticate(self, plaintext: str | None, now: datetime | None = None) -> Principal:
        """The principal behind a presented key, or AuthenticationFailed (401).

        Revocation and expiry are read from the store on every call. Which of revoked or
        expired is said only after the secret has been verified.
        """
        if not plaintext:
            raise AuthenticationFailed(MISSING_KEY, code="missing_api_key")
        try:
            parsed = parse_key(plaintext)
        except MalformedKey as exc:
            raise AuthenticationFailed(f"malformed API key: {exc.reason}") from None
        moment = _now() if now is None else _aware(now)
        with self.db.transaction() as session:
            found = session.execute(
                select(ApiKeyRow, ProjectRow.name)
                .join(ProjectRow, ApiKeyRow.project_id == ProjectRow.id)
                .where(ApiKeyRow.prefix == parsed.prefix)
            ).first()
            if found is None:
                verify_secret(self._pepper, self._decoy_salt, parsed.secret, self._decoy_hash)
                raise AuthenticationFailed(INVALID_KEY)
            row, project_name = found
            project_limits = session.scalar(
                select(ProjectRow.limits).where(ProjectRow.id == row.project_id)
            )
            salt, expected = bytes.fromhex(row.salt), bytes.fromhex(row.secret_hash)
            if not verify_secret(self._pepper, salt, parsed.secret, expected):
                raise AuthenticationFailed(INVALID_KEY)
            principal = _active_principal(row, project_name, project_limits, moment)
            last_used = _optional_aware(row.last_used_at)
            if last_used is None or moment - last_used >= LAST_USED_RESOLUTION:
                row.last_used_at = moment
            return principal

    def principal_of_key(
        self, key_id: int, *, caller: Principal, now: datetime | None = None
    ) -> Principal:
        """The principal a key stands for now (its scopes and limits as stored), without its
        secret: for the server's own work done on a key's behalf (a batch's requests run as
        the key that created the batch). AuthenticationFailed once the key is revoked or
        expired, ApiKeyNotFound for one that is gone. Admins only (the server: `SYSTEM`)."""
        require_admin(caller)
        moment = _now() if now is None else _aware(now)
        with self.db.transaction() as session:
            row, project_name = self._key_row(session, key_id)
            project_limits = session.scalar(
                select(ProjectRow.limits).where(ProjectRow.id == row.project_id)
            )
            return _active_principal(row, project_name, project_limits, moment)

    # -- rows and entities --------------------------------------------------------------

    def _project_row(self, session: Session, name: str) -> ProjectRow:
        row = session.scalar(select(ProjectRow).where(ProjectRow.name == name))
        if row is None:
            raise ProjectNotFound(f"project {name!r} not found", param="project")
        return row

    def _lock_or_create_default_project(self, session: Session) -> ProjectRow:
        # The migration creates it; this only matters if it was removed since.
        insert = (
            pg_insert
            if session.bind and session.bind.dialect.name == "postgresql"
            else sqlite_insert
        )
        session.execute(
            insert(ProjectRow)
            .values(
                name=DEFAULT_PROJECT,
                description="",
                created_at=_now(),
                created_by="system",
                limits={},
            )
            .on_conflict_do_nothing()
        )
        return session.scalars(
            select(ProjectRow).where(ProjectRow.name == DEFAULT_PROJECT).with_for_update()
        ).one()

    def _key_row(
        self, session: Session, key_id: int, *, lock: bool = False
    ) -> tuple[ApiKeyRow, str]:
        query = select(ApiKeyRow).where(ApiKeyRow.id == key_id)
        if lock:
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            raise ApiKeyNotFound(f"API key {key_id} not found", param="key_id")
        project_name = session.scalars(
            select(ProjectRow.name).where(ProjectRow.id == row.project_id)
        ).one()
        return row, project_name

    def _unused_key(self, session: Session) -> GeneratedKey:
        for _ in range(PREFIX_ATTEMPTS):
            key = generate_key()
            taken = session.scalar(select(ApiKeyRow.id).where(ApiKeyRow.prefix == key.prefix))
            if taken is None:
                return key
        raise RuntimeError("could not find an unused key prefix")  # pragma: no cover

    def _insert_key(
        self,
        session: Session,
        project: ProjectRow,
        name: str,
        key: GeneratedKey,
        scopes: tuple[Scope, ...],
        expires_at: datetime | None,
        actor: str,
    ) -> ApiKeyRow:
        salt = new_salt()
        row = ApiKeyRow(
            project_id=project.id,
            name=name,
            prefix=key.prefix,
            salt=salt.hex(),
            secret_hash=hash_secret(self._pepper, salt, key.secret).hex(),
            scopes=[scope.value for scope in scopes],
            created_at=_now(),
            created_by=actor,
            expires_at=expires_at,
            limits={},
        )
        session.add(row)
        session.flush()
        return row

    @staticmethod
    def _project_entity(row: ProjectRow) -> Project:
        return Project(
            name=row.name,
            description=row.description,
            created_at=_aware(row.created_at),
            created_by=row.created_by,
            limits=dict(row.limits or {}),
        )

    @staticmethod
    def _key_entity(row: ApiKeyRow, project: str) -> ApiKey:
        return ApiKey(
            id=row.id,
            project=project,
            name=row.name,
            prefix=row.prefix,
            scopes=parse_scopes(row.scopes),
            created_at=_aware(row.created_at),
            created_by=row.created_by,
            expires_at=_optional_aware(row.expires_at),
            revoked_at=_optional_aware(row.revoked_at),
            revoked_by=row.revoked_by,
            last_used_at=_optional_aware(row.last_used_at),
            limits=dict(row.limits or {}),
        )
