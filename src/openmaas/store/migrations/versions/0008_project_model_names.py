"""Model names are each project's own: unique per (project, name), not across the server.

A tenant that registered a name another project held was told `409 name_taken`, which
revealed that the hidden name existed; now each project has its own namespace.

Revision ID: 0008_project_model_names
Revises: 0007_batches
"""

from alembic import op

revision = "0008_project_model_names"
down_revision = "0007_batches"
branch_labels = None
depends_on = None

# 0001 declared the name `unique=True` without naming the constraint: PostgreSQL names it
# itself; SQLite leaves it unnamed, and batch mode names it by this convention to drop it.
_SQLITE_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _unnamed_unique() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "registered_models_name_key"
    return "uq_registered_models_name"


def upgrade() -> None:
    with op.batch_alter_table("registered_models", naming_convention=_SQLITE_NAMING) as batch:
        batch.drop_constraint(_unnamed_unique(), type_="unique")
        batch.create_unique_constraint("uq_model_project_name", ["project", "name"])
        batch.create_index("ix_registered_models_name", ["name"])


def downgrade() -> None:
    with op.batch_alter_table("registered_models", naming_convention=_SQLITE_NAMING) as batch:
        batch.drop_index("ix_registered_models_name")
        batch.drop_constraint("uq_model_project_name", type_="unique")
        batch.create_unique_constraint(_unnamed_unique(), ["name"])
