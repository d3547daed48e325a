"""URL ingest: SSRF defences (every address class, DNS pinning, redirects), limits, switch-off."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.url_fetch import UrlRejected, check_url, fetch_to_file, forbidden_reason

PUBLIC_IP = "93.184.215.14"  # looks global; never actually contacted (mock transport)

REFUSED = [
    "127.0.0.1",
    "127.9.9.9",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::808:808",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None
    with pytest.raises(UrlRejected):
        check_url("http://evil.test/a.mp4", allow_hosts=(), resolver=lambda h, p: [address])
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(UrlRejected):
        check_url(f"http://{literal}/a.mp4", allow_hosts=(), resolver=lambda h, p: [])


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "2606:4700::1111"])
def test_global_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_url_shape_rules() -> None:
    ok = lambda h, p: [PUBLIC_IP]  # noqa: E731
    for url in (
        "ftp://x.test/a",
        "file:///etc/passwd",
        "http://user:pw@x.test/a",
        "http:///a",
        "gopher://x.test/",
    ):
        with pytest.raises(UrlRejected):
            check_url(url, allow_hosts=(), resolver=ok)
    # one bad answer among several is enough to refuse (the attacker controls the order)
    with pytest.raises(UrlRejected):
        check_url("http://x.test/", allow_hosts=(), resolver=lambda h, p: [PUBLIC_IP, "10.0.0.1"])
    with pytest.raises(UrlRejected) as exc:
        check_url("http://x.test/", allow_hosts=("videos.example",), resolver=ok)
    assert exc.value.status == 403
    assert (
        check_url("http://cdn.videos.example/", allow_hosts=("*.videos.example",), resolver=ok).host
        == "cdn.videos.example"
    )


class Upstream:
    """A fake internet: a public-looking host serving ``routes`` (path -> response)."""

    def __init__(self, routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return self.routes[request.url.path](request)

        return httpx.MockTransport(handle)


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise UrlRejected(f"cannot resolve {host}")
        return table[host]

    return resolve


def test_connection_is_pinned_to_the_checked_address(tmp_path: Path) -> None:
    up = Upstream({"/v.mp4": lambda r: httpx.Response(200, content=b"abc")})
    got = fetch_to_file(
        "https://videos.test:8443/v.mp4",
        tmp_path / "out",
        max_bytes=100,
        timeout=5,
        resolver=_resolver({"videos.test": [PUBLIC_IP]}),
        transport=up.transport(),
    )
    [request] = up.requests
    assert request.url.host == PUBLIC_IP and request.url.port == 8443
    assert request.headers["host"] == "videos.test:8443"
    assert request.extensions["sni_hostname"] == "videos.test"
    assert got.size == 3 and (tmp_path / "out").read_bytes() == b"abc"


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:8000/admin",
        "http://[::ffff:127.0.0.1]/",
        "http://internal.test/x",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
def test_every_redirect_is_rechecked(tmp_path: Path, location: str) -> None:
    up = Upstream({"/start": lambda r: httpx.Response(302, headers={"location": location})})
    resolver = _resolver({"public.test": [PUBLIC_IP], "internal.test": ["10.0.0.5"]})
    with pytest.raises(UrlRejected):
        fetch_to_file(
            "http://public.test/start",
            tmp_path / "out",
            max_bytes=100,
            timeout=5,
            resolver=resolver,
            transport=up.transport(),
        )
    assert len(up.requests) == 1  # the internal target was never contacted
    assert not (tmp_path / "out").exists()


def test_redirect_to_public_is_followed_and_limits_hold(tmp_path: Path) -> None:
    up = Upstream(
        {
            "/a": lambda r: httpx.Response(301, headers={"location": "/b"}),
            "/b": lambda r: httpx.Response(200, content=b"x" * 50),
            "/loop": lambda r: httpx.Response(302, headers={"location": "/loop"}),
            "/big": lambda r: httpx.Response(200, content=b"x" * 500),
            "/404": lambda r: httpx.Response(404),
        }
    )
    kw: dict[str, Any] = {
        "max_bytes": 100,
        "timeout": 5,
        "transport": up.transport(),
        "resolver": _resolver({"p.test": [PUBLIC_IP]}),
    }
    assert fetch_to_file("http://p.test/a", tmp_path / "o", **kw).size == 50
    for path, status in (("/loop", 502), ("/big", 413), ("/404", 502)):
        with pytest.raises(UrlRejected) as exc:
            fetch_to_file(f"http://p.test{path}", tmp_path / "o2", **kw)
        assert exc.value.status == status
        assert not (tmp_path / "o2").exists()


@pytest.mark.db
@pytest.mark.broker
def test_api_url_ingest(
    client: TestClient,
    make_video: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    redis_client: Any,
) -> None:
    from vcat.settings import get_settings

    video = make_video(duration=0.5).read_bytes()
    up = Upstream(
        {
            "/v.mp4": lambda r: httpx.Response(200, content=video),
            "/jump": lambda r: httpx.Response(302, headers={"location": "http://127.0.0.1/v.mp4"}),
        }
    )
    resolver = _resolver({"public.test": [PUBLIC_IP]})

    def fetcher(url: str, dest: Path, **limits: Any) -> Any:
        return fetch_to_file(url, dest, resolver=resolver, transport=up.transport(), **limits)

    client.app.state.url_fetcher = fetcher  # type: ignore[attr-defined]
    r = client.post(
        "/videos",
        json={"url": "http://public.test/v.mp4", "top_k": 2},
        headers={"Idempotency-Key": "u1"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["source"] == "url" and r.json()["source_url"] == "http://public.test/v.mp4"
    again = client.post(
        "/videos",
        json={"url": "http://public.test/v.mp4", "top_k": 2},
        headers={"Idempotency-Key": "u1"},
    )
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    assert len(up.requests) == 1  # the replay did not fetch again
    bad = client.post("/videos", json={"url": "http://public.test/jump"})
    assert bad.status_code == 422 and "refused address" in bad.json()["detail"]
    monkeypatch.setenv("VCAT_URL_ALLOW_HOSTS", '["videos.example"]')
    get_settings.cache_clear()
    assert client.post("/videos", json={"url": "http://public.test/v.mp4"}).status_code == 403
    monkeypatch.setenv("VCAT_URL_INGEST_ENABLED", "false")
    get_settings.cache_clear()
    off = client.post("/videos", json={"url": "http://public.test/v.mp4"})
    assert off.status_code == 403 and "switched off" in off.json()["detail"]


def test_a_redirect_to_an_internationalised_host_is_checked_in_ascii(tmp_path: Path) -> None:
    """It was a 500: httpx could not put the raw unicode host in the Host header."""
    up = Upstream(
        {
            # as a server sends it: UTF-8 bytes in the Location header
            "/start": lambda r: httpx.Response(
                302, headers={"location": "http://vidéos.test/a".encode()}
            ),
            "/a": lambda r: httpx.Response(200, content=b"abc"),
        }
    )
    kw: dict[str, Any] = {"max_bytes": 100, "timeout": 5, "transport": up.transport()}
    resolver = _resolver({"p.test": [PUBLIC_IP], "xn--vidos-dsa.test": [PUBLIC_IP]})
    got = fetch_to_file("http://p.test/start", tmp_path / "o", resolver=resolver, **kw)
    assert got.size == 3 and up.requests[-1].headers["host"] == "xn--vidos-dsa.test"
    resolver = _resolver({"p.test": [PUBLIC_IP], "xn--vidos-dsa.test": ["10.0.0.5"]})
    with pytest.raises(UrlRejected, match="refused address"):
        fetch_to_file("http://p.test/start", tmp_path / "o2", resolver=resolver, **kw)


def test_an_unresolvable_host_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(UrlRejected) as exc:
        fetch_to_file(
            "http://nowhere.test/a", tmp_path / "o", max_bytes=100, timeout=5,
            resolver=_resolver({}), transport=Upstream({}).transport(),
        )  # fmt: skip
    assert str(exc.value) == "cannot resolve nowhere.test"
