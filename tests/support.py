"""Small process helpers shared by tests and benchmarks (ports, memory readings, the API)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    """Resident memory of a live process, in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def wait_http(url: str, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; SystemExit after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.2)


def start_api(
    env: dict[str, str],
    port: int,
    *,
    workers: int = 1,
    server: str = "vcat",
    ready_path: str = "/livez",
    timeout: float = 60,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """The API on 127.0.0.1:``port`` (no access log), once it answers: ``vcat api`` (as users
    run it), or with ``server="uvicorn"`` plain ``uvicorn --workers`` (for comparisons)."""
    if server == "vcat":
        argv = [sys.executable, "-m", "vcat.cli", "api", "--workers", str(workers)]
    elif server == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", "service.app:app", "--workers", str(workers)]
        argv += ["--log-level", "warning"]
    else:
        raise ValueError(f"unknown server {server!r}")
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, **popen)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


class PeakRss:
    """Samples a process's resident memory every 50 ms while the ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = rss(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.05)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
