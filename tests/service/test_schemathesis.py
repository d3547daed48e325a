"""Property-based fuzzing of every operation in /openapi.json: no input may cause a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service.app import create_app
from service.url_fetch import UrlRejected, fetch_to_file

pytestmark = [pytest.mark.db, pytest.mark.broker, pytest.mark.slow]

app = create_app()


def _offline_fetcher(url: str, dest: Path, **limits: Any) -> Any:
    """Generated URLs must not reach the network: every name fails to resolve."""

    def resolve(host: str, port: int) -> list[str]:
        raise UrlRejected(f"cannot resolve {host}")

    return fetch_to_file(url, dest, resolver=resolve, **limits)


app.state.url_fetcher = _offline_fetcher
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(autouse=True)
def _clean(db: Any) -> None:
    """An empty catalogue in the test database (the app reads settings per request)."""


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
