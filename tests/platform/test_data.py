"""Dataset generator, loaders and splits: shape, determinism, realism and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.platform.data.movielens import load_ml100k, load_ml_dat, load_ml_latest, load_movielens
from recsys.platform.data.schema import EVENT_TYPES, Dataset, DatasetError
from recsys.platform.data.split import global_time, leave_last_out, split_events
from recsys.platform.data.synthetic import SyntheticConfig, generate


def test_generator_is_deterministic_and_valid():
    cfg = SyntheticConfig(n_users=150, n_items=120, n_events=8_000, seed=3)
    a, b = generate(cfg, progress=False), generate(cfg, progress=False)
    assert a.content_hash() == b.content_hash()
    pd.testing.assert_frame_equal(a.events, b.events)
    assert set(a.events["event_type"]) == set(EVENT_TYPES)
    other = generate(SyntheticConfig(n_users=150, n_items=120, n_events=8_000, seed=4), progress=False)
    assert other.content_hash() != a.content_hash()


def test_generator_realism(small_dataset):
    ev = small_dataset.events
    # Power law: the top 10% of items get far more than 10% of events.
    counts = ev["item_id"].value_counts()
    top = counts.iloc[: max(1, len(small_dataset.items) // 10)].sum() / len(ev)
    assert top > 0.25
    # Escalation: clicks follow views, purchases follow clicks; ratings are 1..5.
    n = ev["event_type"].value_counts()
    assert n["view"] > n["click"] > n["purchase"]
    r = ev.loc[ev["event_type"] == "rating", "rating"]
    assert r.between(1, 5).all() and ev.loc[ev["event_type"] != "rating", "rating"].isna().all()
    # No event before its item exists.
    created = ev["item_id"].map(small_dataset.items.set_index("item_id")["created_at"])
    assert (ev["timestamp"] >= created).all()
    assert small_dataset.items["description"].str.len().min() > 10


def test_save_load_roundtrip(small_dataset, tmp_path):
    small_dataset.save(tmp_path / "d")
    loaded = Dataset.load(tmp_path / "d")
    assert loaded.content_hash() == small_dataset.content_hash()
    assert len(loaded.items) == len(small_dataset.items)


def test_load_missing_dir_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="events.parquet does not exist"):
        Dataset.load(tmp_path / "nope")


def test_validate_names_unknown_item(small_dataset):
    bad = small_dataset.events.copy()
    bad.loc[5, "item_id"] = 10**9
    with pytest.raises(DatasetError, match="row 5 refers to item_id 1000000000"):
        Dataset(bad, small_dataset.items, small_dataset.users).validate()


def _events(rows):
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": "view",
            "rating": np.nan,
            "timestamp": pd.to_datetime([r[2] for r in rows], unit="D", utc=True),
        }
    )


def test_leave_last_out_by_hand():
    ev = _events([(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 13, 4), (2, 10, 1), (2, 11, 2)])
    s = leave_last_out(ev, min_history=3)
    assert s.test[["user_id", "item_id"]].values.tolist() == [[1, 13]]
    assert s.validation[["user_id", "item_id"]].values.tolist() == [[1, 12]]
    assert sorted(s.train["item_id"][s.train["user_id"] == 2]) == [10, 11]  # too short: all train
    assert {u: list(v) for u, v in s.targets("test").items()} == {1: [13]}


def test_global_time_split_no_leakage(small_dataset):
    s = global_time(small_dataset.events, 0.1, 0.1)
    assert s.train["timestamp"].max() <= s.validation["timestamp"].min()
    assert s.validation["timestamp"].max() <= s.test["timestamp"].min()
    assert len(s.train) + len(s.validation) + len(s.test) == len(small_dataset.events)
    targets = s.targets("test")
    seen = set(zip(s.train.user_id, s.train.item_id, strict=True)) | set(
        zip(s.validation.user_id, s.validation.item_id, strict=True)
    )
    assert all((u, i) not in seen for u, items in targets.items() for i in items)


def test_split_rejects_unknown_protocol(small_dataset):
    with pytest.raises(ValueError, match="unknown split protocol"):
        split_events(small_dataset.events, "random")


ML100K_ITEM = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n" \
              "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"


def test_ml100k_loader(tmp_path):
    (tmp_path / "u.item").write_text(ML100K_ITEM, encoding="latin-1")
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t2\t4\t881250960\n")
    ds = load_movielens(tmp_path)
    assert ds.name == "ml-100k" and ds.n_items == 2 and ds.n_users == 2
    assert ds.items.set_index("item_id").loc[1, "genres"] == "Animation|Children|Comedy"
    assert (ds.events["event_type"] == "rating").sum() == 3
    assert (ds.events["event_type"] == "click").sum() == 2  # ratings >= 4


def test_ml100k_bad_line_names_file_line_column(tmp_path):
    (tmp_path / "u.item").write_text(ML100K_ITEM, encoding="latin-1")
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n1\tx\t3\t881250950\n")
    with pytest.raises(DatasetError, match=r"u\.data:2: column 'item id' is not an integer"):
        load_ml100k(tmp_path)


def test_ml_latest_loader_and_errors(tmp_path):
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,"Heat (1995)",Action|Crime\n2,Up (2009),Animation\n')
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.5,100\n1,2,2.0,200\n")
    ds = load_ml_latest(tmp_path)
    assert ds.n_items == 2 and set(ds.events["event_type"]) == {"view", "click", "rating"}
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,9,100\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv:2: column 'rating' must be within"):
        load_ml_latest(tmp_path)
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,7,4,100\n")
    with pytest.raises(DatasetError, match="missing from the movie file"):
        load_ml_latest(tmp_path)
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,7,4,100\n1,1,4,101\n")
    ds = load_ml_latest(tmp_path, drop_unknown_movies=True)
    assert set(ds.events["item_id"]) == {1} and ds.meta["ratings_dropped_unknown_movie"] == 1


ML1M_MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure|Children's|Fantasy\n" \
              "3::Amélie (2001)::Comedy|Romance\n"


def _write_ml1m(d, ratings: str, users: bool = True) -> None:
    (d / "movies.dat").write_text(ML1M_MOVIES, encoding="latin-1")
    (d / "ratings.dat").write_text(ratings, encoding="latin-1")
    if users:
        (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n", encoding="latin-1")


def test_ml1m_dat_loader_drops_low_ratings(tmp_path):
    _write_ml1m(tmp_path, "1::1::5::978300760\n1::2::2::978300761\n1::3::3::978300762\n2::1::1::978300763\n"
                          "2::3::4::978300764\n")
    ds = load_movielens(tmp_path)
    assert ds.name == "ml-1m" and ds.n_items == 3
    assert ds.items.set_index("item_id").loc[3, "title"] == "Amélie (2001)"  # latin-1 decoded
    views = ds.events[ds.events["event_type"] == "view"]
    # ratings <= 2 (user 1 item 2, user 2 item 1) are not positive views
    assert sorted(zip(views["user_id"], views["item_id"], strict=True)) == [(1, 1), (1, 3), (2, 3)]
    assert set(ds.events[ds.events["event_type"] == "click"]["item_id"]) == {1, 3}
    assert ds.meta["ratings_dropped_as_negative"] == 2
    keep_all = load_ml_dat(tmp_path, max_negative_rating=0)
    assert (keep_all.events["event_type"] == "view").sum() == 5
    strict = load_ml_dat(tmp_path, max_negative_rating=3)
    assert (strict.events["event_type"] == "view").sum() == 2


def test_ml10m_dat_without_users_file_and_half_stars(tmp_path):
    _write_ml1m(tmp_path, "7::1::4.5::1230000000\n7::2::2.5::1230000001\n", users=False)
    ds = load_movielens(tmp_path)
    assert ds.name == "ml-10m"
    assert sorted(ds.events[ds.events["event_type"] == "rating"]["rating"]) == [2.5, 4.5]


def test_ml_dat_errors_name_file_and_line(tmp_path):
    _write_ml1m(tmp_path, "1::1::5::978300760\n1::2::5\n")
    with pytest.raises(DatasetError, match=r"ratings\.dat:2: expected 4 '::'-separated columns, got 3"):
        load_movielens(tmp_path)
    _write_ml1m(tmp_path, "1::1::5::978300760\n9::2::5::978300761\n")
    with pytest.raises(DatasetError, match="missing from the user file"):
        load_movielens(tmp_path)
    _write_ml1m(tmp_path, "1::1::5::978300760\n1::x::5::978300761\n")
    with pytest.raises(DatasetError, match=r"ratings\.dat:2: column 'MovieID' is not an integer"):
        load_movielens(tmp_path)


def test_ml_latest_threshold_is_a_cli_flag(tmp_path):
    from click.testing import CliRunner

    from recsys.platform.cli import root

    src = tmp_path / "src"
    src.mkdir()
    (src / "movies.csv").write_text("movieId,title,genres\n1,Heat (1995),Action\n2,Up (2009),Animation\n")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.5,100\n1,2,2.0,200\n2,2,3.0,300\n")
    for flag, n_views in (("2", 2), ("0", 3)):
        out = tmp_path / f"out{flag}"
        r = CliRunner().invoke(root, ["data", "import-movielens", str(src), "--out", str(out),
                                      "--max-negative-rating", flag])
        assert r.exit_code == 0, r.output
        assert (Dataset.load(out).events["event_type"] == "view").sum() == n_views
    r = CliRunner().invoke(root, ["data", "import-movielens", str(src), "--out", str(tmp_path / "x"),
                                  "--max-negative-rating", "9"])
    assert r.exit_code == 2 and "max-negative-rating" in r.output
