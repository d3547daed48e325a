"""Where a video's files live under ``settings.media_path``, and removing them."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from vcat.settings import get_settings

# container (PyAV format name, first alternative) -> file extension and media type
CONTAINER_TYPES: dict[str, tuple[str, str]] = {
    "mov": ("mp4", "video/mp4"),
    "matroska": ("mkv", "video/x-matroska"),
    "webm": ("webm", "video/webm"),
    "avi": ("avi", "video/x-msvideo"),
    "mpegts": ("ts", "video/mp2t"),
    "mpeg": ("mpg", "video/mpeg"),
    "flv": ("flv", "video/x-flv"),
    "ogg": ("ogv", "video/ogg"),
    "asf": ("wmv", "video/x-ms-wmv"),
    "mjpeg": ("mjpeg", "video/x-motion-jpeg"),
}


def media_root() -> Path:
    root = get_settings().media_path
    root.mkdir(parents=True, exist_ok=True)
    return root


def incoming_path(name: str) -> Path:
    folder = media_root() / ".incoming"
    folder.mkdir(exist_ok=True)
    return folder / f"{name}.part"


def media_name(video_id: uuid.UUID, container: str | None) -> str:
    first = (container or "").split(",")[0]
    ext = CONTAINER_TYPES.get(first, ("bin", ""))[0]
    return f"{video_id}.{ext}"


def media_type(container: str | None) -> str:
    first = (container or "").split(",")[0]
    return CONTAINER_TYPES.get(first, ("", "application/octet-stream"))[1]


def legacy_thumbs_dir(video_id: uuid.UUID) -> Path:
    """Where thumbnails were files, before migration 0005 moved them into Postgres."""
    return media_root() / "thumbs" / str(video_id)


def inside_media(relative: str | None) -> Path | None:
    """The file a stored relative path names, only if it stays under media_path."""
    if not relative:
        return None
    root = media_root().resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def remove_video_files(video_id: uuid.UUID, media_file: str | None) -> None:
    """The video's source file, and its thumbnail files if 0005 left any."""
    if media_file and (path := inside_media(media_file)) is not None:
        path.unlink(missing_ok=True)
    shutil.rmtree(legacy_thumbs_dir(video_id), ignore_errors=True)
