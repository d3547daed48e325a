"""GET /search: segment merging in SQL, thresholds, fuzzy names, any/all, filters, pagination."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.search import encode_cursor
from tests.service.conftest import FakeModel, SeedVideo

pytestmark = [pytest.mark.db]

J, W, D = "juggling balls", "washing hands", "dancing"


def _search(client: TestClient, **params: object) -> dict:
    response = client.get("/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_runs_of_consecutive_clips_merge_into_segments(
    client: TestClient, seed_video: SeedVideo
) -> None:
    # clips 0-2 juggling (a run broken at 3), 4-5 juggling again; clip 3 below threshold
    vid = seed_video(
        [
            [(J, 0.9)],
            [(J, 0.7)],
            [(J, 0.8)],
            [(J, 0.2), (D, 0.7)],
            [(J, 0.6)],
            [(J, 0.95)],
            [(D, 0.9)],
        ]
    )
    body = _search(client, action="Juggling Balls", min_score=0.5)
    assert body["matched"] == [
        {"query": "Juggling Balls", "actions": [J], "fuzzy": False, "similarity": None}
    ]
    segs = sorted(body["items"], key=lambda s: s["start"])
    assert [(s["first_clip"], s["last_clip"], s["start"], s["end"]) for s in segs] == [
        (0, 2, 0.0, 6.0),
        (4, 5, 8.0, 12.0),
    ]
    assert segs[0]["max_score"] == pytest.approx(0.9)
    assert segs[0]["mean_score"] == pytest.approx((0.9 + 0.7 + 0.8) / 3, abs=1e-6)
    assert segs[0]["clips"] == 3 and segs[0]["action"] == J and segs[0]["model"] == "demo"
    assert segs[0]["media_url"] == f"/videos/{vid}/media#t=0,6"
    # sorted by score: the 0.95 run first
    assert body["items"][0]["first_clip"] == 4


def test_threshold_changes_the_runs(client: TestClient, seed_video: SeedVideo) -> None:
    seed_video([[(J, 0.9)], [(J, 0.55)], [(J, 0.9)]])
    assert len(_search(client, action=J, min_score=0.5)["items"]) == 1
    assert len(_search(client, action=J, min_score=0.6)["items"]) == 2
    assert _search(client, action=J, min_score=0.95)["items"] == []
    # default threshold comes from settings (0.5)
    assert _search(client, action=J)["min_score"] == 0.5


def test_fuzzy_match_says_what_it_matched(client: TestClient, seed_video: SeedVideo) -> None:
    seed_video([[(W, 0.8)]])
    body = _search(client, action="washing hand")
    assert body["matched"][0]["fuzzy"] is True
    assert body["matched"][0]["actions"] == [W]
    assert body["matched"][0]["similarity"] > 0.5
    assert len(body["items"]) == 1
    nothing = _search(client, action="zzzz qqqq")
    assert nothing["matched"][0] == {
        "query": "zzzz qqqq",
        "actions": [],
        "fuzzy": True,
        "similarity": None,
    }
    assert nothing["items"] == []


def test_model_filter_and_two_models(client: TestClient, seed_video: SeedVideo) -> None:
    other = FakeModel(name="other", labels=["dancing", "sleeping"])
    seed_video([[(D, 0.9)]])
    seed_video([[(D, 0.8)]], model=other)
    assert len(_search(client, action=D)["items"]) == 2
    only = _search(client, action=D, model="other")["items"]
    assert [s["model"] for s in only] == ["other"]


def test_any_and_all(client: TestClient, seed_video: SeedVideo) -> None:
    # juggling in clips 0-3, dancing in clips 2-5: together in 2-3
    seed_video(
        [[(J, 0.9)], [(J, 0.9)], [(J, 0.8), (D, 0.7)], [(J, 0.6), (D, 0.9)], [(D, 0.9)], [(D, 0.9)]]
    )
    any_ = _search(client, action=[J, D])
    assert sorted((s["action"], s["first_clip"], s["last_clip"]) for s in any_["items"]) == [
        (D, 2, 5),
        (J, 0, 3),
    ]
    all_ = _search(client, action=[J, D], match="all")["items"]
    assert [(s["first_clip"], s["last_clip"]) for s in all_] == [(2, 3)]
    assert all_[0]["action"] is None and all_[0]["actions"] == [J, D]
    assert all_[0]["max_score"] == pytest.approx(0.7)  # the weaker action's score per clip
    # an unmatched name makes `all` empty
    assert _search(client, action=[J, "zzzz qqqq"], match="all")["items"] == []


def test_video_and_time_filters(client: TestClient, seed_video: SeedVideo) -> None:
    a = seed_video([[(J, 0.9)], [(J, 0.1)], [(J, 0.9)]])
    b = seed_video([[(J, 0.9)]])
    in_a = _search(client, action=J, video=str(a))["items"]
    assert {s["video_id"] for s in in_a} == {str(a)}
    late = _search(client, action=J, **{"from": 3.0})["items"]
    assert [(s["video_id"], s["first_clip"]) for s in late] == [(str(a), 2)]
    early = _search(client, action=J, to=1.0)["items"]
    assert {s["video_id"] for s in early} == {str(a), str(b)}


@pytest.mark.parametrize("sort", ["score", "time"])
def test_pagination_is_stable(client: TestClient, seed_video: SeedVideo, sort: str) -> None:
    for v in range(4):  # equal scores across videos exercise the tie-breakers
        seed_video([[(J, 0.9)], [(J, 0.1)], [(J, 0.7 + v / 100)], [(J, 0.1)], [(J, 0.9)]])
    full = _search(client, action=J, sort=sort, limit=100)["items"]
    assert len(full) == 12
    pages, cursor = [], None
    while True:
        params = {"action": J, "sort": sort, "limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = _search(client, **params)
        pages.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        seed_video([[(J, 0.99)]])  # new results while paging: no duplicates, no skips
    key = [(s["video_id"], s["first_clip"]) for s in pages]
    assert len(set(key)) == len(key)
    assert {(s["video_id"], s["first_clip"]) for s in full} <= set(key)
    if sort == "score":
        scores = [s["max_score"] for s in full]
        assert scores == sorted(scores, reverse=True)


def test_bad_search_input_is_4xx(client: TestClient, seed_video: SeedVideo) -> None:
    seed_video([[(J, 0.9)], [(J, 0.1)], [(J, 0.9)]])
    for params in (
        {"action": J, "cursor": "garbage!"},
        {"action": J, "min_score": 2},
        {"action": J, "sort": "random"},
        {},
        {"action": ""},
        {"action": J, "cursor": "WzEsMiwzXQ"},
        {"action": J, "from": 10, "to": 2},
    ):
        r = client.get("/search", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # well-formed but tampered cursors: caught before Postgres could refuse the values
    vid = "00000000-0000-0000-0000-000000000001"
    for sort, values in (
        ("score", [1e308, vid, 0, 1]),
        ("score", [0.5, vid, 2**40, 1]),
        ("time", ["2020-W01-1", vid, 0, 1]),
        ("time", ["2020-01-01T00:00:00", vid, 0, 1]),  # no time zone
    ):
        r = client.get(
            "/search", params={"action": J, "sort": sort, "cursor": encode_cursor(values)}
        )
        assert r.status_code == 422, (values, r.text)
        assert r.json()["detail"] == "cursor: not a cursor this API issued"


def test_actions_and_models(client: TestClient, seed_video: SeedVideo) -> None:
    seed_video([[(J, 0.9)], [(J, 0.1)], [(J, 0.9)], [(W, 0.8)]])
    seed_video([[(J, 0.9)]])
    actions = {a["name"]: a for a in client.get("/actions").json()}
    assert actions[J]["segments"] == 3 and actions[J]["videos"] == 2
    assert actions[W]["segments"] == 1 and actions[D]["segments"] == 0
    assert [a["name"] for a in client.get("/actions", params={"prefix": "JUG"}).json()] == [J]
    assert client.get("/actions", params={"prefix": "%"}).json() == []
    indexed = client.get("/actions", params={"indexed_only": True}).json()
    assert {a["name"] for a in indexed} == {J, W}
    models = client.get("/models").json()
    assert [(m["name"], m["labels"], m["videos"]) for m in models] == [("demo", 5, 2)]


def test_video_timeline_and_clips(client: TestClient, seed_video: SeedVideo) -> None:
    vid = seed_video([[(J, 0.9), (D, 0.6)], [(J, 0.8), (D, 0.05)], [(D, 0.7)]], thumbnails=True)
    timeline = client.get(f"/videos/{vid}/segments").json()
    assert [(s["action"], s["first_clip"], s["last_clip"]) for s in timeline["items"]] == [
        (J, 0, 1),
        (D, 0, 0),
        (D, 2, 2),
    ]
    assert timeline["items"][0]["thumbnail_url"] == f"/videos/{vid}/clips/0/thumbnail"
    clips = client.get(f"/videos/{vid}/clips", params={"limit": 2}).json()
    assert [c["idx"] for c in clips["items"]] == [0, 1]
    assert clips["items"][0]["scores"] == [
        {"action": J, "score": pytest.approx(0.9)},
        {"action": D, "score": pytest.approx(0.6)},
    ]
    rest = client.get(f"/videos/{vid}/clips", params={"cursor": clips["next_cursor"]}).json()
    assert [c["idx"] for c in rest["items"]] == [2] and rest["next_cursor"] is None
    thumb = client.get(f"/videos/{vid}/clips/1/thumbnail")
    assert thumb.status_code == 200 and thumb.content == b"\xff\xd8\xff\x01"
    assert thumb.headers["content-type"] == "image/jpeg"
    etag = thumb.headers["etag"]
    again = client.get(f"/videos/{vid}/clips/1/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    any_tag = client.get(f"/videos/{vid}/clips/1/thumbnail", headers={"If-None-Match": "*"})
    assert any_tag.status_code == 304
    other = client.get(f"/videos/{vid}/clips/2/thumbnail", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.content == b"\xff\xd8\xff\x02"
    assert client.get(f"/videos/{vid}/clips/9/thumbnail").status_code == 404
    # Without thumbnails: no URLs, at the stored threshold and at any other (computed live).
    bare = seed_video([[(J, 0.9)], [(J, 0.8)]])
    for params in ({}, {"min_score": 0.3}):
        items = client.get(f"/videos/{bare}/segments", params=params).json()["items"]
        assert [s["thumbnail_url"] for s in items] == [None]
    live = client.get(f"/videos/{vid}/segments", params={"min_score": 0.3}).json()["items"]
    assert live[0]["thumbnail_url"] == f"/videos/{vid}/clips/0/thumbnail"
    assert [c["thumbnail_url"] for c in client.get(f"/videos/{bare}/clips").json()["items"]] == [
        None,
        None,
    ]
    missing = client.get(f"/videos/{bare}/clips/0/thumbnail")
    assert missing.status_code == 404 and missing.json()["detail"] == "clip 0 has no thumbnail"


@pytest.mark.parametrize("sort", ["score", "time"])
def test_stored_segments_equal_live_computation(
    db: Session, seed_video: SeedVideo, sort: Literal["score", "time"]
) -> None:
    """Default-threshold searches read the stored `segments`; they must match the live SQL."""
    from service.read_db import close_pool, get_pool
    from service.search import find_segments

    async def every_page(group: list[int], stored: float | None, extra: dict[str, Any]) -> list:
        got, cursor = [], None
        while True:
            page, cursor = await find_segments(
                get_pool(),
                [group],
                min_score=0.5,
                sort=sort,
                limit=7,
                cursor=cursor,
                stored_threshold=stored,
                **extra,
            )
            got += [
                (
                    s.video_id,
                    s.action,
                    s.first_clip,
                    s.last_clip,
                    s.start,
                    s.end,
                    round(s.max_score, 6),
                    round(s.mean_score, 6),
                )
                for s in page
            ]
            if cursor is None:
                close_pool()
                return got

    rng = random.Random(7)
    labels = FakeModel().labels
    for _ in range(6):
        seed_video(
            [[(lab, round(rng.random(), 3)) for lab in rng.sample(labels, 3)] for _ in range(25)]
        )
    actions = [[a] for a in db.scalars(text("SELECT id FROM actions ORDER BY id"))]
    every = [a for g in actions for a in g]
    for group in [*actions, every]:
        windows: list[dict[str, Any]] = [{}, {"t_from": 10.0, "t_to": 30.0}]
        for extra in windows:
            stored_table = asyncio.run(every_page(group, 0.5, extra))
            assert stored_table == asyncio.run(every_page(group, None, extra))
            assert stored_table


@pytest.mark.parametrize("sort", ["score", "time"])
def test_pages_over_several_actions_equal_the_full_list(
    client: TestClient, seed_video: SeedVideo, sort: str
) -> None:
    rng = random.Random(3)
    for _ in range(5):
        seed_video(
            [[(J, rng.choice([0.6, 0.8, 0.9])), (W, rng.choice([0.6, 0.9]))], [(J, 0.1)]] * 3
        )
    full = _search(client, action=[J, W], sort=sort, limit=100)["items"]
    assert len(full) == 30 and {s["action"] for s in full} == {J, W}
    pages: list[dict] = []
    params: dict[str, object] = {"action": [J, W], "sort": sort, "limit": 7}
    while True:
        body = _search(client, **params)
        pages.extend(body["items"])
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert pages == full


def test_search_survives_a_dropped_database_connection(
    client: TestClient, db: Session, seed_video: SeedVideo
) -> None:
    seed_video([[(J, 0.9)]])
    assert len(_search(client, action=J)["items"]) == 1  # a pooled connection now exists
    db.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )
    db.commit()
    assert len(_search(client, action=J)["items"]) == 1  # retried on a fresh connection
