"""The import ledger: which rows of an export an import has already written, and as what.

Each batch of an import writes its rows and their ledger entries in one transaction, so an
import that was killed resumes where it stopped and adds nothing twice.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_ledger",
        sa.Column("export_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("export_id", "kind", "source_id", name=op.f("pk_import_ledger")),
    )


def downgrade() -> None:
    op.drop_table("import_ledger")
