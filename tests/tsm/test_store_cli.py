"""The model store through the CLI, and ``pull`` against a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.tsm.conftest import make_model
from tests.tsm.test_checkpoints import authors_file, authors_layout
from vcat.cli import app
from vcat.settings import get_settings
from worker.tsm import store
from worker.tsm.store import Release, StoreError, load_model

runner = CliRunner()
NAME = "TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment8_e50.pth"


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("VCAT_MODEL_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    yield tmp_path / "models"
    get_settings.cache_clear()


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, Path, torch.nn.Module]:
    model, meta = make_model("resnet18", segments=2, classes=3)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(meta.labels) + "\n")
    (tmp_path / "src").mkdir()
    return authors_file(tmp_path / "src", authors_layout(model.state_dict()), NAME), labels, model


def test_import_list_show_export_remove(model_dir: Path, checkpoint, tmp_path: Path) -> None:
    ckpt, labels, model = checkpoint
    res = runner.invoke(app, ["models", "import", str(ckpt), "--labels", str(labels),
                              "--segments", "2", "--name", "r18", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["arch"] == "resnet18"
    loaded, _ = load_model("r18")
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() <= 1e-5
    res = runner.invoke(app, ["models", "list", "--json"])
    listed = [(m["name"], m["where"]) for m in json.loads(res.stdout)]
    assert listed == [("demo", "bundled"), ("r18", "store")]
    res = runner.invoke(app, ["models", "show", "r18", "--json"])
    shown = json.loads(res.stdout)
    assert shown["labels"] == ["c0", "c1", "c2"] and shown["num_segments"] == 2
    assert "r18" in runner.invoke(app, ["models", "list"]).stdout
    onnx = tmp_path / "r18.onnx"
    if pytest.importorskip("onnx"):
        res = runner.invoke(app, ["models", "export", "r18", "--onnx", "--out", str(onnx)])
        assert res.exit_code == 0, res.output
        assert onnx.stat().st_size > 1000
    assert runner.invoke(app, ["models", "remove", "r18"]).exit_code == 0
    res = runner.invoke(app, ["models", "show", "r18"])
    assert res.exit_code == 1 and "no model named 'r18'" in res.output


def test_cli_errors_are_one_line(model_dir: Path, checkpoint, tmp_path: Path) -> None:
    ckpt, labels, _ = checkpoint
    bad_labels = tmp_path / "bad.txt"
    bad_labels.write_text("a\nb\n")
    res = runner.invoke(app, ["models", "import", str(ckpt), "--labels", str(bad_labels)])
    assert res.exit_code == 1 and "3 classes, label file has 2" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(
        app, ["models", "import", str(tmp_path / "nope.pth"), "--labels", str(labels)]
    )
    assert res.exit_code == 1 and "no such file" in res.output
    res = runner.invoke(app, ["models", "pull", "no-such-release"])
    assert res.exit_code == 1 and "unknown release" in res.output


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_pull_verifies_and_imports(model_dir, checkpoint, http_dir, monkeypatch) -> None:
    ckpt, labels, model = checkpoint
    root, url = http_dir
    (root / NAME).write_bytes(ckpt.read_bytes())
    (root / "labels").mkdir()
    (root / "labels" / "kinetics400.txt").write_text(labels.read_text())
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    size = ckpt.stat().st_size
    monkeypatch.setitem(store.RELEASES, "tiny", Release(NAME, "kinetics400", 2, size, digest))
    res = runner.invoke(app, ["models", "pull", "tiny", "--base-url", url,
                              "--labels-base-url", f"{url}/labels", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["name"] == "tiny"
    loaded, meta = load_model("tiny")
    assert meta.labels == ["c0", "c1", "c2"] and meta.num_segments == 2
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() <= 1e-5

    monkeypatch.setitem(store.RELEASES, "tiny", Release(NAME, "kinetics400", 2, size, "0" * 64))
    with pytest.raises(StoreError, match="sha256"):
        store.pull("tiny", str(labels), base_url=url)
    monkeypatch.setitem(store.RELEASES, "tiny", Release(NAME, "kinetics400", 2, size + 1))
    with pytest.raises(StoreError, match="expected"):
        store.pull("tiny", str(labels), base_url=url)
    with pytest.raises(StoreError, match="404"):
        store.pull("tiny", str(labels), base_url=url + "/missing")
    monkeypatch.setitem(store.RELEASES, "online", Release(NAME, None, 2))
    with pytest.raises(StoreError, match="pass --labels PATH"):
        store.pull("online", base_url=url)


@pytest.fixture
def raw_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A TCP server answering ``replies[path]`` byte for byte, then closing the connection."""
    import socket

    replies: dict[str, bytes] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                path = conn.recv(65536).split(b" ")[1].decode()
                conn.sendall(replies.get(path, b"HTTP/1.1 404 Not Found\r\n\r\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", replies
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_broken_downloads_are_one_error_and_leave_nothing(raw_server, tmp_path: Path) -> None:
    url, replies = raw_server
    replies["/short"] = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"x" * 5000
    replies["/garbage"] = b"SSH-2.0-OpenSSH_9.2\r\n"
    replies["/chunked"] = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1000\r\n" + b"x" * 100)  # fmt: skip
    for path, reason in [("/short", "5000 of 10000"), ("/garbage", ""), ("/chunked", "")]:
        dest = tmp_path / "m.pth"
        with pytest.raises(StoreError, match=f"download of {url}{path} failed.*{reason}"):
            store.download(url + path, dest)
        assert list(tmp_path.iterdir()) == []  # no model, no .part
