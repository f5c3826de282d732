"""Batches: what a batch job adds to its job row, and the answer of each of its requests.

Revision ID: 0007_batches
Revises: 0006_job_kinds
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_batches"
down_revision = "0006_job_kinds"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _job_id() -> sa.Column[str]:
    return sa.Column(
        "job_id",
        sa.String(64),
        sa.ForeignKey("training_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "batches",
        _job_id(),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("errors", sa.JSON, nullable=False),
        sa.Column("in_progress_at", TZ, nullable=True),
        sa.Column("cancelling_at", TZ, nullable=True),
        sa.Column("finalizing_at", TZ, nullable=True),
        sa.Column("expired_at", TZ, nullable=True),
        sa.Column("output_file_id", sa.String(64), nullable=True),
        sa.Column("error_file_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "batch_results",
        _job_id(),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("custom_id", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("body", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("batch_results")
    op.drop_table("batches")
