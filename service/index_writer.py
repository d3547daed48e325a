"""What the worker calls to store results: register a model, replace a video's whole index.

Torch-free and session-based, so both the worker and tests (seeding search data) use it.
Thumbnails (JPEG bytes) are stored with the clips, in the same transaction (``thumbnails``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import psycopg
from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from service.db import driver_cursor
from service.models import Action, Model
from vcat.settings import get_settings


class ModelLike(Protocol):
    """Anything with a name, version and labels (``worker.tsm.meta.ModelMeta`` qualifies)."""

    name: str
    version: str
    labels: list[str]


class IndexDataError(ValueError):
    """Results that cannot be stored as given (unknown label, bad times or scores)."""


# (start seconds, end seconds, [(label, probability), ...] best first, JPEG thumbnail or None)
ClipResult = tuple[float, float, Sequence[tuple[str, float]], bytes | None]

# Segments per (video, action) at a threshold: gaps-and-islands over clip index, in SQL.
_SUMMARY_SQL = """
    INSERT INTO video_actions (video_id, action_id, segments, max_score)
    SELECT video_id, action_id,
           count(DISTINCT island) FILTER (WHERE hit),
           max(score)
    FROM (
        SELECT video_id, action_id, score, score >= CAST(:threshold AS real) AS hit,
               clip_idx - row_number() OVER (
                   PARTITION BY video_id, action_id, score >= CAST(:threshold AS real)
                   ORDER BY clip_idx
               ) AS island
        FROM clip_scores {where}
    ) AS s
    GROUP BY video_id, action_id
"""


# Stored segments at a threshold: the same gaps-and-islands, with clip times and thumbnails.
_SEGMENTS_SQL = """
    INSERT INTO segments (video_id, action_id, first_clip, last_clip, clips, start, "end",
                          max_score, mean_score, threshold, has_thumbnail, video_created)
    SELECT s.video_id, s.action_id, s.first_clip, s.last_clip, s.clips, c1.start, c2."end",
           s.max_score, s.mean_score, CAST(:threshold AS real),
           EXISTS (SELECT 1 FROM thumbnails t
                   WHERE t.video_id = s.video_id AND t.clip_idx = s.first_clip),
           v.created_at
    FROM (
        SELECT video_id, action_id, min(clip_idx) AS first_clip, max(clip_idx) AS last_clip,
               count(*) AS clips, max(score) AS max_score, avg(score) AS mean_score
        FROM (
            SELECT video_id, action_id, clip_idx, score,
                   clip_idx - row_number() OVER (
                       PARTITION BY video_id, action_id ORDER BY clip_idx) AS island
            FROM clip_scores WHERE score >= CAST(:threshold AS real) {where}
        ) AS runs
        GROUP BY video_id, action_id, island
    ) AS s
    JOIN videos v ON v.id = s.video_id
    JOIN clips c1 ON c1.video_id = s.video_id AND c1.idx = s.first_clip
    JOIN clips c2 ON c2.video_id = s.video_id AND c2.idx = s.last_clip
"""


def rebuild_segments(session: Session, threshold: float | None = None) -> int:
    """Recompute every stored segment and summary at ``threshold`` (default: the current
    default_min_score), e.g. after VCAT_DEFAULT_MIN_SCORE changed. Commits; returns the number of
    segments."""
    threshold = get_settings().default_min_score if threshold is None else threshold
    session.execute(text("DELETE FROM segments"))
    session.execute(text("DELETE FROM video_actions"))
    session.execute(text(_SUMMARY_SQL.format(where="")), {"threshold": threshold})
    result = session.execute(text(_SEGMENTS_SQL.format(where="")), {"threshold": threshold})
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def ensure_model(session: Session, name: str, version: str, labels: Sequence[str]) -> int:
    """The id of model (name, version), registering it and its labels if new.

    A model already registered with other labels is an error: a new label set needs a new
    version. Does not commit.
    """
    if not name or not version:
        raise IndexDataError("model name and version must be non-empty")
    if not labels or any(not isinstance(label, str) or not label.strip() for label in labels):
        raise IndexDataError(f"model {name}: labels must be non-empty strings")
    for _ in range(2):
        known = _registered(session, name, version, labels)
        if known is not None:
            return known
        # Two jobs may register a new model at once: the second waits for the first's commit,
        # inserts nothing, and reads the first's rows on the next turn.
        model_id = session.scalar(
            pg_insert(Model)
            .values(name=name, version=version, num_labels=len(labels))
            .on_conflict_do_nothing(constraint="models_name_version")
            .returning(Model.id)
        )
        if model_id is not None:
            session.execute(
                insert(Action),
                [{"model_id": model_id, "idx": i, "name": n} for i, n in enumerate(labels)],
            )
            return model_id
    raise IndexDataError(f"model {name} version {version}: registered without its labels")


def _registered(session: Session, name: str, version: str, labels: Sequence[str]) -> int | None:
    rows = session.execute(
        select(Model.id, Action.name)
        .join(Action, Action.model_id == Model.id)
        .where(Model.name == name, Model.version == version)
        .order_by(Action.idx)
    ).all()
    if rows:
        if [r[1] for r in rows] != list(labels):
            raise IndexDataError(
                f"model {name} version {version} is registered with other labels; "
                "give the new label set a new version"
            )
        return int(rows[0][0])
    return None


class ClaimLost(Exception):
    """``replace_video_index(lease=N)``: the video is no longer held by claim N (deleted, or
    claimed again); nothing was written."""


# Every statement of a store is psycopg's, sent as it is: a 4-second video's whole store is a few
# hundred microseconds of SQL, and SQLAlchemy's ORM and Core layers cost several times that in
# the worker's CPU (`bench/bench_service.py`, many short videos).

# Marks the video done. That locks the row (a concurrent delete or store waits for this
# transaction) and proves that the video, the claim (``lease``) and the model (registered with
# exactly these labels) all hold. No row back: one of them does not, and ``_store_head`` finds
# out which.
_HEAD_SQL = """
    WITH m AS (
        SELECT id FROM models
        WHERE name = %(model)s AND version = %(version)s
          AND ARRAY(SELECT name FROM actions WHERE model_id = models.id ORDER BY idx)
              = CAST(%(labels)s AS text[])
    ), done AS (
        UPDATE videos v SET status = 'done', progress = 1, error = NULL, model_id = m.id,
                            model_name = %(model)s, indexed_at = now(), updated_at = now()
        FROM m
        WHERE v.id = %(video)s AND (CAST(%(lease)s AS bigint) IS NULL
              OR (v.status = 'processing' AND v.claims = CAST(%(lease)s AS bigint)))
        RETURNING m.id AS model_id
    )
    SELECT model_id FROM done
"""
# The video's earlier rows (clip scores go with their clips). A statement of its own, after the
# head: one that waited there for another store's lock sees that store's rows here.
_CLEAR_SQL = """
    WITH c AS (DELETE FROM clips WHERE video_id = %(video)s),
         a AS (DELETE FROM video_actions WHERE video_id = %(video)s)
    DELETE FROM segments WHERE video_id = %(video)s
"""
# Clips, thumbnails and scores in one statement (the foreign keys to the clip are checked at
# its end); a score names its action by the label's index in the model.
_ROWS_SQL = """
    WITH c AS (
        INSERT INTO clips (video_id, idx, start, "end")
        SELECT %(video)s, t.n - 1, t.start, t.stop
        FROM unnest(CAST(%(starts)s AS float8[]), CAST(%(ends)s AS float8[]))
             WITH ORDINALITY AS t(start, stop, n)
    ), j AS (
        INSERT INTO thumbnails (video_id, clip_idx, jpeg)
        SELECT %(video)s, t.n - 1, t.jpeg
        FROM unnest(CAST(%(thumbs)s AS bytea[])) WITH ORDINALITY AS t(jpeg, n)
        WHERE t.jpeg IS NOT NULL
    )
    INSERT INTO clip_scores (video_id, clip_idx, action_id, rank, score)
    SELECT %(video)s, s.clip, a.id, s.rank, s.score
    FROM unnest(CAST(%(clip)s AS integer[]), CAST(%(label)s AS integer[]),
                CAST(%(rank)s AS smallint[]), CAST(%(score)s AS real[]))
         AS s(clip, label, rank, score)
    JOIN actions a ON a.model_id = %(model_id)s AND a.idx = s.label
"""
# Summaries and segments of one video in one statement (both read the clip scores as of its
# start, which include this transaction's inserts).
_DERIVED_SQL = (
    (
        "WITH summary AS ("
        + _SUMMARY_SQL.format(where="WHERE video_id = :video_id")
        + ")"
        + _SEGMENTS_SQL.format(where="AND video_id = :video_id")
    )
    .replace(":video_id", "%(video)s")
    .replace(":threshold", "%(threshold)s")
)


def replace_video_index(
    session: Session,
    video_id: uuid.UUID | str,
    model: ModelLike,
    clips: Iterable[ClipResult],
    *,
    lease: int | None = None,
) -> int:
    """Store one video's full result, replacing any earlier one, in one transaction.

    Clips are numbered 0, 1, ... in the order given (time order). Marks the video ``done`` with
    progress 1 and the model used. Returns the number of clips. Raises IndexDataError (nothing
    written) for labels the model does not have, scores outside [0, 1] or end <= start.
    ``lease``: write only if the video is ``processing`` under that claim (``videos.claims``,
    a worker's fencing token), else raise ClaimLost (nothing written).
    """
    vid = uuid.UUID(str(video_id))
    try:
        rows = _clip_arrays(model, clips)
        with driver_cursor(session) as cursor:
            model_id = _store_head(session, cursor, vid, model, lease)
            cursor.execute(_CLEAR_SQL, {"video": vid})
            cursor.execute(_ROWS_SQL, {"video": vid, "model_id": model_id, **rows})
            threshold = get_settings().default_min_score
            cursor.execute(_DERIVED_SQL, {"video": vid, "threshold": threshold})
    except BaseException:
        session.rollback()
        raise
    session.commit()
    session.expire_all()  # a Video the caller loaded is reloaded on its next access
    return len(rows["starts"])


def _clip_arrays(model: ModelLike, clips: Iterable[ClipResult]) -> dict[str, list[Any]]:
    """_ROWS_SQL's parameters: one array per column; IndexDataError for results that cannot
    be stored."""
    label_index = {label: i for i, label in enumerate(model.labels)}
    rows: dict[str, list[Any]] = {
        k: [] for k in ("starts", "ends", "thumbs", "clip", "label", "rank", "score")
    }
    for idx, (start, end, scores, thumbnail) in enumerate(clips):
        if not end > start >= 0:
            raise IndexDataError(f"clip {idx}: need 0 <= start < end, got {start}, {end}")
        rows["starts"].append(float(start))
        rows["ends"].append(float(end))
        if thumbnail is not None and not isinstance(thumbnail, bytes | bytearray):
            raise IndexDataError(f"clip {idx}: a thumbnail is JPEG bytes, got {type(thumbnail)}")
        rows["thumbs"].append(thumbnail)
        seen: set[int] = set()
        for rank, (label, score) in enumerate(scores, start=1):
            if label not in label_index:
                raise IndexDataError(f"clip {idx}: {label!r} is not a label of {model.name}")
            if not 0.0 <= score <= 1.0:
                raise IndexDataError(f"clip {idx}: score {score} for {label!r} not in [0, 1]")
            i = label_index[label]
            if i in seen:
                continue
            seen.add(i)
            rows["clip"].append(idx)
            rows["label"].append(i)
            rows["rank"].append(rank)
            rows["score"].append(float(score))
    return rows


def _store_head(
    session: Session,
    cursor: psycopg.Cursor[Any],
    vid: uuid.UUID,
    model: ModelLike,
    lease: int | None,
) -> int:
    """Run _HEAD_SQL; the model's id. A model not yet registered is registered (then the head
    runs again); other labels raise IndexDataError; a lost claim raises ClaimLost."""
    params = {"video": vid, "lease": lease, "model": model.name,
              "version": model.version, "labels": list(model.labels)}  # fmt: skip
    for registered in (False, True):
        row = cursor.execute(_HEAD_SQL, params).fetchone()
        if row is not None:
            return int(row[0])
        if not registered:
            # The first video of a new model, other labels, or no claim: register (or raise).
            ensure_model(session, model.name, model.version, model.labels)
    if lease is not None:
        raise ClaimLost(f"video {vid} is no longer held by claim {lease}")
    raise IndexDataError(f"no video {vid}")
