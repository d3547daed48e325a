"""Typed errors for bad video input: one reason code per kind of bad file, one readable line."""

from __future__ import annotations

from pathlib import Path

# reason code -> what it means, phrased for a one-line message
REASONS: dict[str, str] = {
    "not_found": "no such file",
    "not_a_file": "not a regular local file",
    "not_allowed": "not an allowed local video file",
    "empty": "file is empty (0 bytes)",
    "unreadable": "not a video FFmpeg can read",
    "no_video": "has no video stream",
    "image": "is a still image, not a video",
    "bad_dimensions": "frame size is unusable",
    "no_frames": "no decodable video frames",
    "bad_options": "cannot be indexed with these options",
}


class VideoError(ValueError):
    """A file that cannot be indexed; ``reason`` is a key of ``REASONS``."""

    def __init__(self, path: Path | str, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown VideoError reason {reason!r}")
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        text = f"{self.path}: {REASONS[reason]}"
        super().__init__(f"{text} ({detail})" if detail else text)
