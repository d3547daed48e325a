"""``vcat up``: start the embedded servers (unless external ones are configured), migrate, then run
the API (and workers) as child processes until Ctrl-C / SIGTERM, and stop everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from vcat import migrate
from vcat.embedded import EmbeddedPostgres, EmbeddedRedis
from vcat.settings import Settings, get_settings

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
# A child that ran this long before it exited was healthy: its backoff starts over (a worker that
# crashed a few times last week must not wait 30 s after today's crash).
STABLE_SECONDS = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = False  # workers come back after a crash; the API's exit stops everything
    fatal: tuple[int, ...] = ()  # exit statuses that stop everything even when ``restart``
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None
    started_at: float = 0.0


@dataclass
class Stack:
    settings: Settings
    log: Callable[[str], object] = print
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    children: list[Child] = field(default_factory=list)
    database_url: str = ""
    broker_url: str = ""
    _stopping: bool = False

    def start_servers(self) -> None:
        s = self.settings
        if s.database_url:
            self.database_url = s.database_url
        else:
            self.postgres = EmbeddedPostgres(s.data_dir / "postgres")
            self.log(f"starting embedded Postgres in {self.postgres.root}")
            self.database_url = self.postgres.start()
        if s.broker_url:
            self.broker_url = s.broker_url
        else:
            self.redis = EmbeddedRedis(s.data_dir / "redis")
            self.log(f"starting embedded Redis in {self.redis.root}")
            self.broker_url = self.redis.start()
        self.log("applying migrations")
        migrate.upgrade(self.database_url)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.database_url:
            env["VCAT_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["VCAT_BROKER_URL"] = self.broker_url
        env["VCAT_DATA_DIR"] = str(self.settings.data_dir.resolve())
        return env

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        restart: bool = False,
        fatal: tuple[int, ...] = (),
    ) -> None:
        child = Child(name, list(argv), dict(env or {}), restart, fatal)
        self._start(child)
        self.children.append(child)

    def _start(self, child: Child) -> None:
        # A new session: the terminal's Ctrl-C reaches only us, and we stop children in order.
        child.proc = subprocess.Popen(
            child.argv,
            env={**self.child_env(), **child.env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child.restart_at = None
        child.started_at = time.monotonic()

    def wait(self) -> int:
        """Block until a signal arrives (0) or a child exits on its own (its status, or 1)."""

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            self._stopping = True

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        while not self._stopping:
            code = self.poll()
            if code is not None:
                return code
            time.sleep(0.2)
        return 0

    def poll(self) -> int | None:
        """Look at the children once: schedule or make the restarts that are due. Returns the
        status to stop with when a child that must not be restarted exited, else None."""
        for child in self.children:
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            if not child.restart or code in child.fatal:
                self.log(f"{child.name} exited with status {code}; stopping")
                return code or 1
            now = time.monotonic()
            if child.restart_at is None:
                if now - child.started_at >= STABLE_SECONDS:
                    child.restarts = 0
                delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
                child.restart_at = now + delay
                self.log(f"{child.name} exited with status {code}; restarting in {delay:.0f}s")
            elif now >= child.restart_at:
                child.restarts += 1
                self._start(child)
        return None

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop in 30 s; killing it")
                child.proc.kill()
                child.proc.wait()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "vcat.cli", "worker"]


def api_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "vcat.cli", "api", "--host", host, "--port", str(port),
        "--no-access-log", "--workers", str(get_settings().api_workers),
    ]  # fmt: skip
