"""``vcat audit``: who did what and when (uploads, searches, media views, deletions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from vcat.cli.common import fail, print_json, print_table
from vcat.cli.dbsession import cli_session


def _ago(seconds: int, option: str) -> datetime:
    """Now minus ``seconds``; a span before year 1 is a one-line error, not an OverflowError."""
    try:
        return datetime.now(UTC) - timedelta(seconds=seconds)
    except OverflowError:
        fail(f"{option}: too far back (before year 1)")


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return _ago(int(value[:-1]) * units[value[-1]], "--since")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: expected like 30m, 12h, 7d or an ISO date, not {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def audit(
    since: str = typer.Option(None, help="Only newer entries: 30m, 12h, 7d or an ISO date"),
    action: str = typer.Option(None, help="upload | search | view_media | delete | reindex"),
    key: str = typer.Option(None, help="Only this API key id"),
    limit: int = typer.Option(100, min=1, max=100_000, help="At most this many, newest first"),
    prune_days: int = typer.Option(
        None, "--prune-days", min=1, help="Delete entries older than N days instead of listing"
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Read the audit log (or prune it)."""
    from service import audit as audit_log

    start = _since(since)
    cutoff = None if prune_days is None else _ago(prune_days * 86400, "--prune-days")
    with cli_session() as session:
        if cutoff is not None:
            n = audit_log.prune(session, cutoff)
            typer.echo(f"pruned {n} entries")
            return
        rows = [
            {
                "at": e.at,
                "key": e.key_id,
                "action": e.action,
                "video": str(e.video_id) if e.video_id else None,
                "client": e.client,
                "detail": e.detail,
            }
            for e in audit_log.entries(session, since=start, action=action, key_id=key, limit=limit)
        ]
    if json_out:
        print_json(rows)
        return
    print_table(
        "audit log",
        ["at", "key", "action", "video", "client", "detail"],
        [
            [
                r["at"],
                r["key"] or "-",
                r["action"],
                r["video"] or "-",
                r["client"] or "-",
                r["detail"],
            ]
            for r in rows
        ],
    )
