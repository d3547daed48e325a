"""Where a model name points: the model store first, then the models bundled with vcat.

Every command that takes a model name comes through here (the worker, ``vcat index``, ``vcat
eval``, ``vcat models show/export/list``), so the bundled demo works without a model store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vcat.settings import get_settings
from worker.tsm.meta import ModelMeta
from worker.tsm.store import (
    META_FILE,
    StoreError,
    _check_name,
    get_meta,
    list_models,
    load_model,
)

if TYPE_CHECKING:
    from worker.tsm.recognizer import Recognizer

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_models() -> dict[str, Path]:
    if not BUNDLED_DIR.is_dir():
        return {}
    return {d.name: d for d in sorted(BUNDLED_DIR.iterdir()) if (d / META_FILE).is_file()}


def resolve_model(name: str) -> Path:
    """The directory of model ``name``: the store (``VCAT_MODEL_DIR``) wins over bundled ones."""
    stored = get_settings().model_path / _check_name(name)
    if (stored / META_FILE).is_file():
        return stored
    bundled = bundled_models().get(name)
    if bundled is not None:
        return bundled
    raise StoreError(
        f"no model named {name!r} in {get_settings().model_path} or among the bundled models "
        f"({', '.join(bundled_models()) or 'none'}); import one with `vcat models import`"
    )


def model_meta(name: str) -> ModelMeta:
    return get_meta(name, resolve_model(name).parent)


def load_named(name: str) -> tuple[Recognizer, ModelMeta]:
    """Load model ``name`` (stored, else bundled), or the model directory at path ``name``."""
    path = Path(name)
    return load_model(path if (path / META_FILE).is_file() else resolve_model(name))


def all_models() -> list[tuple[ModelMeta, str]]:
    """(metadata, "store" or "bundled") of every model a name can reach, sorted by name; a
    stored model hides a bundled one of the same name."""
    found = {m.name: (m, "store") for m in list_models()}
    for name, path in bundled_models().items():
        found.setdefault(name, (get_meta(name, path.parent), "bundled"))
    return [found[n] for n in sorted(found)]
