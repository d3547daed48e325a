"""The one place configuration comes from: environment variables prefixed ``VCAT_`` (or ``.env``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VCAT_", env_file=".env", extra="ignore")

    # Servers. Unset: `vcat up` starts a private Postgres and Redis under data_dir (embedded).
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL, e.g. postgresql+psycopg://u:p@host/db"
    )
    broker_url: str | None = Field(default=None, description="Redis URL for the Celery broker")

    # Storage.
    data_dir: Path = Field(default=Path("var"), description="Root for all local state")
    media_dir: Path | None = Field(default=None, description="Uploaded videos (default data_dir/media)")
    model_dir: Path | None = Field(default=None, description="Model store (default data_dir/models)")

    # HTTP API.
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = Field(default=20 * 1024**3, description="Upload size limit (413 above)")
    url_ingest_enabled: bool = True
    url_allow_hosts: list[str] = Field(default_factory=list, description="Empty: any global host")
    url_timeout_seconds: float = 300.0

    # Inference.
    default_model: str = Field(default="demo", description="Model used when a request names none")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    compile: bool = Field(default=False, description="torch.compile the model (slow first batch)")
    batch_size: int = Field(default=0, description="Clips per forward; 0 picks by device")

    @property
    def media_path(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @property
    def model_path(self) -> Path:
        return self.model_dir or self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()
