"""Metering: limits on projects and keys, usage records, the audit log.

Revision ID: 0003_metering
Revises: 0002_auth
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_metering"
down_revision = "0002_auth"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    for table in ("projects", "api_keys"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("limits", sa.JSON, nullable=False, server_default="{}"))
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TZ, nullable=False, index=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("key_id", sa.Integer, nullable=True),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("audio_seconds", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_usage_project_time", "usage_records", ["project", "created_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TZ, nullable=False, index=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("client_address", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_index("ix_usage_project_time", "usage_records")
    op.drop_table("usage_records")
    for table in ("api_keys", "projects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("limits")
