"""Claim leases: ``videos.claims`` counts every claim of a video and is never reset.

A worker's claim was fenced by ``attempts``, but a reindex resets ``attempts`` to 0 (it is a new
request with a full set of attempts), so a stale worker could find its attempt number handed out
again and write over the new run. ``claims`` is the fencing token instead (``worker/jobs.py``):
every claim increments it and nothing lowers it, so a lease never repeats for a video.

Existing rows start at ``attempts``. Any start would do for fencing: leases exist only in workers
of this version, each compared with its own row's counter, which only grows from here; jobs
still running in workers of the previous version fence on ``attempts``, which every claim still
increments. Starting there keeps ``claims >= attempts`` on every row (a claim increments both,
only a reindex lowers ``attempts``). Workers of the previous version do not count their claims
here: stop them before workers of this version start.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE videos ADD COLUMN claims bigint NOT NULL DEFAULT 0")
    op.execute("UPDATE videos SET claims = attempts")


def downgrade() -> None:
    op.execute("ALTER TABLE videos DROP COLUMN claims")
