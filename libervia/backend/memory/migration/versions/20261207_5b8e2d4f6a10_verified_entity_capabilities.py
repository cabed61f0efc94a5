"""verified entity capabilities

A table of the disco#info each verified entity capabilities hash (XEP-0115) stands
for, shared by every profile.

Revision ID: 5b8e2d4f6a10
Revises: c3d5e7f90b12
Create Date: 2026-12-07 22:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '5b8e2d4f6a10'
down_revision: str | Sequence[str] | None = 'c3d5e7f90b12'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'disco_caps',
        sa.Column('hash_algo', sa.String(length=32), nullable=False),
        sa.Column('ver', sa.String(length=255), nullable=False),
        sa.Column('info', sa.Text(), nullable=False),
        sa.Column('created', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('hash_algo', 'ver', name=op.f('pk_disco_caps')),
    )


def downgrade() -> None:
    op.drop_table('disco_caps')
