"""A synthetic Something-Something-style benchmark: actions that only temporal order tells apart.

Every clip shows one object over a textured, drifting background. A single frame of "moving
left to right" looks exactly like one of "right to left" (same shapes, same positions), so a
per-frame model (TSN) can only guess direction; a model that mixes time (TSM) can learn it.
Clips are real H.264 MP4 files written through PyAV, so they exercise the same decoder as
uploads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# Human-readable labels (what search and the model meta show) and their folder names.
ACTIONS: tuple[str, ...] = (
    "moving something from left to right",
    "moving something from right to left",
    "moving something up",
    "moving something down",
    "moving something closer",
    "moving something away",
    "turning something clockwise",
    "turning something counterclockwise",
    "something appearing",
    "something disappearing",
    "holding something still",
)
# Label under a horizontal flip; classes that are not listed must never be flipped.
FLIP_MAP: dict[str, str] = {
    "moving something from left to right": "moving something from right to left",
    "moving something from right to left": "moving something from left to right",
    "moving something up": "moving something up",
    "moving something down": "moving something down",
    "moving something closer": "moving something closer",
    "moving something away": "moving something away",
    "turning something clockwise": "turning something counterclockwise",
    "turning something counterclockwise": "turning something clockwise",
    "something appearing": "something appearing",
    "something disappearing": "something disappearing",
    "holding something still": "holding something still",
}
FLIP_MAP_FILE = "flip_map.json"
# Label of a clip played backwards. Every class here has a time-reversed counterpart (a clip
# played backwards is a clip of its partner), which real actions often lack (falling reversed is
# not getting up), so training reverses clips only when the dataset ships this map.
REVERSE_MAP: dict[str, str] = {
    "moving something from left to right": "moving something from right to left",
    "moving something from right to left": "moving something from left to right",
    "moving something up": "moving something down",
    "moving something down": "moving something up",
    "moving something closer": "moving something away",
    "moving something away": "moving something closer",
    "turning something clockwise": "turning something counterclockwise",
    "turning something counterclockwise": "turning something clockwise",
    "something appearing": "something disappearing",
    "something disappearing": "something appearing",
    "holding something still": "holding something still",
}
REVERSE_MAP_FILE = "reverse_map.json"

SIZE = (128, 128)  # width, height
FPS = 12
CLIP_SECONDS = 2.5
SHAPES = ("disc", "square", "triangle", "cross", "bar")
# A turned object is held large, close to the camera (radius 28-44 px of 128). Turning direction
# is read from how the object's edges move relative to its centre; at the 64 px input of the
# CPU-trained demo model an object at the other classes' size left those motions below the
# resolution at which the network first mixes frames (stride 4), and turning stayed at chance.
TURN_SCALE = 2.0


MAX_TIMELINE_SECONDS = 24 * 3600.0
TIMELINE_SEGMENT_SECONDS = (3.75, 4.5)


class SynthError(ValueError):
    """Bad arguments to the synthetic data generator."""


def check_seed(seed: int) -> None:
    # numpy's SeedSequence takes only non-negative integers.
    if seed < 0:
        raise SynthError(f"--seed must be >= 0, got {seed}")


def check_per_class(per_class: int) -> None:
    if per_class < 1:
        raise SynthError("--per-class must be at least 1")


def check_timeline_seconds(
    seconds: float, segment_seconds: tuple[float, float] = TIMELINE_SEGMENT_SECONDS
) -> None:
    # nan slips past comparisons and inf overflows the frame count: check finite first.
    if not math.isfinite(seconds):
        raise SynthError(f"--seconds must be a finite number, got {seconds}")
    if seconds < segment_seconds[0]:
        raise SynthError(f"timeline must be at least {segment_seconds[0]} s long")
    if seconds > MAX_TIMELINE_SECONDS:
        raise SynthError(f"timeline must be at most {MAX_TIMELINE_SECONDS:g} s long")


def folder_name(label: str) -> str:
    """Folder for a class: the label with spaces as underscores (training maps it back)."""
    return label.replace(" ", "_")


@dataclass
class Scene:
    """Everything random about one clip except the action's motion."""

    background: np.ndarray  # (H + 2m, W + 2m, 3) float32 texture, larger than the frame
    bg_velocity: tuple[float, float]  # pixels per frame
    shape: str
    colour: np.ndarray  # (3,)
    accent: np.ndarray  # (3,): a marking that makes rotation visible
    size: float  # radius in pixels
    noise: float
    jitter: float
    distractor: tuple[str, np.ndarray, float, float, float] | None  # shape, colour, x, y, size


_MARGIN = 24


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, low-contrast random texture: a few gratings plus fine 4 px colour speckle.

    The texture is deliberately finer and fainter than the object (which is 28-44 px wide and
    strongly coloured against it): at the small inputs a CPU-trained model sees (64 px), coarse
    high-contrast blobs would be as large as the object and drown the motion cue.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 190, size=3).astype(np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    for _ in range(int(rng.integers(1, 4))):
        freq = rng.uniform(0.05, 0.3)
        theta = rng.uniform(0, math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(3, 15)
        wave = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
        img += amp * wave[..., None] * rng.uniform(-1, 1, size=3).astype(np.float32)
    fine = rng.normal(0, 6, size=(h // 4 + 2, w // 4 + 2, 3)).astype(np.float32)
    img += np.repeat(np.repeat(fine, 4, axis=0), 4, axis=1)[:h, :w]
    return img


def _contrasting(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour at least 90 (mean absolute, per channel) away from the background's mean."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        if np.abs(colour - mean).mean() >= 90:
            return colour
    return np.where(mean > 127, 0.0, 255.0).astype(np.float32)


def _random_scene(rng: np.random.Generator) -> Scene:
    w, h = SIZE
    background = _texture(rng, h + 2 * _MARGIN, w + 2 * _MARGIN)
    speed = rng.uniform(0, 0.4)
    angle = rng.uniform(0, 2 * math.pi)
    colour = _contrasting(rng, background)
    accent = (255 - colour + rng.uniform(-40, 40, size=3)).clip(0, 255).astype(np.float32)
    distractor = None
    if rng.random() < 0.2:  # a small static second object, now and then
        distractor = (
            str(rng.choice(SHAPES)),
            rng.uniform(0, 255, size=3).astype(np.float32),
            float(rng.uniform(0.1, 0.9) * w),
            float(rng.uniform(0.1, 0.9) * h),
            float(rng.uniform(4, 7)),
        )
    return Scene(
        background=background,
        bg_velocity=(speed * math.cos(angle), speed * math.sin(angle)),
        shape=str(rng.choice(SHAPES)),
        colour=colour,
        accent=accent,
        size=float(rng.uniform(14, 22)),
        noise=float(rng.uniform(0, 4)),
        jitter=float(rng.uniform(0, 0.8)),
        distractor=distractor,
    )


def _shape_mask(
    shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """(inside, accent) boolean masks of a shape centred at (cx, cy), rotated by ``angle``.

    Image y points down, so a growing ``angle`` turns the shape clockwise on screen.
    """
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = (xx - cx) / r, (yy - cy) / r
    u, v = c * dx + s * dy, -s * dx + c * dy  # object-local coordinates
    if shape == "disc":
        inside = u * u + v * v < 1
    elif shape == "square":
        inside = np.maximum(np.abs(u), np.abs(v)) < 0.8
    elif shape == "triangle":
        inside = (v < 0.6) & (v > -0.9 + 1.7 * np.abs(u) / 0.95)
    elif shape == "cross":
        inside = ((np.abs(u) < 0.3) & (np.abs(v) < 1)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1))
    else:  # "bar"
        inside = (np.abs(u) < 1) & (np.abs(v) < 0.35)
    # An off-centre marking so that every shape's orientation (hence rotation) is visible.
    accent = inside & (u > 0.35) & (v < 0.2)
    return inside, accent


# Motion of one action: progress p in [0, 1] -> (x, y, radius scale, angle, opacity).
Pose = tuple[float, float, float, float, float]


def _motion(action: str, rng: np.random.Generator) -> Callable[[float], Pose]:
    w, h = SIZE
    x0, y0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    a0 = rng.uniform(0, 2 * math.pi)
    # Travel at least 45% of the frame, centre moved as a whole (ends stay apart).
    travel, shift = rng.uniform(0.45, 0.65), rng.uniform(-0.08, 0.08)
    lo, hi = 0.5 - travel / 2 + shift, 0.5 + travel / 2 + shift
    turn = rng.uniform(0.6, 1.6) * math.pi
    grow = rng.uniform(1.8, 2.6)
    wobble = rng.uniform(0, 1.0)

    def pose(p: float) -> Pose:
        jig = wobble * math.sin(7 * p)  # a little hand shake, same for every class
        if action == "moving something from left to right":
            return (lo + (hi - lo) * p) * w, y0 + jig, 1.0, a0, 1.0
        if action == "moving something from right to left":
            return (hi - (hi - lo) * p) * w, y0 + jig, 1.0, a0, 1.0
        if action == "moving something down":
            return x0 + jig, (lo + (hi - lo) * p) * h, 1.0, a0, 1.0
        if action == "moving something up":
            return x0 + jig, (hi - (hi - lo) * p) * h, 1.0, a0, 1.0
        if action == "moving something closer":
            return x0, y0 + jig, (1 + (grow - 1) * p) / grow * 1.6, a0, 1.0
        if action == "moving something away":
            return x0, y0 + jig, (grow - (grow - 1) * p) / grow * 1.6, a0, 1.0
        if action == "turning something clockwise":
            return x0, y0 + jig, TURN_SCALE, a0 + turn * p, 1.0
        if action == "turning something counterclockwise":
            return x0, y0 + jig, TURN_SCALE, a0 - turn * p, 1.0
        if action == "something appearing":
            return x0, y0 + jig, 1.0, a0, p
        if action == "something disappearing":
            return x0, y0 + jig, 1.0, a0, 1 - p
        if action == "holding something still":
            return x0 + jig, y0, 1.0, a0, 1.0
        raise SynthError(f"unknown action {action!r}")

    return pose


def _ease(t: float) -> float:
    return t * t * (3 - 2 * t)


def render_action(
    action: str, n_frames: int, rng: np.random.Generator, *, fill: tuple[float, float] | None = None
) -> Iterator[np.ndarray]:
    """Yield ``n_frames`` uint8 RGB frames (H, W, 3) of one action in a fresh random scene.

    ``fill``: the fraction of the clip where the action starts and ends; random when None (the
    action covers most of the clip but starts and stops at random times).
    """
    if action not in ACTIONS:
        raise SynthError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    w, h = SIZE
    scene = _random_scene(rng)
    pose = _motion(action, rng)
    start, end = fill if fill is not None else (rng.uniform(0, 0.25), rng.uniform(0.75, 1.0))
    if action in ("something appearing", "something disappearing") and fill is None:
        # A fade is quick: it happens somewhere in the middle, the object is static otherwise.
        mid, half = rng.uniform(0.35, 0.65), rng.uniform(0.05, 0.2)
        start, end = mid - half, mid + half
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    offset = np.array([_MARGIN, _MARGIN], dtype=np.float32) + rng.uniform(-8, 8, size=2)
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        p = _ease(min(max((t - start) / max(end - start, 1e-6), 0.0), 1.0))
        offset += scene.bg_velocity
        ox = int(np.clip(round(offset[0] + rng.normal(0, scene.jitter)), 0, 2 * _MARGIN))
        oy = int(np.clip(round(offset[1] + rng.normal(0, scene.jitter)), 0, 2 * _MARGIN))
        frame = scene.background[oy : oy + h, ox : ox + w].copy()
        if scene.distractor is not None:
            d_shape, d_colour, dx, dy, dr = scene.distractor
            mask, _ = _shape_mask(d_shape, xx, yy, dx, dy, dr, 0.0)
            frame[mask] = d_colour
        x, y, scale, angle, alpha = pose(p)
        inside, accent = _shape_mask(scene.shape, xx, yy, x, y, scene.size * scale, angle)
        if alpha > 0:
            frame[inside] = (1 - alpha) * frame[inside] + alpha * scene.colour
            frame[accent] = (1 - alpha) * frame[accent] + alpha * scene.accent
        if scene.noise > 0:
            frame += rng.normal(0, scene.noise, size=frame.shape).astype(np.float32)
        yield frame.clip(0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: Iterator[np.ndarray], fps: int = FPS) -> int:
    """Encode RGB frames as H.264 (yuv420p) MP4; returns the number of frames written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


def generate_dataset(
    out_dir: Path,
    per_class: int,
    seed: int,
    *,
    actions: tuple[str, ...] = ACTIONS,
    on_clip: Callable[[Path], None] | None = None,
) -> list[tuple[Path, str]]:
    """Write ``per_class`` clips of every action under ``out_dir/<folder>/NNNNN.mp4``.

    Also writes ``flip_map.json`` and ``reverse_map.json`` so that training may flip clips
    horizontally, or play them backwards, with the right label. Deterministic for a given seed.
    Returns (path, label) pairs.
    """
    check_per_class(per_class)
    check_seed(seed)
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise SynthError(f"unknown actions: {unknown}")
    out_dir.mkdir(parents=True, exist_ok=True)
    n_frames = round(CLIP_SECONDS * FPS)
    written: list[tuple[Path, str]] = []
    for k, action in enumerate(actions):
        for i in range(per_class):
            # One independent stream per clip: adding classes or clips never changes others.
            rng = np.random.default_rng([seed, k, i])
            path = out_dir / folder_name(action) / f"{i:05d}.mp4"
            write_mp4(path, render_action(action, n_frames, rng))
            written.append((path, action))
            if on_clip is not None:
                on_clip(path)
    flips = {a: b for a, b in FLIP_MAP.items() if a in actions and b in actions}
    (out_dir / FLIP_MAP_FILE).write_text(json.dumps(flips, indent=2) + "\n")
    reverses = {a: b for a, b in REVERSE_MAP.items() if a in actions and b in actions}
    (out_dir / REVERSE_MAP_FILE).write_text(json.dumps(reverses, indent=2) + "\n")
    return written


def generate_timeline(
    path: Path,
    seed: int,
    *,
    seconds: float = 60.0,
    segment_seconds: tuple[float, float] = TIMELINE_SEGMENT_SECONDS,
) -> list[dict[str, float | str]]:
    """One long video of consecutive actions, each in its own scene, with ground truth.

    Writes ``path`` and ``path.with_suffix('.json')`` holding ``[{action, start, end}]`` in
    seconds. Consecutive segments always differ in action.
    """
    check_timeline_seconds(seconds, segment_seconds)
    check_seed(seed)
    rng = np.random.default_rng([seed, 1_000_003])
    spans: list[tuple[str, int, int]] = []
    frame, total = 0, round(seconds * FPS)
    previous = ""
    while total - frame >= round(segment_seconds[0] * FPS):
        n = round(rng.uniform(*segment_seconds) * FPS)
        n = min(n, total - frame)
        action = str(rng.choice([a for a in ACTIONS if a != previous]))
        spans.append((action, frame, frame + n))
        frame += n
        previous = action

    def frames() -> Iterator[np.ndarray]:
        for action, a, b in spans:
            # Each action is performed at the pace of a training clip: the motion takes one clip
            # length (a fade 0.8 s) in the middle of its span; the object rests before and after.
            # Spans of >= 3.75 s hold at least one whole 2.5 s window at a 1.25 s stride.
            half = (0.4 if "appearing" in action else CLIP_SECONDS / 2) * FPS / (b - a)
            fill = (max(0.5 - half, 0.0), min(0.5 + half, 1.0))
            seg_rng = np.random.default_rng([seed, a])
            yield from render_action(action, b - a, seg_rng, fill=fill)

    write_mp4(path, frames())
    truth: list[dict[str, float | str]] = [
        {"action": action, "start": round(a / FPS, 3), "end": round(b / FPS, 3)}
        for action, a, b in spans
    ]
    path.with_suffix(".json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth
