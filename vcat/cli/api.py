"""``vcat api``: the HTTP API, as N uvicorn processes that each own a listening socket.

Why not ``uvicorn --workers N``: its processes share one listening socket, and whichever wakes
first accepts every connection waiting in the backlog. 32 keep-alive clients connecting at once
were split 29 / 3 (measured with ``bench/bench_search.py``), so one process did nearly all the
work while the other idled. Here each process binds its own socket with ``SO_REUSEPORT`` and the
kernel spreads new connections over them by a hash of the address pair. Where the platform has
no ``SO_REUSEPORT``, uvicorn's own workers are used.
"""

from __future__ import annotations

import errno
import socket
import sys

import typer

from vcat.cli.common import console, fail
from vcat.settings import get_settings

APP = "service.app:app"
BACKLOG = 2048  # uvicorn's default
STARTUP_FAILURE = 3  # exit status of a process that never served (uvicorn uses the same)


def api(
    host: str = typer.Option(None, help="Bind address (default VCAT_HOST, 127.0.0.1)"),
    port: int = typer.Option(None, min=0, max=65535, help="Port (default VCAT_PORT, 8000)"),
    workers: int = typer.Option(
        None, min=1, help="API processes (default VCAT_API_WORKERS, 2); one per core is right"
    ),
    access_log: bool = typer.Option(True, help="Log every request"),
    proxy_headers: bool = typer.Option(
        True, help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips (a reverse proxy)"
    ),
    forwarded_allow_ips: str = typer.Option(
        None, help="Proxies trusted for X-Forwarded-* (default $FORWARDED_ALLOW_IPS or 127.0.0.1)"
    ),
    serve: bool = typer.Option(
        False, "--serve", hidden=True, help="Serve in this process only (no supervisor)"
    ),
) -> None:
    """Run the API until Ctrl-C / SIGTERM (``vcat up`` runs it for you).

    With several processes a supervisor restarts any that dies; the others keep serving."""
    settings = get_settings()
    host = host or settings.host
    port = settings.port if port is None else port
    workers = workers or settings.api_workers
    options = {
        "access_log": access_log,
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips,
    }
    if serve or workers == 1:
        _serve(host, port, reuse_port=serve, **options)
        return
    if not hasattr(socket, "SO_REUSEPORT"):
        import uvicorn

        uvicorn.run(APP, host=host, port=port, workers=workers, **options)  # type: ignore[arg-type]
        return
    _check_free(host, port)
    raise typer.Exit(_supervise(host, port, workers, options))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_free(host: str, port: int) -> None:
    """Fail in one line if the address is taken, by anything, a vcat API included: with
    ``SO_REUSEPORT`` a second vcat on the same port would otherwise silently share it."""
    _bind(host, port, reuse_port=False, listen=False, code=1).close()


def _bind(host: str, port: int, *, reuse_port: bool, listen: bool, code: int) -> socket.socket:
    """A socket bound to the address (and listening, if ``listen``); a one-line error with exit
    status ``code`` if that fails."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        fail(f"cannot listen on {host}:{port}: {reason}", code=code)
    return sock


def _serve(host: str, port: int, *, reuse_port: bool, **options: object) -> None:
    import uvicorn

    sock = _bind(host, port, reuse_port=reuse_port, listen=True, code=STARTUP_FAILURE)
    config = uvicorn.Config(APP, host=host, port=port, **options)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        if not server.started:  # the app failed to import or start: restarting will not help
            raise SystemExit(STARTUP_FAILURE)


def _supervise(host: str, port: int, workers: int, options: dict[str, object]) -> int:
    from vcat.supervisor import Stack

    log = lambda m: console.print(f"[dim]vcat:[/] {m}", highlight=False)  # noqa: E731
    stack = Stack(get_settings(), log=log)
    argv = [sys.executable, "-m", "vcat.cli", "api", "--serve", "--host", host, "--port", str(port)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else flag.replace("--", "--no-", 1))
        elif value is not None:
            argv += [flag, str(value)]
    for i in range(workers):
        stack.spawn(f"api-{i + 1}", argv, restart=True, fatal=(STARTUP_FAILURE,))
    console.print(f"vcat API on http://{host}:{port}, {workers} processes", highlight=False)
    try:
        return stack.wait()
    finally:
        stack.stop()
