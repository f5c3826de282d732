"""`openmaas keys ...` and `openmaas projects ...`: API keys, projects and their limits.

    openmaas projects create acme --limit requests_per_minute=600 --limit tokens_per_day=1000000
    openmaas keys create ci-bot --project acme --scope inference --expires-in-days 90
    openmaas keys revoke 7

Every command needs an admin key (OPENMAAS_API_KEY), except `keys whoami`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from openmaas.cli.common import CLIError, JsonFlag, client_from, out, plain, print_json, table, when
from openmaas.protocol.admin import KeyOut, ProjectOut

keys_app = typer.Typer(help="API keys: create, list, revoke, limits, whoami.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects (tenants): create, list, limits.", no_args_is_help=True)

LimitOption = Annotated[
    list[str] | None,
    typer.Option(
        "--limit",
        help="FIELD=N (repeatable): requests_per_minute, tokens_per_minute, tokens_per_day, "
        "tokens_per_month, training_jobs_per_day.",
    ),
]
ProjectOption = Annotated[str, typer.Option(help="The project the key belongs to.")]


def parse_limits(values: list[str] | None) -> dict[str, int | None]:
    limits: dict[str, int | None] = {}
    for item in values or []:
        field, sep, raw = item.partition("=")
        if not sep or not field.strip():
            raise CLIError(f"--limit {item!r}: write FIELD=N, e.g. requests_per_minute=60", 2)
        value = raw.strip().lower()
        if value in ("", "none", "unlimited"):
            limits[field.strip()] = None
            continue
        try:
            limits[field.strip()] = int(value)
        except ValueError:
            raise CLIError(f"--limit {item!r}: N must be a whole number", 2) from None
    return limits


def _limits_text(limits: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(limits.items())) or "-"


def _key_row(key: KeyOut) -> list[str]:
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        state = "expired"
    else:
        state = "active"
    return [
        str(key.id),
        key.prefix,
        key.name,
        key.project,
        ",".join(key.scopes),
        state,
        when(key.expires_at) if key.expires_at else "-",
        when(key.last_used_at) if key.last_used_at else "-",
    ]


# -- keys -----------------------------------------------------------------------------------


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. ci-bot.")],
    scope: Annotated[
        list[str],
        typer.Option(help="inference, models:read, models:write, training or admin (repeatable)."),
    ],
    project: ProjectOption = "default",
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire this many days from now.", min=0.001)
    ] = None,
    limit: LimitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key. Its secret is printed once: store it now."""
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    with client_from(ctx) as client:
        created = client.create_key(
            name, scope, project=project, expires_at=expires, limits=parse_limits(limit)
        )
    if as_json:
        print_json(created)
        return
    out.print(plain(f"created key {created.id} ({created.prefix}) in project {created.project}"))
    out.print(plain("its secret is shown only now; store it:"))
    out.print(plain(created.key))


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List keys (never their secrets)."""
    with client_from(ctx) as client:
        keys = client.list_keys(project)
    if as_json:
        print_json(keys)
        return
    grid = table("ID", "PREFIX", "NAME", "PROJECT", "SCOPES", "STATE", "EXPIRES", "LAST USED")
    for key in keys:
        grid.add_row(*(plain(cell) for cell in _key_row(key)))
    out.print(grid)


@keys_app.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key_id: Annotated[int, typer.Argument(help="The key's id (see `keys list`).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key: its next request is refused."""
    with client_from(ctx) as client:
        key = client.revoke_key(key_id)
    if as_json:
        print_json(key)
        return
    out.print(plain(f"revoked key {key.id} ({key.prefix})"))


@keys_app.command("limits")
def key_limits(
    ctx: typer.Context,
    key_id: Annotated[int, typer.Argument(help="The key's id.")],
    limit: LimitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Replace a key's overrides of its project's limits (none given: inherit them all)."""
    with client_from(ctx) as client:
        key = client.set_key_limits(key_id, parse_limits(limit))
    if as_json:
        print_json(key)
        return
    out.print(plain(f"key {key.id} ({key.prefix}) limits: {_limits_text(key.limits)}"))


@keys_app.command("whoami")
def whoami(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the project and scopes of the key in OPENMAAS_API_KEY."""
    with client_from(ctx) as client:
        me = client.whoami()
    if as_json:
        print_json(me)
        return
    out.print(plain(f"{me.prefix} in project {me.project}: {', '.join(me.scopes)}"))


# -- projects -------------------------------------------------------------------------------


def _project_line(project: ProjectOut) -> str:
    return f"{project.name}: limits {_limits_text(project.limits)}"


@projects_app.command("create")
def create_project(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Letters, digits, '.', '_' or '-'.")],
    description: Annotated[str, typer.Option(help="What the project is.")] = "",
    limit: LimitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a project."""
    with client_from(ctx) as client:
        project = client.create_project(name, description, parse_limits(limit))
    if as_json:
        print_json(project)
        return
    out.print(plain(f"created project {_project_line(project)}"))


@projects_app.command("list")
def list_projects(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List projects with their limits."""
    with client_from(ctx) as client:
        projects = client.list_projects()
    if as_json:
        print_json(projects)
        return
    grid = table("NAME", "LIMITS", "CREATED", "BY", "DESCRIPTION")
    for project in projects:
        grid.add_row(
            plain(project.name),
            plain(_limits_text(project.limits)),
            plain(when(project.created_at)),
            plain(project.created_by),
            plain(project.description),
        )
    out.print(grid)


@projects_app.command("limits")
def project_limits(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project.")],
    limit: LimitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Replace a project's rate limits and quotas (none given: unlimited)."""
    with client_from(ctx) as client:
        project = client.set_project_limits(name, parse_limits(limit))
    if as_json:
        print_json(project)
        return
    out.print(plain(_project_line(project)))
