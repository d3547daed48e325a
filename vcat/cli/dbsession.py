"""A database session for CLI commands, with connection failures as one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from vcat.cli.common import fail


@contextmanager
def cli_session() -> Iterator[Session]:
    from service.db import make_engine
    from vcat.embedded import EmbeddedError
    from vcat.runtime import database_url

    try:
        with database_url() as url:
            engine = make_engine(url)
            try:
                with Session(engine, expire_on_commit=False) as session:
                    yield session
            except OperationalError as exc:
                fail(f"database unreachable: {str(exc.orig).splitlines()[0]}")
            except ProgrammingError as exc:
                fail(f"database not migrated? {str(exc.orig).splitlines()[0]} (run `vcat migrate`)")
            finally:
                engine.dispose()
    except EmbeddedError as exc:
        fail(str(exc))
