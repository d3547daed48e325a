"""Where a model name points: the model store first, then the models bundled with vcat."""

from __future__ import annotations

from pathlib import Path

from vcat.settings import get_settings
from worker.tsm.meta import ModelMeta
from worker.tsm.store import META_FILE, StoreError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_models() -> dict[str, Path]:
    if not BUNDLED_DIR.is_dir():
        return {}
    return {d.name: d for d in sorted(BUNDLED_DIR.iterdir()) if (d / META_FILE).is_file()}


def resolve_model(name: str) -> Path:
    """The directory of model ``name``: the store (``VCAT_MODEL_DIR``) wins over bundled ones."""
    stored = get_settings().model_path / name
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
    return ModelMeta.load(resolve_model(name) / META_FILE)
