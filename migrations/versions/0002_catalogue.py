"""The catalogue: videos, models, actions, clips, clip scores, stored segments, summaries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
CREATE TABLE models (
    id serial PRIMARY KEY,
    name text NOT NULL,
    version text NOT NULL,
    num_labels integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_name_version UNIQUE (name, version)
);
CREATE TABLE actions (
    id serial PRIMARY KEY,
    model_id integer NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    idx integer NOT NULL,
    name text NOT NULL,
    CONSTRAINT actions_model_idx UNIQUE (model_id, idx)
);
CREATE INDEX actions_lower_name ON actions (lower(name));
CREATE INDEX actions_name_trgm ON actions USING gin (lower(name) gin_trgm_ops);
CREATE TABLE videos (
    id uuid PRIMARY KEY,
    source varchar(8) NOT NULL CONSTRAINT videos_source CHECK (source IN ('upload','url')),
    source_url text,
    original_name text,
    sha256 varchar(64),
    size bigint NOT NULL,
    media_file text,
    container text,
    codec text,
    duration double precision,
    fps double precision,
    width integer,
    height integer,
    rotation integer NOT NULL DEFAULT 0,
    status varchar(16) NOT NULL DEFAULT 'queued' CONSTRAINT videos_status
        CHECK (status IN ('queued','processing','done','failed','deleted')),
    progress double precision NOT NULL DEFAULT 0
        CONSTRAINT videos_progress CHECK (progress >= 0 AND progress <= 1),
    error text,
    attempts integer NOT NULL DEFAULT 0,
    model_name text,
    model_id integer REFERENCES models(id) ON DELETE SET NULL,
    options jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    indexed_at timestamptz
);
CREATE INDEX videos_created ON videos (created_at, id);
CREATE INDEX videos_status_created ON videos (status, created_at, id);
CREATE UNIQUE INDEX videos_sha256 ON videos (sha256) WHERE sha256 IS NOT NULL;
CREATE TABLE clips (
    video_id uuid NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    idx integer NOT NULL,
    start double precision NOT NULL,
    "end" double precision NOT NULL,
    thumbnail text,
    PRIMARY KEY (video_id, idx)
);
CREATE TABLE clip_scores (
    video_id uuid NOT NULL,
    clip_idx integer NOT NULL,
    action_id integer NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    rank smallint NOT NULL,
    score real NOT NULL CONSTRAINT clip_scores_score CHECK (score >= 0 AND score <= 1),
    PRIMARY KEY (video_id, clip_idx, action_id),
    FOREIGN KEY (video_id, clip_idx) REFERENCES clips(video_id, idx) ON DELETE CASCADE
);
CREATE INDEX clip_scores_action_video ON clip_scores (action_id, video_id, clip_idx)
    INCLUDE (score);
CREATE TABLE video_actions (
    video_id uuid NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    action_id integer NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    segments integer NOT NULL,
    max_score real NOT NULL,
    PRIMARY KEY (video_id, action_id)
);
CREATE INDEX video_actions_action ON video_actions (action_id, video_id);
CREATE TABLE segments (
    video_id uuid NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    action_id integer NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    first_clip integer NOT NULL,
    last_clip integer NOT NULL,
    clips integer NOT NULL,
    start double precision NOT NULL,
    "end" double precision NOT NULL,
    max_score real NOT NULL,
    mean_score double precision NOT NULL,
    threshold real NOT NULL,
    thumbnail text,
    video_created timestamptz NOT NULL,
    PRIMARY KEY (video_id, action_id, first_clip)
);
CREATE INDEX segments_by_score ON segments
    (action_id, threshold, max_score DESC, video_id, first_clip);
CREATE INDEX segments_by_time ON segments
    (action_id, threshold, video_created DESC, video_id, first_clip);
"""

DOWNGRADE = """
DROP TABLE segments;
DROP TABLE video_actions;
DROP TABLE clip_scores;
DROP TABLE clips;
DROP TABLE videos;
DROP TABLE actions;
DROP TABLE models;
"""


def upgrade() -> None:
    for statement in UPGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
