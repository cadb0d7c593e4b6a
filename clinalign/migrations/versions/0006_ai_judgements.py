"""AI judges' verdicts, in a table apart from clinicians' judgements

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ai_judgement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(length=20), nullable=False),
        sa.Column("ratings_a", sa.JSON(), nullable=True),
        sa.Column("ratings_b", sa.JSON(), nullable=True),
        sa.Column("tags_a", sa.JSON(), nullable=False),
        sa.Column("tags_b", sa.JSON(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "user_id"),
    )
    with op.batch_alter_table("ai_judgement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ai_judgement_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ai_judgement_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_table("ai_judgement")
