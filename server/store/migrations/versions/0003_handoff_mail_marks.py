"""handoff_mail_marks: the per-dialog throttle of the owner's handoff e-mails

One row per (dialog, kind of mail) with the time the last one was queued; see
`server/handoff_mail.py`. Replaces the original's in-memory, per-process cooldown (spec §6.7).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "handoff_mail_marks",
        sa.Column("dialog_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sent_at", server.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dialog_id"], ["dialogs.id"],
            name=op.f("fk_handoff_mail_marks_dialog_id_dialogs"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dialog_id", "kind", name=op.f("pk_handoff_mail_marks")),
    )


def downgrade() -> None:
    op.drop_table("handoff_mail_marks")
