"""Job kinds: every job names the kind that prepares and runs it; existing jobs are training.

Revision ID: 0006_job_kinds
Revises: 0005_training
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_job_kinds"
down_revision = "0005_training"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(32), nullable=False, server_default="training")
        )


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("kind")
