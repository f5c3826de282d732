"""Ownership: every model belongs to a project; public models are visible to all.

Models registered before this belong to the default project; the catalog's are public.

Revision ID: 0004_ownership
Revises: 0003_metering
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_ownership"
down_revision = "0003_metering"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.add_column(
            sa.Column("project", sa.String(128), nullable=False, server_default="default")
        )
        batch.add_column(sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.create_index("ix_registered_models_project", ["project"])
    models = sa.table("registered_models", sa.column("created_by"), sa.column("public"))
    op.execute(models.update().where(models.c.created_by == "catalog").values(public=True))


def downgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_index("ix_registered_models_project")
        batch.drop_column("public")
        batch.drop_column("project")
