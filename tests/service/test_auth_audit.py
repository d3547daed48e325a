"""API keys (hashed, Bearer or X-API-Key, read/admin scopes), the audit log, their CLIs."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from service import audit
from service.auth import create_key, revoke_key
from service.models import ApiKey, AuditEntry
from tests.service.conftest import SeedVideo
from vcat.cli import app as cli_app

pytestmark = [pytest.mark.db, pytest.mark.broker]


def test_open_until_a_key_exists_then_scoped(
    client: TestClient, db: Session, seed_video: SeedVideo
) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    assert client.get("/videos").status_code == 200  # no keys: open
    _, read = create_key(db, "viewer", "read")
    row, admin = create_key(db, "ops", "admin")
    stored = db.scalar(select(ApiKey.secret_hash).where(ApiKey.id == row.id))
    assert stored is not None and admin not in stored and len(stored) == 64
    for path in (
        "/videos",
        "/search?action=dancing",
        "/actions",
        "/models",
        "/metrics",
        f"/videos/{vid}",
        f"/videos/{vid}/media",
    ):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert client.get(path, headers={"Authorization": f"Bearer {read}"}).status_code == 200
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/videos", headers={"X-API-Key": read}).status_code == 200
    assert client.get("/videos", headers={"X-API-Key": f" {read}\t"}).status_code == 200
    assert client.get("/videos", headers={"X-API-Key": read + "x"}).status_code == 401
    assert client.get("/videos", headers={"X-API-Key": "vcat_zz_zz"}).status_code == 401
    # read-only keys cannot change anything
    denied = client.delete(f"/videos/{vid}", headers={"X-API-Key": read})
    assert denied.status_code == 403 and "admin" in denied.json()["detail"]
    assert client.post(f"/videos/{vid}/reindex", headers={"X-API-Key": read}).status_code == 403
    assert (
        client.post(
            "/videos", json={"url": "http://x.test/"}, headers={"X-API-Key": read}
        ).status_code
        == 403
    )
    assert client.delete(f"/videos/{vid}", headers={"X-API-Key": admin}).status_code == 204
    assert revoke_key(db, row.id)
    assert client.get("/videos", headers={"X-API-Key": admin}).status_code == 401


def test_audit_records_who_did_what(client: TestClient, db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    row, key = create_key(db, "ops", "admin")
    h = {"Authorization": f"Bearer {key}"}
    client.get("/search", params={"action": "dancing"}, headers=h)
    client.get(f"/videos/{vid}/media", headers={**h, "Range": "bytes=0-3"})
    client.delete(f"/videos/{vid}", headers=h)
    # searches and media views are written in batches (within audit.FLUSH_SECONDS), each
    # stamped with its request's time; deletes at once. flush() returns once both are written
    # (by itself or by the batch writer it waits for).
    audit.flush()
    entries = db.scalars(select(AuditEntry).order_by(AuditEntry.at)).all()
    assert [(e.action, e.key_id) for e in entries] == [
        ("search", row.id),
        ("view_media", row.id),
        ("delete", row.id),
    ]
    assert entries[0].detail["action"] == ["dancing"] and entries[0].detail["results"] == 1
    assert entries[1].video_id == vid and entries[1].detail["range"] == "bytes=0-3"
    assert entries[2].video_id == vid  # kept after the video is gone


def test_cli_apikey_and_audit(client: TestClient, db: Session) -> None:
    runner = CliRunner()
    created = runner.invoke(cli_app, ["apikey", "create", "robot", "--scope", "admin", "--json"])
    assert created.exit_code == 0, created.output
    info = json.loads(created.output)
    assert info["key"].startswith("vcat_") and info["scope"] == "admin"
    assert client.get("/videos", headers={"X-API-Key": info["key"]}).status_code == 200
    listed = json.loads(runner.invoke(cli_app, ["apikey", "list", "--json"]).output)
    assert [(k["id"], k["name"], k["revoked_at"]) for k in listed] == [(info["id"], "robot", None)]
    assert "key" not in listed[0] and info["key"] not in json.dumps(listed)
    bad = runner.invoke(cli_app, ["apikey", "create", "x", "--scope", "root"])
    assert bad.exit_code == 1 and "scope must be one of" in bad.output
    assert "Traceback" not in bad.output
    assert runner.invoke(cli_app, ["apikey", "revoke", info["id"]]).exit_code == 0
    again = runner.invoke(cli_app, ["apikey", "revoke", info["id"]])
    assert again.exit_code == 1 and "no active key" in again.output
    client.get("/search", params={"action": "anything"})  # open again: no active key
    audit.flush()
    log = json.loads(runner.invoke(cli_app, ["audit", "--json", "--action", "search"]).output)
    assert [(e["action"], e["key"]) for e in log] == [("search", None)]
    assert runner.invoke(cli_app, ["audit", "--since", "yesterday-ish"]).exit_code == 1
    assert runner.invoke(cli_app, ["audit", "--since", "1h"]).exit_code == 0


def test_batched_audit_entries_reach_the_table_by_themselves(
    client: TestClient, db: Session
) -> None:
    client.get("/search", params={"action": "anything"})
    deadline = time.monotonic() + 10
    while not db.scalars(select(AuditEntry)).all():
        assert time.monotonic() < deadline, "the search was never written to the audit log"
        time.sleep(audit.FLUSH_SECONDS)
    (entry,) = db.scalars(select(AuditEntry)).all()
    assert entry.action == "search" and entry.detail["action"] == ["anything"]
