"""The contract between the API and the worker: Celery task names, queues and message arguments.

The API enqueues with ``send_task`` by name and never imports the worker package (no torch).

``INDEX_VIDEO``: args ``[video_id: str]`` (a UUID string); kwargs ``{"model": str | None,
"window": float | None, "stride": float | None, "top_k": int}``. The worker reads the video
row, sets status ``processing``/progress, writes results with
``service.index_writer.replace_video_index`` (which sets ``done``), or sets ``failed`` with
``error``. With ``VCAT_DELETE_SOURCE_AFTER_INDEX``
it removes the source file after a successful index.

``CLEANUP``: no args; periodic (Celery beat): ``service.retention.expire_videos`` for videos older
than ``VCAT_RETENTION_DAYS``.
"""

from __future__ import annotations

from typing import Any

INDEX_VIDEO = "vcat.index_video"
# Bounds on a clip's window and stride, in seconds (API, CLI and pipeline): below a frame
# interval clips repeat frames, and a tiny stride would plan millions of clips.
CLIP_SECONDS_MIN = 0.01
CLIP_SECONDS_MAX = 600.0
CLEANUP = "vcat.cleanup"

INDEX_QUEUE_DEFAULT = "vcat.index"
MAINTENANCE_QUEUE = "vcat.maintenance"

# Index queues by worker kind. With VCAT_INDEX_QUEUE=auto the API sends to GPU_QUEUE while a GPU
# worker's heartbeat key (WORKER_KEY.format(queue="gpu", name=...)) is alive, else to CPU_QUEUE.
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
WORKER_KEY = "vcat:workers:{queue}:{name}"


def resolve_queue(setting: str, gpu_worker_alive: bool) -> str:
    """The queue an indexing job goes to under the ``index_queue`` setting."""
    if setting != "auto":
        return setting
    return GPU_QUEUE if gpu_worker_alive else CPU_QUEUE


def index_video_message(
    video_id: str,
    *,
    model: str | None = None,
    window: float | None = None,
    stride: float | None = None,
    top_k: int = 5,
) -> tuple[list[str], dict[str, Any]]:
    """(args, kwargs) of an INDEX_VIDEO message."""
    return [str(video_id)], {"model": model, "window": window, "stride": stride, "top_k": top_k}
