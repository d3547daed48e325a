"""Clip thumbnails move from files into Postgres (``thumbnails``, one JPEG per clip).

A row is written in the index's own transaction, so a stale or failed run can never leave
thumbnails behind or remove the stored ones (no more run prefixes and pruning), deleting a video
takes its thumbnails with it, and a ``pg_dump`` holds them. The worker no longer creates a file
per clip (480 for a 10-minute video) and a folder per video.

``clips.thumbnail`` (a file path) goes; a clip has a thumbnail when it has a ``thumbnails`` row.
``segments.thumbnail`` (a copy of the first clip's path) becomes ``has_thumbnail``.

Upgrade reads every existing thumbnail file into the table: run it where the media directory
(``VCAT_DATA_DIR`` / ``VCAT_MEDIA_DIR``) is mounted. It refuses to run when clips name
thumbnail files and the directory that holds them does not exist (rather than drop them all); a
single file that is already missing (its thumbnail URL answered 404 before) is skipped. The files
are left on disk, since this transaction could still roll back: `media/thumbs` can be removed
once the upgrade is done. Downgrade writes the thumbnails back out as files.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from service.storage import inside_media
from vcat.settings import get_settings

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500  # thumbnails read or written per round trip


def upgrade() -> None:
    # EXTERNAL: JPEGs do not compress, so Postgres should not try before storing them.
    op.execute("""
        CREATE TABLE thumbnails (
            video_id uuid NOT NULL,
            clip_idx integer NOT NULL,
            jpeg bytea NOT NULL,
            PRIMARY KEY (video_id, clip_idx),
            FOREIGN KEY (video_id, clip_idx) REFERENCES clips(video_id, idx) ON DELETE CASCADE
        );
        ALTER TABLE thumbnails ALTER COLUMN jpeg SET STORAGE EXTERNAL;
    """)
    _import_files(op.get_bind())
    op.execute("""
        ALTER TABLE segments ADD COLUMN has_thumbnail boolean NOT NULL DEFAULT false;
        UPDATE segments s SET has_thumbnail = true
        WHERE EXISTS (SELECT 1 FROM thumbnails t
                      WHERE t.video_id = s.video_id AND t.clip_idx = s.first_clip);
        ALTER TABLE segments DROP COLUMN thumbnail;
        ALTER TABLE clips DROP COLUMN thumbnail;
    """)


def _import_files(conn: sa.Connection) -> None:
    root = get_settings().media_path.resolve()
    named = conn.scalar(sa.text("SELECT count(*) FROM clips WHERE thumbnail IS NOT NULL"))
    if not named:
        return
    if not (root / "thumbs").is_dir():
        raise RuntimeError(
            f"migration 0005 moves clip thumbnails into Postgres, but {named} clips name "
            f"thumbnail files and {root / 'thumbs'} does not exist: run `vcat migrate` where "
            "the media directory is mounted (VCAT_DATA_DIR or VCAT_MEDIA_DIR)"
        )
    insert = sa.text(
        "INSERT INTO thumbnails (video_id, clip_idx, jpeg) VALUES (:video_id, :clip_idx, :jpeg)"
    )
    # Streamed (a server-side cursor, BATCH rows at a time): there may be millions.
    result = conn.execute(
        sa.text(
            "SELECT video_id, idx, thumbnail FROM clips WHERE thumbnail IS NOT NULL"
        ).execution_options(yield_per=BATCH)
    )
    for rows in result.partitions():
        batch = []
        for video_id, idx, relative in rows:
            path = inside_media(relative)
            if path is None:
                continue  # already missing (or outside the media directory): never served
            batch.append({"video_id": video_id, "clip_idx": idx, "jpeg": path.read_bytes()})
        if batch:
            conn.execute(insert, batch)


def downgrade() -> None:
    op.execute("ALTER TABLE clips ADD COLUMN thumbnail text")
    _export_files(op.get_bind())
    op.execute("""
        ALTER TABLE segments ADD COLUMN thumbnail text;
        UPDATE segments s SET thumbnail = c.thumbnail
        FROM clips c WHERE s.has_thumbnail AND c.video_id = s.video_id AND c.idx = s.first_clip;
        ALTER TABLE segments DROP COLUMN has_thumbnail;
        DROP TABLE thumbnails;
    """)


def _export_files(conn: sa.Connection) -> None:
    """Each thumbnail back to ``thumbs/<video>/c0-0005-<clip>.jpg`` (the files' old naming: a
    run prefix, then the clip number), its path into ``clips.thumbnail``."""
    media = get_settings().media_path
    update = sa.text("UPDATE clips SET thumbnail = :path WHERE video_id = :video_id AND idx = :idx")
    result = conn.execute(
        sa.text("SELECT video_id, clip_idx, jpeg FROM thumbnails").execution_options(
            yield_per=BATCH
        )
    )
    for rows in result.partitions():
        paths = []
        for video_id, idx, jpeg in rows:
            relative = Path("thumbs") / str(video_id) / f"c0-0005-{idx:06d}.jpg"
            (media / relative).parent.mkdir(parents=True, exist_ok=True)
            (media / relative).write_bytes(jpeg)
            paths.append({"path": str(relative), "video_id": video_id, "idx": idx})
        conn.execute(update, paths)
