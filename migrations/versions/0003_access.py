"""Access and privacy: API keys (hashed), the audit log, idempotency keys for uploads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
CREATE TABLE api_keys (
    id varchar(16) PRIMARY KEY,
    name text NOT NULL,
    scope varchar(8) NOT NULL CONSTRAINT api_keys_scope CHECK (scope IN ('read','admin')),
    secret_hash varchar(64) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    last_used_at timestamptz
);
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    key_id varchar(16),
    action text NOT NULL,
    video_id uuid,
    detail jsonb NOT NULL DEFAULT '{}',
    client text
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TABLE idempotency_keys (
    key_id varchar(16) NOT NULL,
    key text NOT NULL,
    request_hash varchar(64) NOT NULL,
    video_id uuid NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, key)
);
"""

DOWNGRADE = """
DROP TABLE idempotency_keys;
DROP TABLE audit_log;
DROP TABLE api_keys;
"""


def upgrade() -> None:
    for statement in UPGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
