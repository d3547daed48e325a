"""``vcat apikey create|list|revoke``: API keys (stored hashed; the key is shown once)."""

from __future__ import annotations

import typer

from vcat.cli.common import console, fail, print_json, print_table
from vcat.cli.dbsession import cli_session

app = typer.Typer(help="Manage API keys (read or admin scope).", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what the key is for"),
    scope: str = typer.Option("read", help="read (search, view) or admin (also upload, delete)"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Create a key and print it (it cannot be shown again)."""
    from service.auth import KeyError_, create_key

    with cli_session() as session:
        try:
            row, plaintext = create_key(session, name, scope)
        except KeyError_ as exc:
            fail(str(exc))
    if json_out:
        print_json({"id": row.id, "name": row.name, "scope": row.scope, "key": plaintext})
        return
    console.print(f"created key [bold]{row.id}[/] ({row.scope}) for {row.name}:")
    typer.echo(plaintext)
    console.print("[dim]store it now: only its hash is kept[/]", highlight=False)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """List keys (never the secrets)."""
    from service.auth import list_keys

    with cli_session() as session:
        keys = list_keys(session)
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "scope": k.scope,
            "created_at": k.created_at,
            "last_used_at": k.last_used_at,
            "revoked_at": k.revoked_at,
        }
        for k in keys
    ]
    if json_out:
        print_json(rows)
        return
    print_table(
        "API keys",
        ["id", "name", "scope", "created", "last used", "revoked"],
        [
            [
                r["id"],
                r["name"],
                r["scope"],
                r["created_at"],
                r["last_used_at"] or "-",
                r["revoked_at"] or "-",
            ]
            for r in rows
        ],
    )


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id (see `vcat apikey list`)")) -> None:
    """Revoke a key; requests with it are refused from now on."""
    from service.auth import revoke_key

    with cli_session() as session:
        done = revoke_key(session, key_id)
    if not done:
        fail(f"no active key with id {key_id!r}")
    console.print(f"revoked key {key_id}")
