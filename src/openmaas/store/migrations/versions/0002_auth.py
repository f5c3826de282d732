"""Auth: projects (with the `default` project) and API keys.

Revision ID: 0002_auth
Revises: 0001_registry
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002_auth"
down_revision = "0001_registry"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "project_id",
            sa.Integer,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", TZ, nullable=True),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
        sa.Column("last_used_at", TZ, nullable=True),
    )
    # Every installation has the project that the bootstrap admin key and unscoped
    # resources belong to.
    op.bulk_insert(
        projects,
        [
            {
                "name": "default",
                "description": "Created with the database.",
                "created_at": datetime.now(UTC),
                "created_by": "system",
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("projects")
