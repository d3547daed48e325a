"""vcat: a self-hosted video catalogue searchable by action."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vcat")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"
