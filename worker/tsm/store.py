"""The model store: one vcat-format directory per model under a root (``settings.model_path``).

Also downloads released checkpoints (``pull``) and label files, verifying size and sha256 where
the registry knows them. Base URLs are parameters so tests (and mirrors) can point elsewhere.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.tsm.checkpoints import (
    META_FILE,
    CheckpointError,
    import_external,
    load_vcat,
    save_vcat,
)
from worker.tsm.meta import ModelMeta
from worker.tsm.recognizer import Recognizer

AUTHORS_BASE_URL = "https://hanlab18.mit.edu/projects/tsm/models/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Public label maps (line number = class index).
LABEL_URLS = {
    "kinetics400": "https://raw.githubusercontent.com/mit-han-lab/temporal-shift-module/master/tools/kinetics_label_map.txt",
    "somethingv2": "https://raw.githubusercontent.com/open-mmlab/mmaction2/main/tools/data/sthv2/label_map.txt",
    "jester": "https://raw.githubusercontent.com/open-mmlab/mmaction2/main/tools/data/jester/label_map.txt",
}


@dataclass(frozen=True)
class Release:
    """A released checkpoint: file name on the authors' host, labels, frames per clip."""

    filename: str
    labels: str | None  # a LABEL_URLS name; None: the caller must give a label file
    num_segments: int
    size: int | None = None
    sha256: str | None = None


# The authors do not publish sizes or hashes; None means "not verified".
RELEASES: dict[str, Release] = {
    "tsm-k400-r50-8f": Release(
        "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth", "kinetics400", 8
    ),
    "tsm-k400-r50-16f": Release(
        "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment16_e50.pth", "kinetics400", 16
    ),
    "tsm-k400-r50-8f-dense": Release(
        "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth", "kinetics400", 8
    ),
    "tsm-k400-mobilenetv2-8f": Release(
        "TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth", "kinetics400", 8
    ),
    "tsn-k400-r50-5f": Release("TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth", "kinetics400", 5),
    "tsm-sthv2-r50-8f": Release(
        "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth", "somethingv2", 8
    ),
    # Class order of the online demo is a list in its source, not a published file.
    "tsm-jester-mobilenetv2-online": Release("mobilenetv2_jester_online.pth.tar", None, 8),
}


class StoreError(ValueError):
    """A model-store operation that cannot be done (unknown model, bad name, failed download)."""


def default_root() -> Path:
    from vcat.settings import get_settings

    return get_settings().model_path


def _root(root: Path | None) -> Path:
    return Path(root) if root is not None else default_root()


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise StoreError(f"invalid model name {name!r} (letters, digits, . _ -; max 64)")
    return name


# ----------------------------------------------------------------------------------- the store


def save_model(model: Recognizer, meta: ModelMeta, root: Path | None = None) -> Path:
    """Save into ``root/meta.name`` (replacing an existing model of that name); returns the dir."""
    target = _root(root) / _check_name(meta.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{meta.name}.", dir=target.parent))
    try:
        save_vcat(model, meta, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(name_or_dir: str | Path, root: Path | None = None) -> tuple[Recognizer, ModelMeta]:
    """Load a stored model (by name, or a vcat model directory path) in eval mode, on CPU."""
    path = Path(name_or_dir)
    if not (path / META_FILE).is_file():
        path = _root(root) / _check_name(str(name_or_dir))
        if not (path / META_FILE).is_file():
            raise StoreError(f"no model named {name_or_dir!r} in {_root(root)}")
    return load_vcat(path)


def list_models(root: Path | None = None) -> list[ModelMeta]:
    """Metadata of every stored model, sorted by name."""
    base = _root(root)
    if not base.is_dir():
        return []
    return [get_meta(d.name, base) for d in sorted(base.iterdir()) if (d / META_FILE).is_file()]


def get_meta(name: str, root: Path | None = None) -> ModelMeta:
    """Metadata of the stored model ``name``."""
    path = _root(root) / _check_name(name) / META_FILE
    if not path.is_file():
        raise StoreError(f"no model named {name!r} in {_root(root)}")
    try:
        return ModelMeta.load(path)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path}: invalid model metadata ({exc})") from exc


def remove(name: str, root: Path | None = None) -> None:
    """Delete the stored model ``name``."""
    path = _root(root) / _check_name(name)
    if not (path / META_FILE).is_file():
        raise StoreError(f"no model named {name!r} in {_root(root)}")
    shutil.rmtree(path)


# ------------------------------------------------------------------------------------- labels


def read_labels(path: Path) -> list[str]:
    """One class name per line (blank lines ignored); at least one class."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read label file {path}: {exc}") from exc
    labels = [ln.strip() for ln in lines if ln.strip()]
    if not labels:
        raise StoreError(f"label file {path} is empty")
    if len(set(labels)) != len(labels):
        raise StoreError(f"label file {path} has duplicate class names")
    return labels


def resolve_labels(
    spec: str, labels_base_url: str | None = None, progress: ProgressFn | None = None
) -> list[str]:
    """``kinetics400`` | ``somethingv2`` | ``jester`` (downloaded) or a path to a label file.

    ``labels_base_url`` replaces the public location: ``{base}/{name}.txt`` is fetched instead.
    """
    if spec in LABEL_URLS:
        url = f"{labels_base_url.rstrip('/')}/{spec}.txt" if labels_base_url else LABEL_URLS[spec]
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / f"{spec}.txt"
            download(url, dest, progress=progress)
            return read_labels(dest)
    path = Path(spec)
    if not path.is_file():
        raise StoreError(f"labels {spec!r}: not a file nor one of {', '.join(LABEL_URLS)}")
    return read_labels(path)


# ---------------------------------------------------------------------------------- downloads

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total or None)


def download(
    url: str, dest: Path, size: int | None = None, sha256: str | None = None,
    progress: ProgressFn | None = None, timeout: float = 60.0,
) -> Path:  # fmt: skip
    """Stream ``url`` to ``dest``; verify ``size`` / ``sha256`` (full or prefix) when given."""
    digest = hashlib.sha256()
    done = 0
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, part.open("wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else size
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        # http.client returns a short body without complaint when the server closes early
        if length and length.isdigit() and done != int(length):
            raise ValueError(f"connection closed after {done} of {length} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise StoreError(f"download of {url} failed: {exc or type(exc).__name__}") from exc
    if size is not None and done != size:
        part.unlink(missing_ok=True)
        raise StoreError(f"{url}: got {done} bytes, expected {size}")
    if sha256 is not None and not digest.hexdigest().startswith(sha256.lower()):
        part.unlink(missing_ok=True)
        raise StoreError(f"{url}: sha256 {digest.hexdigest()} does not match {sha256}")
    part.replace(dest)
    return dest


# ------------------------------------------------------------------------------ import / pull


def import_checkpoint(
    file: Path, labels: list[str], segments: int | None = None, name: str | None = None,
    root: Path | None = None, label_map: str | None = None,
) -> ModelMeta:  # fmt: skip
    """Convert an external checkpoint (authors' / mmaction2 / online demo) into the store.
    ``label_map``: the ``LABEL_URLS`` name ``labels`` came from (checked against the file)."""
    file = Path(file)
    model_name = _check_name(name or re.sub(r"(\.pth)?(\.tar)?$", "", file.name))
    model, meta = import_external(file, labels, model_name, segments, label_map)
    save_model(model, meta, root)
    return meta


def pull(
    name: str, labels: str | None = None, root: Path | None = None, base_url: str | None = None,
    labels_base_url: str | None = None, progress: ProgressFn | None = None,
) -> ModelMeta:  # fmt: skip
    """Download the released checkpoint ``name`` (see ``RELEASES``), verify it, import it.

    ``labels`` overrides the release's label map (a name in ``LABEL_URLS`` or a file path).
    """
    if name not in RELEASES:
        raise StoreError(f"unknown release {name!r}; known: {', '.join(sorted(RELEASES))}")
    rel = RELEASES[name]
    spec = labels or rel.labels
    if spec is None:
        raise StoreError(
            f"{name}: its class list is not a published file (the 'jester' map is mmaction2's "
            "order, not this model's); pass --labels PATH"
        )
    label_list = resolve_labels(spec, labels_base_url)
    url = (base_url or AUTHORS_BASE_URL).rstrip("/") + "/" + rel.filename
    with tempfile.TemporaryDirectory() as tmp:
        file = download(url, Path(tmp) / rel.filename, rel.size, rel.sha256, progress)
        try:
            named = spec if spec in LABEL_URLS else None
            meta = import_checkpoint(file, label_list, rel.num_segments, name, root, named)
        except CheckpointError as exc:
            raise StoreError(f"{name}: downloaded file does not load: {exc}") from exc
    return meta
