"""Upload benchmark: one large multipart upload over loopback; throughput and API RSS growth.

    .venv/bin/python bench/bench_upload.py [--mb 1024] [--database-url URL]

The client is a raw socket sending one pre-built 1 MiB block repeatedly, so it costs little CPU;
the body is random bytes (streamed, hashed and stored by the API, then refused by the prober,
which is what a non-video costs). Target: >= 150 MB/s with RSS growth < 64 MB.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import PeakRss, free_port, start_api  # noqa: E402
from vcat import migrate  # noqa: E402

MB = 1024 * 1024


def upload(port: int, total: int) -> tuple[float, str]:
    boundary = "vcatbench"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = os.urandom(MB)
    length = len(head) + total + len(tail)
    request = (
        f"POST /videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        sock.sendall(request + head)
        sent = 0
        while sent < total:
            n = min(MB, total - sent)
            sock.sendall(block[:n] if n < MB else block)
            sent += n
        sock.sendall(tail)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        seconds = time.perf_counter() - started
    return seconds, response.split(b"\r\n", 1)[0].decode()


def run(url: str, megabytes: int) -> None:
    migrate.upgrade(url)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vcat-upload-") as data:
        env = {
            **os.environ,
            "VCAT_DATABASE_URL": url,
            "VCAT_DATA_DIR": data,
            "VCAT_MAX_UPLOAD_BYTES": str(megabytes * MB * 2),
        }
        server = start_api(env, port, ready_path="/videos")
        try:
            with PeakRss(server.pid) as memory:
                seconds, status = upload(port, megabytes * MB)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"{megabytes} MiB in {seconds:.1f} s: {megabytes * MB / seconds / 1e6:.0f} MB/s, "
        f"API RSS growth {memory.growth / MB:.1f} MiB ({status}), "
        f"{os.cpu_count()} CPUs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="upload size in MiB")
    parser.add_argument("--database-url", help="a migrated (or empty) database to use")
    args = parser.parse_args()
    url = args.database_url or os.environ.get("VCAT_DATABASE_URL")
    if url:
        run(url, args.mb)
        return
    from vcat.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="vcat-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp))
        try:
            run(pg.start(), args.mb)
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
