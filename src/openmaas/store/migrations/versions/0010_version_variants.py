"""Version variants: another build of a version (its ONNX export) that serves in its place.

Revision ID: 0010_version_variants
Revises: 0009_rollout
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_version_variants"
down_revision = "0009_rollout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_variants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("runtime", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("version_id", "kind", name="uq_version_variant"),
    )


def downgrade() -> None:
    op.drop_table("version_variants")
