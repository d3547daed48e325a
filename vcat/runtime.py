"""Database access for CLI commands (``vcat apikey``, ``vcat audit``, ...).

With VCAT_DATABASE_URL set, that server is used. Otherwise the embedded cluster under data_dir is
used: if `vcat up` is running it is shared, else it is started for the command and stopped after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vcat.embedded import EmbeddedPostgres
from vcat.settings import Settings, get_settings


@contextmanager
def database_url(settings: Settings | None = None) -> Iterator[str]:
    settings = settings or get_settings()
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir / "postgres")
    was_running = server.is_running()
    url = server.start()
    if not was_running:
        from vcat import migrate

        migrate.upgrade(url)
    try:
        yield url
    finally:
        if not was_running:
            server.stop()
