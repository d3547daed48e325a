"""A 200 MB upload through a real uvicorn: the API's memory stays flat while it streams."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import PeakRss, free_port, start_api

pytestmark = [pytest.mark.db, pytest.mark.broker, pytest.mark.slow]

MB = 1024 * 1024


def multipart_body(boundary: str, total: int, chunk: int = MB) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    ).encode()
    block = os.urandom(chunk)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n
    yield f"\r\n--{boundary}--\r\n".encode()


def test_200mb_upload_keeps_rss_flat(vcat_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **vcat_env, "VCAT_MAX_UPLOAD_BYTES": str(1024 * MB)}
    proc = start_api(env, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        httpx.get(f"{url}/videos", timeout=10)  # warm: imports, DB pool
        started = time.monotonic()
        with PeakRss(proc.pid) as memory:
            response = httpx.post(
                f"{url}/videos",
                content=multipart_body("vcatboundary", 200 * MB),
                headers={"content-type": "multipart/form-data; boundary=vcatboundary"},
                timeout=120,
            )
        seconds = time.monotonic() - started
        # random bytes: streamed, hashed, stored, then refused by the prober
        assert response.status_code == 415, response.text
        growth = memory.growth / MB
        print(f"200 MB upload: {200 / seconds:.0f} MB/s, RSS growth {growth:.1f} MB")
        assert growth < 64, f"RSS grew {growth:.1f} MB"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
