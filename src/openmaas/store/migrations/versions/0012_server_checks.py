"""Fingerprints every server on one database must share: a server with another key pepper
refuses to start instead of refusing every key.

Revision ID: 0012_server_checks
Revises: 0011_console_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_server_checks"
down_revision = "0011_console_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_checks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_checks")
