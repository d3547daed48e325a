"""Search by action: segments = maximal runs of consecutive clips scoring >= min_score.

Runs are found in SQL with the gaps-and-islands trick (``clip_idx - row_number()`` is constant
within a run), over the index ``clip_scores (action_id, video_id, clip_idx) INCLUDE (score)``.
Names match case-insensitively; with no exact match, the closest name by pg_trgm similarity.
Queries go straight to psycopg on the event loop (``service.read_db``: why), so the SQL here
uses its ``%(name)s`` placeholders.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from service.read_db import Reader
from service.ttl_cache import TtlCache

FUZZY_MIN_SIMILARITY = 0.3
# Action names are read per search; each process keeps them all (a few hundred per model) and
# reloads them when older than this many seconds. A name it does not know yet goes to SQL, so a
# model added elsewhere (by a worker) is found at once.
NAME_CACHE_SECONDS = 2.0


class SearchError(ValueError):
    """Bad search input (bad cursor, no such model)."""


@dataclass
class Match:
    query: str
    action_ids: list[int]
    names: list[str]
    fuzzy: bool
    similarity: float | None = None


@dataclass
class Segment:
    video_id: uuid.UUID
    action_id: int | None
    first_clip: int
    last_clip: int
    clips: int
    max_score: float
    mean_score: float
    start: float = 0.0
    end: float = 0.0
    has_thumbnail: bool = False
    action: str | None = None
    model: str | None = None
    actions: list[str] = field(default_factory=list)


async def match_action(db: Reader, query: str, model: str | None) -> Match:
    """Actions named ``query`` (any case) in ``model`` (or every model); else the closest name."""
    params: dict[str, Any] = {"q": query.strip().lower(), "model": model}
    model_filter = "AND m.name = %(model)s" if model else ""
    # One round trip: the exact matches, or (only when there are none) the fuzzy candidates,
    # best first: all actions with the best-scoring name, across models. ``%%`` is pg_trgm's
    # similarity operator, ``%`` escaped for psycopg.
    rows = await db.fetch(
        f"""WITH exact AS (
            SELECT a.id, a.name FROM actions a JOIN models m ON m.id = a.model_id
            WHERE lower(a.name) = %(q)s {model_filter}
        ), fuzzy AS (
            SELECT a.id, a.name, similarity(lower(a.name), %(q)s) AS sim
            FROM actions a JOIN models m ON m.id = a.model_id
            WHERE NOT EXISTS (SELECT FROM exact) AND lower(a.name) %% %(q)s {model_filter}
            ORDER BY sim DESC, lower(a.name), a.id LIMIT 50
        )
        SELECT * FROM (
            SELECT id, name, NULL::real AS sim, true AS exact FROM exact
            UNION ALL SELECT id, name, sim, false FROM fuzzy
        ) AS found ORDER BY sim DESC NULLS FIRST, lower(name), id""",
        params,
    )
    if rows and rows[0].exact:
        return Match(query, sorted(r.id for r in rows), sorted({r.name for r in rows}), False)
    rows = [r for r in rows if r.sim >= FUZZY_MIN_SIMILARITY]
    if not rows:
        return Match(query, [], [], fuzzy=True)
    best = rows[0].name.lower()
    chosen = [r for r in rows if r.name.lower() == best]
    return Match(
        query,
        [r.id for r in chosen],
        sorted({r.name for r in chosen}),
        True,
        round(float(rows[0].sim), 3),
    )


@dataclass(frozen=True)
class _Names:
    """Every action: lower-cased name -> [(id, name, model name)], as of ``expires - TTL``."""

    expires: float
    by_name: dict[str, list[tuple[int, str, str]]]


_names: _Names | None = None
_fuzzy: TtlCache[Match] = TtlCache(NAME_CACHE_SECONDS)


async def _all_names(db: Reader) -> _Names:
    global _names
    names = _names
    if names is None or names.expires <= time.monotonic():
        by_name: dict[str, list[tuple[int, str, str]]] = {}
        rows = await db.fetch(
            "SELECT a.id, a.name, m.name AS model FROM actions a JOIN models m ON m.id = a.model_id"
        )
        for action_id, name, model in rows:
            by_name.setdefault(name.lower(), []).append((action_id, name, model))
        names = _names = _Names(time.monotonic() + NAME_CACHE_SECONDS, by_name)
    return names


async def resolve_action(db: Reader, query: str, model: str | None) -> Match:
    """``match_action``, answered from the per-process name table when it can be."""
    by_name = (await _all_names(db)).by_name
    known = [r for r in by_name.get(query.strip().lower(), ()) if model is None or r[2] == model]
    if known:
        return Match(query, sorted(r[0] for r in known), sorted({r[1] for r in known}), False)
    match = _fuzzy.peek((query, model))
    if match is None:
        match = await match_action(db, query, model)
        if match.action_ids:  # a miss is not cached: a model indexed next shows up at once
            _fuzzy.put((query, model), match)
    return match


def clear_cache() -> None:
    global _names
    _names = None
    _fuzzy.clear()


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise SearchError("cursor: not a cursor this API issued") from exc
    if not isinstance(values, list) or len(values) != len(kinds):
        raise SearchError("cursor: not a cursor this API issued")
    for v, kind in zip(values, kinds, strict=True):
        ok = isinstance(v, kind) and not isinstance(v, bool)
        if kind is float:
            ok = isinstance(v, int | float) and not isinstance(v, bool)
        if not ok:
            raise SearchError("cursor: not a cursor this API issued")
    return values


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _cursor_params(cursor: str | None, sort: str, params: dict[str, Any]) -> bool:
    """Decode ``cursor`` into params c0..c3; False when there is none."""
    if not cursor:
        return False
    kinds: tuple[type, ...] = (float, str, int, int) if sort == "score" else (str, str, int, int)
    values = decode_cursor(cursor, kinds)
    # Checked here, not by Postgres: a tampered value must be this 422, not a database error.
    try:
        uuid.UUID(values[1])
        if sort == "time":
            values[0] = datetime.fromisoformat(values[0])
            if values[0].tzinfo is None:
                raise ValueError("no time zone")
        elif not 0.0 <= values[0] <= 1.0:
            raise ValueError("not a score")
        if not all(0 <= v < 2**31 for v in values[2:]):
            raise ValueError("out of range")
    except ValueError:
        raise SearchError("cursor: not a cursor this API issued") from None
    params.update({f"c{i}": v for i, v in enumerate(values)})
    return True


def _after(first: str, sort: str, prefix: str) -> str:
    """Keyset condition: rows after the cursor in (first DESC, video_id, first_clip, key)."""
    cast = "real" if sort == "score" else "timestamptz"
    rest = f"({prefix}video_id, {prefix}first_clip, {prefix}key)"
    return f""" AND ({first} < CAST(%(c0)s AS {cast}) OR ({first} = CAST(%(c0)s AS {cast})
               AND {rest} > (CAST(%(c1)s AS uuid), %(c2)s, %(c3)s)))"""


async def find_segments(
    db: Reader,
    groups: list[list[int]] | None,
    *,
    min_score: float,
    mode: Literal["any", "all"] = "any",
    video_id: uuid.UUID | None = None,
    t_from: float | None = None,
    t_to: float | None = None,
    sort: Literal["score", "time"] = "score",
    limit: int = 50,
    cursor: str | None = None,
    stored_threshold: float | None = None,
) -> tuple[list[Segment], str | None]:
    """One page of segments and the cursor of the next (None at the end).

    ``groups``: per searched name, the matching action ids (None: every action; needs
    ``video_id``). ``any``: runs per action. ``all``: runs of clips where every group scores
    >= min_score, the clip's score being the weakest group's best.
    Sort ``score``: best first; ``time``: by video (newest first) then start time.
    ``stored_threshold``: the threshold the ``segments`` table was written at; a search at
    that threshold reads it instead of computing runs (same results, one index range).
    """
    if groups is None and video_id is None:
        raise SearchError("a segment listing over every action needs a video")
    if groups is not None:
        groups = [g for g in groups if g] if mode == "any" else groups
        if not groups or not all(groups):
            return [], None  # a name that matched no action: nothing to find
    single = groups is not None and (mode == "any" or len(groups) == 1)
    params: dict[str, Any] = {"min_score": min_score, "limit": limit + 1}
    if video_id is not None:
        params["video_id"] = video_id
    if t_from is not None:
        params["t_from"] = t_from
    if t_to is not None:
        params["t_to"] = t_to
    has_cursor = _cursor_params(cursor, sort, params)
    stored = (
        single
        and stored_threshold is not None
        and _float32(min_score) == _float32(stored_threshold)
    )
    if stored:
        sql = _stored_sql(params, groups or [], sort, video_id, t_from, t_to, has_cursor)
    else:
        sql = _live_sql(params, groups, mode, sort, video_id, t_from, t_to, has_cursor)
    rows = await db.fetch(sql, params)
    segments = [
        Segment(
            video_id=r.video_id,
            action_id=r.key if groups is None or single else None,
            first_clip=r.first_clip,
            last_clip=r.last_clip,
            clips=r.clips,
            max_score=float(r.max_score),
            mean_score=float(r.mean_score),
            start=float(r.start),
            end=float(r.end),
            has_thumbnail=r.has_thumbnail,
            action=r.action,
            model=r.model,
            actions=[r.action] if r.action else [],
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        first: Any = float(last.max_score) if sort == "score" else last.created
        next_cursor = encode_cursor([first, str(last.video_id), last.first_clip, last.key])
    return segments, next_cursor


def _values(params: dict[str, Any], rows: Sequence[tuple[int, ...]]) -> str:
    """``rows`` as a VALUES list of integer query parameters (added to ``params``), where an
    array would do: Postgres then estimates the same row count for a prepared statement's
    generic plan as for a custom one, and keeps the generic plan instead of planning every
    search anew (that was half a search's time)."""
    cells = []
    for i, row in enumerate(rows):
        params.update({f"v{i}_{j}": value for j, value in enumerate(row)})
        cells.append(", ".join(f"CAST(%(v{i}_{j})s AS int)" for j in range(len(row))))
    return "(VALUES " + ", ".join(f"({c})" for c in cells) + ")"


_CREATED = """to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _stored_sql(
    params: dict[str, Any],
    groups: list[list[int]],
    sort: str,
    video_id: uuid.UUID | None,
    t_from: float | None,
    t_to: float | None,
    has_cursor: bool,
) -> str:
    source = _values(params, [(a,) for a in sorted({a for g in groups for a in g})])
    where = ""
    if video_id is not None:
        where += " AND s.video_id = %(video_id)s"
    if t_from is not None:
        where += ' AND s."end" > %(t_from)s'
    if t_to is not None:
        where += " AND s.start < %(t_to)s"
    first = "s.max_score" if sort == "score" else "s.video_created"
    if has_cursor:
        where += _after(first, sort, "s.").replace("s.key", "s.action_id")
    # One ordered index range per action (segments_by_score / _by_time), each cut at the page
    # size, then merged: a plain ``action_id = ANY(...)`` would read and sort every segment of
    # the action before the LIMIT.
    outer = "p.max_score" if sort == "score" else "p.video_created"
    return f"""
        SELECT p.video_id, p.action_id AS key, p.first_clip, p.last_clip, p.clips, p.max_score,
               p.mean_score, p.start, p."end", p.has_thumbnail,
               {_CREATED.format(col="p.video_created")} AS created,
               a.name AS action, m.name AS model
        FROM {source} AS q(action_id)
        CROSS JOIN LATERAL (
            SELECT s.* FROM segments s
            WHERE s.action_id = q.action_id AND s.threshold = CAST(%(min_score)s AS real) {where}
            ORDER BY {first} DESC, s.video_id, s.first_clip
            LIMIT %(limit)s
        ) AS p
        JOIN actions a ON a.id = p.action_id
        JOIN models m ON m.id = a.model_id
        ORDER BY {outer} DESC, p.video_id, p.first_clip, p.action_id
        LIMIT %(limit)s
    """


def _live_sql(
    params: dict[str, Any],
    groups: list[list[int]] | None,
    mode: str,
    sort: str,
    video_id: uuid.UUID | None,
    t_from: float | None,
    t_to: float | None,
    has_cursor: bool,
) -> str:
    video_filter = "AND cs.video_id = %(video_id)s" if video_id is not None else ""
    if groups is None:
        hits = f"""SELECT cs.video_id, cs.action_id AS key, cs.clip_idx, cs.score
                   FROM clip_scores cs
                   WHERE cs.score >= CAST(%(min_score)s AS real) {video_filter}"""
    elif mode == "any" or len(groups) == 1:
        params["actions"] = sorted({a for g in groups for a in g})
        hits = f"""SELECT cs.video_id, cs.action_id AS key, cs.clip_idx, cs.score
                   FROM clip_scores cs
                   WHERE cs.action_id = ANY(%(actions)s)
                     AND cs.score >= CAST(%(min_score)s AS real) {video_filter}"""
    else:
        pairs = [(a, g) for g, ids in enumerate(groups) for a in ids]
        params["n_groups"] = len(groups)
        source = _values(params, pairs)
        hits = f"""SELECT video_id, 0 AS key, clip_idx, min(best) AS score FROM (
                     SELECT cs.video_id, cs.clip_idx, g.grp, max(cs.score) AS best
                     FROM clip_scores cs
                     JOIN {source} AS g(action_id, grp) ON g.action_id = cs.action_id
                     WHERE cs.score >= CAST(%(min_score)s AS real) {video_filter}
                     GROUP BY cs.video_id, cs.clip_idx, g.grp) AS per_group
                   GROUP BY video_id, clip_idx HAVING count(*) = %(n_groups)s"""
    # Clip times are looked up per segment (index probes) only where a filter needs them; the
    # page is cut first and joined to clips and videos after.
    where = ""
    if t_from is not None:
        where += """ AND (SELECT c."end" FROM clips c
                          WHERE c.video_id = s.video_id AND c.idx = s.last_clip) > %(t_from)s"""
    if t_to is not None:
        where += """ AND (SELECT c.start FROM clips c
                          WHERE c.video_id = s.video_id AND c.idx = s.first_clip) < %(t_to)s"""
    created = "(SELECT v.created_at FROM videos v WHERE v.id = s.video_id)"
    first = "s.max_score" if sort == "score" else created
    if has_cursor:
        where += _after(first, sort, "s.")
    order = "max_score DESC" if sort == "score" else "created_at DESC"
    return f"""
        WITH hits AS ({hits}),
        islands AS (
            SELECT video_id, key, clip_idx, score,
                   clip_idx - row_number() OVER (PARTITION BY video_id, key ORDER BY clip_idx)
                       AS island
            FROM hits
        ),
        s AS (
            SELECT video_id, key, min(clip_idx) AS first_clip, max(clip_idx) AS last_clip,
                   count(*) AS clips, max(score) AS max_score, avg(score) AS mean_score
            FROM islands GROUP BY video_id, key, island
        ),
        page AS MATERIALIZED (
            SELECT s.*, {created if sort == "time" else "NULL::timestamptz"} AS created_at
            FROM s WHERE true {where}
            ORDER BY {order}, video_id, first_clip, key
            LIMIT %(limit)s
        )
        SELECT p.video_id, p.key, p.first_clip, p.last_clip, p.clips, p.max_score,
               p.mean_score, c1.start, c2."end",
               EXISTS (SELECT 1 FROM thumbnails t
                       WHERE t.video_id = p.video_id AND t.clip_idx = p.first_clip)
                   AS has_thumbnail,
               {_CREATED.format(col="coalesce(p.created_at, v.created_at)")} AS created,
               a.name AS action, m.name AS model
        FROM page p
        JOIN videos v ON v.id = p.video_id
        JOIN clips c1 ON c1.video_id = p.video_id AND c1.idx = p.first_clip
        JOIN clips c2 ON c2.video_id = p.video_id AND c2.idx = p.last_clip
        LEFT JOIN actions a ON a.id = p.key
        LEFT JOIN models m ON m.id = a.model_id
        ORDER BY p.{order}, p.video_id, p.first_clip, p.key
    """
