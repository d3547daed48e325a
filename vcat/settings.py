"""The one place configuration comes from: ``VCAT_*`` environment variables (or ``.env``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Upper bound of durations: larger ones overflow timers (Event.wait) and SQL intervals.
_YEAR = 365 * 86400


class Settings(BaseSettings):
    # No nan/inf: every float here is a size or a duration, and those crash later (sleep, SQL).
    model_config = SettingsConfigDict(
        env_prefix="VCAT_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    # Servers. Unset: `vcat up` starts a private Postgres and Redis under data_dir (embedded).
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL, e.g. postgresql+psycopg://u:p@host/db"
    )
    broker_url: str | None = Field(default=None, description="Redis URL for the Celery broker")

    # Storage.
    data_dir: Path = Field(default=Path("var"), description="Root for all local state")
    media_dir: Path | None = Field(default=None, description="Videos (default data_dir/media)")
    model_dir: Path | None = Field(default=None, description="Models (default data_dir/models)")

    # HTTP API.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)  # 0: any free port, as `vcat api --port 0`
    max_upload_bytes: int = Field(
        default=20 * 1024**3, ge=1, description="Upload size limit (413 above)"
    )
    url_ingest_enabled: bool = True
    url_allow_hosts: list[str] = Field(default_factory=list, description="Empty: any global host")
    url_timeout_seconds: float = Field(default=300.0, gt=0, le=_YEAR)

    # Catalogue.
    index_queue: str = Field(
        default="auto",
        description="Queue of indexing jobs: auto (gpu while a GPU worker is alive, else cpu)",
    )
    default_top_k: int = Field(default=5, ge=1, le=50, description="Scores kept per clip")
    default_min_score: float = Field(default=0.5, ge=0.0, le=1.0, description="Search threshold")
    # At most a century: now - N days must stay a valid datetime.
    retention_days: int = Field(
        default=0, ge=0, le=36_500, description="Expire videos after N days; 0: never"
    )
    delete_source_after_index: bool = Field(default=False, description="Privacy: drop uploads")
    api_workers: int = Field(
        default=2, ge=1, description="API processes (vcat api --workers) that vcat up starts"
    )
    search_connections: int = Field(
        default=4, ge=1, le=100, description="Postgres connections per API process for searches"
    )
    audit_enabled: bool = Field(default=True, description="Record who uploaded/searched/viewed")

    # Inference.
    default_model: str = Field(default="demo", description="Model used when a request names none")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    compile: bool = Field(default=False, description="torch.compile the model (slow first batch)")
    batch_size: int = Field(default=0, ge=0, description="Clips per forward; 0 picks by device")
    cpu_threads: int = Field(
        default=0,
        ge=0,
        description="Worker threads for CPU inference; 0: the cores its decode threads leave",
    )
    decode_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Nice increment of a worker's decode threads under CPU inference; 0: none",
    )

    # Workers.
    # 6, not 4: jobs waiting for a decoder keep the decoders fed while finished ones are stored
    # and the next messages arrive (150 short videos on 2 cores: inference idle 23-27% -> 12-19%).
    worker_concurrency: int = Field(
        default=6, ge=1, description="Jobs a worker process runs at once (they share one batcher)"
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts before a video is failed")
    job_stale_seconds: float = Field(
        default=60.0,
        ge=4,  # twice the worker's 2 s heartbeat: below that, healthy jobs are taken away
        le=_YEAR,
        description="A job silent this long lost its worker and is requeued (>= 4)",
    )
    job_time_base_seconds: float = Field(
        default=600.0, gt=0, le=_YEAR, description="Job time limit: base"
    )
    job_time_per_video_second: float = Field(
        default=20.0, ge=0, le=3600, description="Job time limit: added per second of video"
    )
    reconcile_seconds: float = Field(default=30.0, gt=0, le=_YEAR, description="Reconciler period")
    requeue_queued_after_seconds: float = Field(
        default=900.0, gt=0, le=_YEAR, description="Re-send jobs queued this long (lost messages)"
    )

    @property
    def media_path(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @property
    def model_path(self) -> Path:
        return self.model_dir or self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()
