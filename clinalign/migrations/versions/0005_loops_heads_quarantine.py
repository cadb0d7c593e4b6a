"""loops, the signed audit head and signed pending events, rejected raw records, hashed sign-in names,
clinicians' originals

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("loop_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_run_loop_id"), ["loop_id"], unique=False)
        batch_op.create_foreign_key("fk_run_loop_id_run", "run", ["loop_id"], ["id"])
    # Runs recorded before loops existed form one loop, begun by the first run.
    op.execute("UPDATE run SET loop_id = (SELECT MIN(id) FROM run)")

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )

    # Events left pending by a server stopped before this upgrade carry no signature: the next seal
    # chains them as unsigned evidence, which `audit verify` then names.
    with op.batch_alter_table("audit_pending", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), server_default="", nullable=False))

    with op.batch_alter_table("raw_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=20), server_default="quarantined", nullable=False))
        batch_op.add_column(sa.Column("rejected_reason", sa.String(length=500), nullable=True))

    with op.batch_alter_table("judgement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("original", sa.JSON(), nullable=True))

    # Attempts are only kept for a 15-minute throttle window: the clear-text names are dropped, not hashed.
    op.execute("DELETE FROM login_attempt")
    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_attempt_username"))
        batch_op.drop_column("username")
        batch_op.add_column(sa.Column("username_hash", sa.String(length=64), nullable=False))
        batch_op.create_index(batch_op.f("ix_login_attempt_username_hash"), ["username_hash"], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM login_attempt")
    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_attempt_username_hash"))
        batch_op.drop_column("username_hash")
        batch_op.add_column(sa.Column("username", sa.String(length=100), nullable=False))
        batch_op.create_index(batch_op.f("ix_login_attempt_username"), ["username"], unique=False)
    with op.batch_alter_table("judgement", schema=None) as batch_op:
        batch_op.drop_column("original")
    with op.batch_alter_table("raw_record", schema=None) as batch_op:
        batch_op.drop_column("rejected_reason")
        batch_op.drop_column("status")
    with op.batch_alter_table("audit_pending", schema=None) as batch_op:
        batch_op.drop_column("mac")
    op.drop_table("audit_head")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_constraint("fk_run_loop_id_run", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_run_loop_id"))
        batch_op.drop_column("loop_id")
