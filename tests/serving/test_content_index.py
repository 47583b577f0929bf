"""Content-based source: profiles from metadata in FAISS, new items added live, the Redis catalog feed."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.serving.catalog.feed import CatalogFeed, ItemIn, extend_catalog, extend_metadata, items_frame
from recsys.serving.catalog.metadata import ItemMetadata
from recsys.serving.models.artifacts import Catalog, IdIndex
from recsys.serving.pipeline.candidates.content_index import ContentIndex, borrow_embeddings, profile_text


@pytest.fixture(scope="module")
def content(small_dataset) -> ContentIndex:
    return ContentIndex.build(small_dataset.items)


def _genres(items: pd.DataFrame) -> dict[int, set[str]]:
    return {int(i): set(str(g).split("|")) for i, g in zip(items["item_id"], items["genres"], strict=True)}


def test_profile_text_has_title_genre_and_year_tokens():
    text = profile_text({"title": "The Golden River (1995)", "genres": "Sci-Fi|Drama", "description": "A robot"})
    tokens = text.split()
    assert "golden" in tokens and "golden_river" in tokens and "the" not in tokens
    assert tokens.count("g_sci_fi") == 3 and "decade_1990" in tokens and "year_1995" in tokens
    assert "robot" in tokens


def test_neighbours_share_genres_far_more_than_random(content, small_dataset):
    items = small_dataset.items
    genres = _genres(items)
    rng = np.random.default_rng(0)
    sample = rng.choice(items["item_id"].to_numpy(), 50, replace=False)
    nb_overlap, rand_overlap = [], []
    for i in sample:
        ids, scores = content.similar(int(i), 5)
        assert len(ids) == 5 and int(i) not in ids and np.all(np.diff(scores) <= 1e-6)
        nb_overlap += [len(genres[int(i)] & genres[int(j)]) > 0 for j in ids]
        rand_overlap += [len(genres[int(i)] & genres[int(j)]) > 0 for j in rng.choice(list(genres), 5)]
    assert np.mean(nb_overlap) > 0.9
    assert np.mean(nb_overlap) > np.mean(rand_overlap) + 0.3


def test_new_item_is_retrievable_at_once_without_refit(content, small_dataset):
    src = small_dataset.items.iloc[10]
    new_id = int(small_dataset.items["item_id"].max()) + 1000
    n_before = len(content)
    frame = items_frame([ItemIn(item_id=new_id, title=str(src["title"]), genres=str(src["genres"]).split("|"),
                                description=str(src["description"]))])
    t0 = time.perf_counter()
    assert content.add(frame) == 1
    add_ms = (time.perf_counter() - t0) * 1000
    assert add_ms < 200, add_ms
    assert len(content) == n_before + 1 and new_id in content
    ids, scores = content.similar(new_id, 5)
    assert int(src["item_id"]) == int(ids[0]) and scores[0] > 0.95
    ids, _ = content.similar(int(src["item_id"]), 5)
    assert new_id == int(ids[0])
    # a user whose only click is the source item gets the new item among their content candidates
    ids, _ = content.from_history([int(src["item_id"])], 10)
    assert new_id in ids.tolist() and int(src["item_id"]) not in ids.tolist()
    # re-posting replaces in place (an edit), it never duplicates
    frame2 = items_frame([ItemIn(item_id=new_id, title="Zombie Curse", genres=["Horror"])])
    content.add(frame2)
    assert len(content) == n_before + 1
    ids, _ = content.similar(new_id, 5)
    genres = _genres(small_dataset.items)
    assert all("Horror" in genres[int(j)] for j in ids[:3])


def test_unknown_items_and_empty_history(content):
    assert content.similar(-5, 3)[0].size == 0
    assert content.from_history([], 3)[0].size == 0
    assert content.from_history([-5, -6], 3)[0].size == 0


def test_borrowed_embedding_lands_near_the_source_items_embedding(content, small_dataset):
    items = small_dataset.items
    ids = items["item_id"].to_numpy(np.int64)
    rng = np.random.default_rng(1)
    genre = items["genres"].astype(str).str.split("|").str[0].to_numpy()
    centers = {g: rng.normal(size=16) for g in set(genre)}
    emb = np.stack([centers[g] + 0.5 * rng.normal(size=16) for g in genre]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    src = items.iloc[20]
    new_id = int(ids.max()) + 2000
    content.add(items_frame([ItemIn(item_id=new_id, title=str(src["title"]), genres=str(src["genres"]).split("|"))]))
    vec, found = borrow_embeddings(content, np.array([new_id, -1]), IdIndex(ids), emb)
    assert found.tolist() == [True, False]
    cos = emb @ vec[0]
    same = genre == genre[20]
    assert cos[same].mean() > cos[~same].mean() + 0.3


def test_item_in_validation_names_the_field():
    with pytest.raises(ValidationError) as e:
        ItemIn(item_id=1, title="", genres=[])
    assert e.value.errors()[0]["loc"] == ("title",)
    with pytest.raises(ValidationError) as e:
        ItemIn(item_id=1, title="x", genres=["a|b"])
    assert e.value.errors()[0]["loc"][0] == "genres"
    with pytest.raises(ValidationError):
        ItemIn.model_validate({"item_id": 1, "title": "x", "colour": "red"})
    with pytest.raises(ValidationError):
        ItemIn(item_id=1, title="x", genres="Drama|War")  # the API takes a list (the CLI splits files' strings)
    with pytest.raises(ValidationError):
        ItemIn(item_id=1, title="x", genres=["  "])


def test_catalog_feed_round_trip_on_real_redis(redis_url):
    feed = CatalogFeed(redis_url, key=f"test:catalog:{uuid.uuid4().hex}")
    try:
        last, got = feed.read()
        assert got == [] and last == "0-0"
        ids = feed.publish([ItemIn(item_id=7, title="A"), ItemIn(item_id=8, title="B", genres=["War"])])
        assert len(ids) == 2
        last, got = feed.read()
        assert [g.item_id for g in got] == [7, 8] and last == ids[-1]
        feed.publish([ItemIn(item_id=9, title="C")])
        last2, got = feed.read(last)
        assert [g.item_id for g in got] == [9] and last2 != last
        assert feed.read(last2)[1] == []
    finally:
        feed.clear()


def test_catalog_and_metadata_overlays(small_dataset):
    cat = Catalog.from_items(small_dataset.items)
    meta = ItemMetadata(small_dataset.items["item_id"].to_numpy(), small_dataset.items["title"].to_numpy(object),
                        [str(g).split("|") for g in small_dataset.items["genres"]])
    existing = int(small_dataset.items["item_id"].iloc[0])
    frame = items_frame([ItemIn(item_id=99_999, title="New One", genres=["War"], available=True),
                         ItemIn(item_id=existing, title="Renamed", genres=["Comedy"], available=False)])
    cat2 = extend_catalog(cat, frame)
    assert len(cat2.index) == len(cat.index) + 1
    assert cat2.genres_of(99_999) == frozenset({"War"}) and cat2.genres_of(existing) == frozenset({"Comedy"})
    assert not cat2.is_available(cat2.rows(np.array([existing])))[0]
    assert np.isfinite(cat2.created_at_s[cat2.rows(np.array([99_999]))[0]])
    meta2 = extend_metadata(meta, frame)
    assert meta2.lookup([99_999, existing]) == [("New One", ["War"]), ("Renamed", ["Comedy"])]
    assert extend_catalog(Catalog.empty(), frame).genres_of(99_999) == frozenset({"War"})


def test_cli_import_items_validates_and_publishes(redis_url, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from recsys.platform.cli import root
    from recsys.serving.catalog.feed import STREAM_KEY

    feed = CatalogFeed(redis_url)
    tail = feed._r.xrevrange(STREAM_KEY, count=1)  # the stream's end (read() returns at most 1,000 entries)
    last_before = tail[0][0].decode() if tail else "0-0"
    (tmp_path / "items.csv").write_text("item_id,title,genres,year\n500001,Space Robots,Sci-Fi|Action,1999\n"
                                        "500002,Quiet Garden,Drama,\n")
    runner = CliRunner()
    res = runner.invoke(root, ["catalog", "import-items", str(tmp_path / "items.csv"), "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    assert "published 2 item(s)" in res.output
    _, got = feed.read(last_before)
    assert [(g.item_id, g.genres, g.year) for g in got] == [(500001, ["Sci-Fi", "Action"], 1999),
                                                            (500002, ["Drama"], None)]
    pd.DataFrame({"item_id": [500003], "title": ["Dated"], "genres": ["War"],
                  "created_at": [pd.Timestamp("2026-11-02T08:00:00Z")]}).to_parquet(tmp_path / "items.parquet")
    res = runner.invoke(root, ["catalog", "import-items", str(tmp_path / "items.parquet"), "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    (tmp_path / "bad.jsonl").write_text('{"item_id": 1, "title": "ok"}\n{"item_id": 2, "title": "x", "year": 5}\n')
    res = runner.invoke(root, ["catalog", "import-items", str(tmp_path / "bad.jsonl"), "--redis-url", redis_url])
    assert res.exit_code == 2 and "row 2" in res.output and "'year'" in res.output
    res = runner.invoke(root, ["catalog", "import-items", str(tmp_path / "items.csv"), "--dry-run"])
    assert res.exit_code == 0 and "2 item(s) valid" in res.output
    res = runner.invoke(root, ["catalog", "import-items", str(tmp_path / "items.csv"),
                               "--redis-url", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 2 and "cannot publish" in res.output
    feed._r.delete(STREAM_KEY)


def test_item_in_refuses_negative_ids_and_implausible_dates(tmp_path):
    from recsys.serving.catalog.feed import catalog_stream_id

    with pytest.raises(ValidationError) as e:
        ItemIn(item_id=-1, title="x")
    assert e.value.errors()[0]["loc"] == ("item_id",)
    with pytest.raises(ValidationError) as e:
        ItemIn(item_id=1, title="x", created_at="0001-01-01T00:00:00Z")
    assert e.value.errors()[0]["loc"] == ("created_at",)
    for bad in ({"available": 0}, {"item_id": True}, {"item_id": "5"}, {"year": "1999"}):
        with pytest.raises(ValidationError):
            ItemIn.model_validate({"item_id": 1, "title": "x", **bad})
    frame = items_frame([ItemIn(item_id=1, title="x", created_at="1995-06-01T12:00:00+02:00", year=1995.0)])
    assert frame["created_at"].iloc[0] == pd.Timestamp("1995-06-01T10:00:00Z")
    # replay starts at the catalog export's write time (stream ids are milliseconds)
    (tmp_path / "items.parquet").write_bytes(b"x")
    sid = catalog_stream_id(tmp_path)
    assert sid.endswith("-0") and abs(int(sid[:-2]) / 1000 - time.time()) < 60
    assert catalog_stream_id(None) == "0-0" and catalog_stream_id(tmp_path / "nope.parquet") == "0-0"
