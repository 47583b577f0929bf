"""Model store: immutable versions, round trip, promotion with verification."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.platform.model_store import ModelStore, ModelStoreError


def _write(store: ModelStore, version: str, value: float = 1.0):
    with store.write_version("two_tower", version, kind="retrieval", metrics={"recall@20": 0.3},
                             data_hash="abc") as d:
        np.save(d / "item_embeddings.npy", np.full((4, 2), value, dtype=np.float32))
        (d / "config.json").write_text(json.dumps({"embedding_dim": 2}))


def test_roundtrip_and_listing(tmp_store):
    _write(tmp_store, "v1")
    mv = tmp_store.get("two_tower", "v1", verify=True)
    assert mv.kind == "retrieval" and mv.metrics == {"recall@20": 0.3}
    assert mv.metadata["data_hash"] == "abc" and set(mv.metadata["files"]) == {"item_embeddings.npy", "config.json"}
    emb = np.load(tmp_store.local_path(mv) / "item_embeddings.npy")
    assert emb.shape == (4, 2) and emb[0, 0] == 1.0
    assert [v.version for v in tmp_store.list_versions("two_tower")] == ["v1"]
    assert tmp_store.list_models() == ["two_tower"]


def test_versions_are_immutable(tmp_store):
    _write(tmp_store, "v1")
    with pytest.raises(ModelStoreError, match="immutable"):
        _write(tmp_store, "v1", value=2.0)
    assert np.load(tmp_store.local_path(tmp_store.get("two_tower", "v1")) / "item_embeddings.npy")[0, 0] == 1.0


def test_failed_write_publishes_nothing(tmp_store):
    with pytest.raises(RuntimeError), tmp_store.write_version("two_tower", "v9", kind="retrieval") as d:
        (d / "x.bin").write_bytes(b"partial")
        raise RuntimeError("training crashed")
    assert tmp_store.list_versions("two_tower") == []


def test_promote_verifies_and_keeps_previous_on_corruption(tmp_store):
    _write(tmp_store, "v1")
    _write(tmp_store, "v2", value=2.0)
    tmp_store.promote("two_tower", "v1")
    assert tmp_store.get("two_tower").version == "v1"
    path = tmp_store.local_path(tmp_store.get("two_tower", "v2")) / "item_embeddings.npy"
    path.write_bytes(b"garbage")
    with pytest.raises(ModelStoreError, match="corrupt"):
        tmp_store.promote("two_tower", "v2")
    assert tmp_store.promoted("two_tower") == "v1"
    with pytest.raises(ModelStoreError, match="not found.*known versions"):
        tmp_store.promote("two_tower", "v3")


def test_names_are_validated(tmp_store):
    with pytest.raises(ModelStoreError, match="invalid version"), tmp_store.write_version(
        "two_tower", "../escape", kind="x"
    ):
        pass


def test_fsspec_memory_uri():
    store = ModelStore("memory://recsys-test-store")
    with store.write_version("ranker", "v1", kind="ranking") as d:
        (d / "ranker.pt").write_bytes(b"\x00\x01")
    mv = store.promote("ranker", "v1")
    assert mv.uri.startswith("memory://")
    local = store.local_path(mv)
    assert (local / "ranker.pt").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("bad", ["../v1", "../../outside", "/tmp/outside", "v1/../../outside", "a/b", "a\\b", "",
                                 ".hidden", "V1"])
def test_version_ids_are_validated_on_every_read(tmp_store, tmp_path, bad):
    """A version id from a request, an experiment config or PROMOTED never becomes a path outside the store."""
    _write(tmp_store, "v1")
    # a complete, loadable "version" outside the model directory that an unchecked join would reach
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "metadata.json").write_text(json.dumps({"name": "two_tower", "version": "x", "files": {}}))
    from recsys.platform.model_store import ModelVersion

    forged = ModelVersion("two_tower", bad, str(outside), {"files": {}})
    for read in (lambda: tmp_store.get("two_tower", bad), lambda: tmp_store.promote("two_tower", bad),
                 lambda: tmp_store.local_path(forged), lambda: tmp_store.verify(forged)):
        with pytest.raises(ModelStoreError, match="invalid version"):
            read()
    with pytest.raises(ModelStoreError, match="invalid model name"):
        tmp_store.get("../two_tower", "v1")
    assert tmp_store.get("two_tower", "v1").version == "v1"  # valid ids still read


def test_promoted_file_with_a_bad_version_is_refused(tmp_store):
    _write(tmp_store, "v1")
    tmp_store.promote("two_tower", "v1")
    with open(tmp_store._p("two_tower", "PROMOTED"), "w") as fh:  # a hand-edited or tampered pointer
        fh.write("../../etc\n")
    with pytest.raises(ModelStoreError, match="invalid version"):
        tmp_store.get("two_tower")


def test_metadata_listing_files_outside_the_version_is_refused(tmp_store):
    _write(tmp_store, "v1")
    meta_path = tmp_store._p("two_tower", "v1", "metadata.json")
    with open(meta_path) as fh:
        meta = json.load(fh)
    meta["files"]["../../secret"] = "0" * 64
    with open(meta_path, "w") as fh:
        json.dump(meta, fh)
    with pytest.raises(ModelStoreError, match="outside the version"):
        tmp_store.get("two_tower", "v1", verify=True)
