"""``vcat up`` and ``vcat migrate``."""

from __future__ import annotations

import typer

from vcat.cli.common import console, fail
from vcat.embedded import EmbeddedError
from vcat.settings import get_settings


def up(
    host: str = typer.Option(None, help="Bind address (default VCAT_HOST, 127.0.0.1)"),
    port: int = typer.Option(None, help="API port (default VCAT_PORT, 8000)"),
    workers: int = typer.Option(1, min=0, help="Indexing worker processes to run"),
) -> None:
    """Run vcat: embedded Postgres + Redis (unless VCAT_DATABASE_URL / VCAT_BROKER_URL are set),
    migrations, and the API. Ctrl-C stops everything it started."""
    from vcat.supervisor import Stack, api_argv, worker_argv

    settings = get_settings()
    stack = Stack(settings, log=lambda msg: console.print(f"[dim]vcat:[/] {msg}", highlight=False))
    try:
        stack.start_servers()
        host = host or settings.host
        port = port or settings.port
        stack.spawn("api", api_argv(host, port))
        for i in range(workers):
            # 2: click's usage error (bad arguments); restarting would only repeat it.
            stack.spawn(f"worker-{i + 1}", worker_argv(), restart=True, fatal=(2,))
        console.print(
            f"vcat is up: API on http://{host}:{port}, {workers} worker(s)"
            f"  (data in {settings.data_dir})"
        )
        code = stack.wait()
    except EmbeddedError as exc:
        stack.stop()
        fail(str(exc))
    except BaseException:
        stack.stop()
        raise
    console.print("vcat: stopping")
    stack.stop()
    raise typer.Exit(code)


def migrate_cmd(
    revision: str = typer.Argument("head", help="Target revision"),
    down: bool = typer.Option(False, "--down", help="Downgrade to REVISION (e.g. base)"),
) -> None:
    """Apply (or revert) database migrations on VCAT_DATABASE_URL."""
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    from vcat import migrate
    from vcat.cli.dbsession import checked_engine, database_unreachable

    url = get_settings().database_url
    if not url:
        fail("VCAT_DATABASE_URL is not set (vcat up migrates its embedded database itself)")
    checked_engine(url).dispose()  # a URL that cannot work fails here, in one line
    try:
        if down:
            migrate.downgrade(url, revision)
        else:
            migrate.upgrade(url, revision)
    except OperationalError as exc:
        fail(database_unreachable(exc, url))
    except CommandError as exc:  # e.g. an unknown revision
        fail(str(exc).splitlines()[0] if str(exc) else "migration failed")
    console.print(f"database {'downgraded to' if down else 'upgraded to'} {revision}")
