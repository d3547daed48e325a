"""Fetch a video from a URL without letting callers reach internal addresses (SSRF).

Every hop: http/https only, no credentials in the URL, host on the allow-list (if one is set),
the name resolved once and every address checked (non-global, IPv4-mapped, NAT64, 6to4, Teredo
are refused), then the connection is made to the checked address (the Host header and TLS SNI
keep the name), so a second DNS answer cannot redirect it. Redirects are followed by hand and
re-checked; the body is streamed to disk under a byte and a wall-clock limit.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP address strings

MAX_REDIRECTS = 5
CHUNK = 1 << 20
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class UrlRejected(ValueError):
    """The URL may not be fetched (scheme, host, address); ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    final_url: str
    filename: str | None


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRejected(f"cannot resolve {host}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def forbidden_reason(ip: Address) -> str | None:
    """Why a connection to ``ip`` is refused, or None if it is a global unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return forbidden_reason(ip.ipv4_mapped) or "IPv4-mapped IPv6 addresses are refused"
        if any(ip in net for net in _NAT64):
            return "NAT64 addresses are refused"
        if ip.sixtofour is not None:
            return forbidden_reason(ip.sixtofour) or "6to4 addresses are refused"
        if ip.teredo is not None:
            return "Teredo addresses are refused"
        if ip.scope_id:
            return "scoped IPv6 addresses are refused"
    for flag, why in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-global"),
    ):
        if flag:
            return f"{ip} is a {why} address"
    return None


def _host_allowed(host: str, allow: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.lower().strip().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        if host == entry:
            return True
    return False


@dataclass(frozen=True)
class Target:
    url: str  # the original URL of this hop
    host: str
    port: int
    ip: Address  # the checked address the connection goes to


def check_url(url: str, *, allow_hosts: Sequence[str], resolver: Resolver) -> Target:
    """Validate one hop and pick the address to connect to; UrlRejected otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRejected(f"invalid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRejected(f"only http and https URLs are fetched, not {parts.scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise UrlRejected("URLs with credentials are refused")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRejected("the URL has no host")
    try:  # a redirect may name an internationalised host; requests and checks use its ASCII form
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRejected(f"invalid host name {host!r}") from None
    if allow_hosts and not _host_allowed(host, allow_hosts):
        raise UrlRejected(f"host {host} is not on the allow-list", status=403)
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, port)]
        except UrlRejected:
            raise
        except ValueError as exc:
            raise UrlRejected(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise UrlRejected(f"{host} has no addresses")
    for ip in addresses:  # every answer must be acceptable, or an attacker picks the bad one
        reason = forbidden_reason(ip)
        if reason:
            raise UrlRejected(f"{host} resolves to a refused address: {reason}")
    return Target(url=url, host=host, port=port, ip=addresses[0])


def _pinned_request(client: httpx.Client, target: Target) -> httpx.Request:
    parts = urlsplit(target.url)
    ip = f"[{target.ip}]" if target.ip.version == 6 else str(target.ip)
    default = 443 if parts.scheme == "https" else 80
    netloc = ip if target.port == default else f"{ip}:{target.port}"
    host_header = target.host if target.port == default else f"{target.host}:{target.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    extensions = {"sni_hostname": target.host} if parts.scheme == "https" else {}
    return client.build_request(
        "GET",
        pinned,
        headers={"Host": host_header, "Accept": "video/*, */*;q=0.5"},
        extensions=extensions,
    )


def fetch_to_file(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout: float,
    allow_hosts: Sequence[str] = (),
    resolver: Resolver = system_resolver,
    transport: httpx.BaseTransport | None = None,
) -> Fetched:
    """Download ``url`` into ``dest`` (removed on failure) under the rules above."""
    deadline = time.monotonic() + timeout
    digest = hashlib.sha256()
    size = 0
    current = url
    with httpx.Client(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(min(timeout, 30.0)),
    ) as client:
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                target = check_url(current, allow_hosts=allow_hosts, resolver=resolver)
                response = client.send(_pinned_request(client, target), stream=True)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise UrlRejected("redirect without Location", status=502)
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise UrlRejected(f"the server answered {response.status_code}", status=502)
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise UrlRejected(f"the file is larger than {max_bytes} bytes", 413)
                    with open(dest, "wb") as out:
                        for chunk in response.iter_bytes(CHUNK):
                            size += len(chunk)
                            if size > max_bytes:
                                raise UrlRejected(f"the file is larger than {max_bytes} bytes", 413)
                            if time.monotonic() > deadline:
                                raise UrlRejected(f"download took longer than {timeout:g} s", 504)
                            digest.update(chunk)
                            out.write(chunk)
                    name = Path(urlsplit(current).path).name or None
                    return Fetched(dest, size, digest.hexdigest(), current, name)
                finally:
                    response.close()
            raise UrlRejected(f"more than {MAX_REDIRECTS} redirects", status=502)
        except httpx.TimeoutException:
            dest.unlink(missing_ok=True)
            raise UrlRejected(f"timed out fetching {current}", status=504) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            dest.unlink(missing_ok=True)
            raise UrlRejected(f"could not fetch {current}: {exc}", status=502) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
