"""Open only allow-listed local video files with PyAV and describe them (``probe_video``).

Never hands FFmpeg a URL, playlist, concat list or device: the path must be an existing regular
file, is opened as ``file:<absolute path>`` with only the ``file`` protocol allowed, and files
that look like playlists (by name or first bytes) or open as one are refused.
"""

from __future__ import annotations

import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
from av.stream import Disposition

from worker.video.errors import VideoError

MAX_SIDE = 16384  # larger frames are refused before any decoding
MAX_PIXELS = 8192 * 8192
PLAYLIST_SUFFIXES = {".m3u", ".m3u8", ".mpd", ".sdp", ".ffconcat", ".concat", ".txt", ".pls"}
PLAYLIST_MAGIC = (b"#EXTM3U", b"ffconcat", b"<?xml", b"<MPD", b"v=0", b"[playlist]")
_PROTOCOL = re.compile(r"^(https?|rtmps?|rtsp|s?ftp|tcp|udp|tls|srt|concat|subfile|data|pipe):")
BLOCKED_FORMATS = {"hls", "applehttp", "concat", "dash", "sdp", "rtsp", "rtp", "tee", "lavfi"}
PROBE_DECODE_PACKETS = 300  # packets tried before a file counts as having no decodable frame


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float | None  # seconds, as the container declares it (None: not declared)
    fps: float | None  # average frame rate
    width: int  # displayed size, rotation applied
    height: int
    coded_width: int
    coded_height: int
    codec: str
    container: str
    rotation: int  # degrees counter-clockwise the stored frames are turned for display
    frame_count: int | None  # None where the container does not say
    has_audio: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_path(path: Path | str) -> Path:
    """The absolute path of an allowed local file, or VideoError."""
    raw = str(path)
    if "://" in raw:
        raise VideoError(raw, "not_allowed", "URLs are not opened")
    p = Path(raw).absolute()
    try:
        st = p.stat()
    except FileNotFoundError:
        if _PROTOCOL.match(raw):  # "http:/host/a.mp4": a URL whose // a shell or CLI collapsed
            raise VideoError(raw, "not_allowed", "URLs and protocols are not opened") from None
        raise VideoError(raw, "not_found") from None
    except OSError as exc:
        raise VideoError(raw, "not_a_file", exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(raw, "not_a_file")
    if st.st_size == 0:
        raise VideoError(raw, "empty")
    if p.suffix.lower() in PLAYLIST_SUFFIXES:
        raise VideoError(raw, "not_allowed", f"playlists and lists ({p.suffix}) are not opened")
    try:
        with open(p, "rb") as fh:
            head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise VideoError(raw, "unreadable", exc.strerror or str(exc)) from None
    if head.startswith(PLAYLIST_MAGIC):
        raise VideoError(raw, "not_allowed", "content is a playlist or list, not media")
    return p


def open_video(path: Path | str) -> tuple[av.container.InputContainer, av.VideoStream]:
    """Open an allowed file and return it with its first video stream (caller closes)."""
    p = check_path(path)
    try:
        container = av.open(
            f"file:{p}",
            container_options={"protocol_whitelist": "file"},
            metadata_errors="replace",
        )
    except av.FFmpegError as exc:
        raise VideoError(path, "unreadable", ffmpeg_reason(exc)) from None
    try:
        fmt = container.format.name
        if set(fmt.split(",")) & BLOCKED_FORMATS:
            raise VideoError(path, "not_allowed", f"{fmt} input is not opened")
        if fmt == "image2" or fmt.endswith("_pipe"):
            raise VideoError(path, "image", fmt.removesuffix("_pipe"))
        # Cover art (an MP3's or M4A's picture) is a video stream of one still frame.
        moving = [
            s for s in container.streams.video if not s.disposition & Disposition.attached_pic
        ]
        if not moving:
            detail = "only a cover picture" if container.streams.video else ""
            raise VideoError(path, "no_video", detail)
        stream = moving[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if w <= 0 or h <= 0:
            raise VideoError(
                path, "bad_dimensions", "header declares no usable size (corrupt or too large)"
            )
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise VideoError(path, "bad_dimensions", f"{w}x{h} exceeds the limit")
        if stream.codec_context.name in {"png", "bmp", "tiff", "webp", "gif"} and (
            stream.frames in (0, 1)
        ):
            raise VideoError(path, "image", stream.codec_context.name)
    except BaseException:
        container.close()
        raise
    return container, stream


def ffmpeg_reason(exc: av.FFmpegError) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() or type(exc).__name__


def single_threaded(stream: av.VideoStream) -> None:
    """One decoder thread, for decoding a first frame only: FFmpeg's default starts a thread per
    core for every open decoder, which cost a probe of a small video 25% more CPU and twice the
    wall time (320x240 H.264, 2 cores), and frame threading would delay that first frame."""
    stream.codec_context.thread_count = 1


def probe_video(path: Path | str) -> VideoInfo:
    """Describe a local video; decodes up to its first frame to read rotation and prove it plays."""
    container, stream = open_video(path)
    with container:
        single_threaded(stream)
        rotation = None
        try:  # the demuxer's last packet is empty and flushes the decoder's delayed frames
            for n, packet in enumerate(container.demux(stream)):
                rotation = first_frame_rotation(packet)
                if rotation is not None or n >= PROBE_DECODE_PACKETS:
                    break
        except av.FFmpegError as exc:
            raise VideoError(path, "unreadable", ffmpeg_reason(exc)) from None
        return describe(path, container, stream, rotation)


def first_frame_rotation(packet: av.Packet) -> int | None:
    """Decode ``packet``; the rotation of the first frame it yields, or None (no frame yet).
    Callers set one decoder thread first (``single_threaded``)."""
    try:
        frames = packet.decode()
    except av.FFmpegError:
        return None
    return round(frames[0].rotation) % 360 if frames else None


def describe(
    path: Path | str,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    rotation: int | None,
) -> VideoInfo:
    """``VideoInfo`` of an open video whose first frame decoded with ``rotation`` (None: no
    frame decoded, a VideoError)."""
    if rotation is None:
        raise VideoError(path, "no_frames")
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    coded_w, coded_h = stream.codec_context.width, stream.codec_context.height
    turned = rotation in (90, 270)
    return VideoInfo(
        path=str(path),
        duration=duration,
        fps=float(fps) if fps else None,
        width=coded_h if turned else coded_w,
        height=coded_w if turned else coded_h,
        coded_width=coded_w,
        coded_height=coded_h,
        codec=stream.codec_context.codec.canonical_name,  # "av1", not the decoder "libdav1d"
        container=container.format.name,
        rotation=rotation,
        frame_count=stream.frames or None,
        has_audio=bool(container.streams.audio),
    )
