"""What the worker calls to store results: register a model, replace a video's whole index.

Torch-free and session-based, so both the worker and tests (seeding search data) use it.
Thumbnails belong under ``settings.media_path / "thumbs" / <video id>/`` and are stored as paths
relative to ``settings.media_path``; deleting a video removes that folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from service.models import Action, Clip, ClipScore, Model, Video
from vcat.settings import get_settings


class ModelLike(Protocol):
    """Anything with a name, version and labels (``worker.tsm.meta.ModelMeta`` qualifies)."""

    name: str
    version: str
    labels: list[str]


class IndexDataError(ValueError):
    """Results that cannot be stored as given (unknown label, bad times or scores)."""


# (start seconds, end seconds, [(label, probability), ...] best first, thumbnail path or None)
ClipResult = tuple[float, float, Sequence[tuple[str, float]], str | None]

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
                          max_score, mean_score, threshold, thumbnail, video_created)
    SELECT s.video_id, s.action_id, s.first_clip, s.last_clip, s.clips, c1.start, c2."end",
           s.max_score, s.mean_score, CAST(:threshold AS real), c1.thumbnail, v.created_at
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
    return _model_actions(session, name, version, labels)[0]


def _model_actions(
    session: Session, name: str, version: str, labels: Sequence[str]
) -> tuple[int, dict[str, int]]:
    """``ensure_model`` plus the action id of every label, in one round trip for a known model
    (every job's store comes through here)."""
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
            actions = session.execute(
                insert(Action).returning(Action.name, Action.id),
                [{"model_id": model_id, "idx": i, "name": n} for i, n in enumerate(labels)],
            ).all()
            return model_id, {r[0]: r[1] for r in actions}
    raise IndexDataError(f"model {name} version {version}: registered without its labels")


def _registered(
    session: Session, name: str, version: str, labels: Sequence[str]
) -> tuple[int, dict[str, int]] | None:
    rows = session.execute(
        select(Model.id, Action.name, Action.id)
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
        return rows[0][0], {r[1]: r[2] for r in rows}
    return None


class ClaimLost(Exception):
    """``replace_video_index(attempt=N)``: the video is no longer in attempt N (deleted, or
    claimed by another worker); nothing was written."""


# The derived rows of one video, in one statement (clip scores go with their clips).
_CLEAR_SQL = text(
    """
    WITH c AS (DELETE FROM clips WHERE video_id = :v),
         a AS (DELETE FROM video_actions WHERE video_id = :v)
    DELETE FROM segments WHERE video_id = :v
    """
)
# Summaries and segments of one video in one statement (both read the clip scores as of its
# start, which include this transaction's inserts).
_DERIVED_SQL = text(
    "WITH summary AS ("
    + _SUMMARY_SQL.format(where="WHERE video_id = :video_id")
    + ")"
    + _SEGMENTS_SQL.format(where="AND video_id = :video_id")
)


def replace_video_index(
    session: Session,
    video_id: uuid.UUID | str,
    model: ModelLike,
    clips: Iterable[ClipResult],
    *,
    attempt: int | None = None,
) -> int:
    """Store one video's full result, replacing any earlier one, in one transaction.

    Clips are numbered 0, 1, ... in the order given (time order). Marks the video ``done`` with
    progress 1 and the model used. Returns the number of clips. Raises IndexDataError (nothing
    written) for labels the model does not have, scores outside [0, 1] or end <= start.
    ``attempt``: write only if the video is ``processing`` in that attempt (a worker's claim),
    else raise ClaimLost (nothing written).
    """
    vid = uuid.UUID(str(video_id))
    try:
        model_id, action_ids = _model_actions(session, model.name, model.version, model.labels)
        clip_rows: list[dict[str, object]] = []
        score_rows: list[dict[str, object]] = []
        for idx, (start, end, scores, thumbnail) in enumerate(clips):
            if not end > start >= 0:
                raise IndexDataError(f"clip {idx}: need 0 <= start < end, got {start}, {end}")
            clip_rows.append(
                {"video_id": vid, "idx": idx, "start": start, "end": end, "thumbnail": thumbnail}
            )
            seen: set[str] = set()
            for rank, (label, score) in enumerate(scores, start=1):
                if label not in action_ids:
                    raise IndexDataError(f"clip {idx}: {label!r} is not a label of {model.name}")
                if not 0.0 <= score <= 1.0:
                    raise IndexDataError(f"clip {idx}: score {score} for {label!r} not in [0, 1]")
                if label in seen:
                    continue
                seen.add(label)
                score_rows.append(
                    {
                        "video_id": vid,
                        "clip_idx": idx,
                        "action_id": action_ids[label],
                        "rank": rank,
                        "score": float(score),
                    }
                )
        # Marking it done first locks the row (a concurrent delete waits for this transaction)
        # and proves the video (and the claim) still exists, in one round trip.
        mark_done = (
            update(Video)
            .where(Video.id == vid)
            .values(
                status="done",
                progress=1.0,
                error=None,
                model_id=model_id,
                model_name=model.name,
                indexed_at=text("now()"),
                updated_at=text("now()"),
            )
            .returning(Video.id)
        )
        if attempt is not None:
            mark_done = mark_done.where(Video.status == "processing", Video.attempts == attempt)
        if session.execute(mark_done).one_or_none() is None:
            if attempt is not None:
                raise ClaimLost(f"video {vid} is no longer in attempt {attempt}")
            raise IndexDataError(f"no video {vid}")
        session.execute(_CLEAR_SQL, {"v": vid})
        if clip_rows:
            session.execute(insert(Clip), clip_rows)
        if score_rows:
            session.execute(insert(ClipScore), score_rows)
        threshold = get_settings().default_min_score
        session.execute(_DERIVED_SQL, {"video_id": vid, "threshold": threshold})
    except BaseException:
        session.rollback()
        raise
    session.commit()
    return len(clip_rows)
