"""Rollout: traffic splits on aliases, and aliases' evaluation gates.

Revision ID: 0009_rollout
Revises: 0008_project_model_names
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_rollout"
down_revision = "0008_project_model_names"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _model_id() -> sa.Column[int]:
    return sa.Column(
        "model_id",
        sa.Integer,
        sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )


def upgrade() -> None:
    op.create_table(
        "alias_traffic",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _model_id(),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("weights", sa.JSON, nullable=False),
        sa.Column("sticky", sa.String(128), nullable=True),
        sa.Column("shadow_version", sa.Integer, nullable=True),
        sa.Column("shadow_share", sa.Float, nullable=False),
        sa.Column("rollback", sa.JSON, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("model_id", "alias", name="uq_alias_traffic"),
    )
    op.create_table(
        "alias_policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _model_id(),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("eval_file", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("min_delta", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("model_id", "alias", name="uq_alias_policy"),
    )


def downgrade() -> None:
    op.drop_table("alias_policies")
    op.drop_table("alias_traffic")
