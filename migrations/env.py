"""Alembic environment: online migrations against the URL vcat is configured with."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData, pool

from service.db import make_engine, normalize_database_url
from vcat.settings import get_settings

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or get_settings().database_url
    if not url:
        raise SystemExit("error: set VCAT_DATABASE_URL (or run `vcat migrate`)")
    return normalize_database_url(url)


def _target_metadata() -> MetaData | None:
    try:
        from service.models import Base
    except ImportError:  # before the catalogue models exist
        return None
    return Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=_target_metadata(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=_target_metadata())
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    engine.pool = pool.NullPool(engine.pool._creator)  # one-shot: no pooled connections left
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=_target_metadata())
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
