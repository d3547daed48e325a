"""The worker's tests reuse the catalogue's database fixtures (a clean database, seeding)."""

from tests.service.conftest import client, db, media_root, seed_video  # noqa: F401
