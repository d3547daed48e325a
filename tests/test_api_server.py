"""``vcat api``: several processes, each with its own listening socket, under a supervisor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, start_api

pytestmark = [pytest.mark.db]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return sorted(kids)


def _wait_children(pid: int, n: int, old: list[int] | None = None) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = _children(pid)
        if len(kids) == n and kids != old:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"process {pid} has children {_children(pid)}, expected {n}")


def _sockets(pid: int, port: int, state: str) -> set[str]:
    """Inodes of process ``pid``'s TCP sockets on local ``port`` in ``state`` (Linux /proc:
    01 established, 0A listening)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state and fields[9] in inodes:
                found.add(fields[9])
    return found


@pytest.fixture
def api(vcat_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {**os.environ, **vcat_env}
    proc = start_api(env, port, workers=2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_connections_spread_over_the_processes(
    api: tuple[subprocess.Popen[bytes], int],
) -> None:
    """32 keep-alive clients connecting at once: uvicorn --workers gave one process 29 of them,
    since its processes accept from one shared socket."""
    proc, port = api
    kids = _wait_children(proc.pid, 2)
    listening = [_sockets(kid, port, "0A") for kid in kids]
    assert all(len(s) == 1 for s in listening) and listening[0] != listening[1], listening
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    try:
        for conn in conns:  # a request answered proves the connection was accepted
            conn.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        for conn in conns:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        counts = [len(_sockets(kid, port, "01")) for kid in kids]
    finally:
        for conn in conns:
            conn.close()
    assert sum(counts) == 32
    # a hash split of 32 leaves a process fewer than 4 with probability 3e-6
    assert min(counts) >= 4, counts


def test_a_killed_process_is_replaced_and_sigterm_stops_all(
    api: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = api
    kids = _wait_children(proc.pid, 2)
    os.kill(kids[0], signal.SIGKILL)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(20):  # the survivor keeps answering meanwhile
            assert client.get("/livez").status_code == 200
    new = _wait_children(proc.pid, 2, old=kids)
    assert kids[1] in new and kids[0] not in new
    deadline = time.monotonic() + 30
    while httpx.get(f"http://127.0.0.1:{port}/livez").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not [pid for pid in new if Path(f"/proc/{pid}").exists()]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_port_is_a_one_line_error(vcat_env: dict[str, str], workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "vcat.cli", "api", "--port", str(port), "--workers",
             str(workers)],
            env={**os.environ, **vcat_env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: already in use"
