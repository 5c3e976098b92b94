"""Annotation parsing and file lookup (SPEC B label order, SPEC C layout)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from media import make_annotation

from e3d_stream import ledger
from e3d_stream.errors import AnnotationError, ConfigError
from e3d_stream.video._dataset import Annotation, VideoItem, detect_source, list_videos, load_annotation, shard


def test_fixture_label_order_is_the_labels_list_not_sorted(fixtures_dir, expected):
    ann = load_annotation(fixtures_dir / "annotation.json")
    assert ann.label_index("HammerThrow") == 35 and ann.label_index("JumpRope") == 47
    # the trap the fixture sets: sorted() names would give 34 and 46
    assert sorted(ann.labels).index("HammerThrow") == 34 and sorted(ann.labels).index("JumpRope") == 46
    for v in expected["videos"]:
        assert ann.label_index(v["label"]) == v["label_index"]


def test_fixture_validation_order_and_training_ignored(fixtures_dir, expected):
    items = list_videos(fixtures_dir / "annotation.json", fixtures_dir / "videos")
    assert [i.video_id for i in items] == expected["validation_order"]
    assert not set(expected["training_entries"]) & {i.video_id for i in items}
    assert [i.index for i in items] == list(range(len(items)))
    by_id = {v["video_id"]: v for v in expected["videos"]}
    for item in items:
        assert item.path == str(fixtures_dir / by_id[item.video_id]["file"])
        assert item.label_index == by_id[item.video_id]["label_index"] and not item.missing


def test_fixture_rawframes_listing_and_detection(fixtures_dir, expected):
    ann = load_annotation(fixtures_dir / "annotation.json")
    items = list_videos(ann, fixtures_dir / "rawframes", source="rawframes")
    assert [i.path for i in items] == [str(fixtures_dir / v["rawframes_dir"]) for v in expected["videos"]]
    assert detect_source(fixtures_dir / "rawframes", ann.subset("validation")) == "rawframes"
    assert detect_source(fixtures_dir / "videos", items) == "video"


@pytest.fixture()
def tree(tmp_path):
    labels = ["ApplyEyeMakeup", "HandstandPushups", "Zebra", "apple"]
    entries = [
        ("v_Zebra_g01_c01", "Zebra", "validation"),
        ("v_ApplyEyeMakeup_g01_c01", "ApplyEyeMakeup", "training"),
        ("v_HandstandPushups_g01_c01", "HandstandPushups", "validation"),
        ("v_apple_g01_c01", "apple", "validation"),
        ("v_ApplyEyeMakeup_g02_c01", "ApplyEyeMakeup", "validation"),
    ]
    ann = make_annotation(tmp_path / "ann.json", labels, entries)
    root = tmp_path / "videos"
    for label in labels:
        (root / label).mkdir(parents=True)
    (root / "Zebra" / "v_Zebra_g01_c01.mp4").write_bytes(b"x")
    (root / "Zebra" / "v_Zebra_g01_c01.txt").write_bytes(b"x")          # not a video extension
    (root / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").write_bytes(b"x")  # UCF's spelling
    (root / "apple" / "v_apple_g01_c01.mkv").write_bytes(b"x")
    (root / "apple" / "v_apple_g01_c01.avi").write_bytes(b"x")           # .avi wins over .mkv
    return ann, root


def test_lookup_extensions_case_fallback_and_missing(tree):
    ann, root = tree
    items = list_videos(ann, root)
    assert [i.video_id for i in items] == ["v_Zebra_g01_c01", "v_HandstandPushups_g01_c01",
                                           "v_apple_g01_c01", "v_ApplyEyeMakeup_g02_c01"]
    assert [i.label_index for i in items] == [2, 1, 3, 0]
    assert items[0].path == str(root / "Zebra" / "v_Zebra_g01_c01.mp4")
    assert items[1].path == str(root / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    assert items[2].path == str(root / "apple" / "v_apple_g01_c01.avi")
    assert items[3].path is None and items[3].missing
    failure = items[3].failure()
    assert failure.reason == ledger.MISSING and failure.video_id == "v_ApplyEyeMakeup_g02_c01"
    assert items[0].failure() is None
    assert [i.video_id for i in list_videos(ann, root, subset="training")] == ["v_ApplyEyeMakeup_g01_c01"]


def test_bad_annotations(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationError):
        load_annotation(bad)
    bad.write_text(json.dumps({"labels": ["a"], "database": {"v": {"subset": "validation",
                                                                   "annotations": {"label": "b"}}}}))
    with pytest.raises(AnnotationError, match="unknown label 'b'"):
        load_annotation(bad)
    bad.write_text(json.dumps({"labels": ["a"], "database": {"v": {"subset": "validation"}}}))
    with pytest.raises(AnnotationError):
        load_annotation(bad)
    ok = make_annotation(tmp_path / "ok.json", ["a"], [("v", "a", "training")])
    with pytest.raises(AnnotationError, match="validation"):
        list_videos(ok, tmp_path)
    with pytest.raises(ConfigError, match="'frames'"):
        list_videos(ok, tmp_path, subset="training", source="frames")
    with pytest.raises(AnnotationError):
        Annotation(("a",), ()).label_index("zzz")


def test_shard_partitions_in_order():
    items = list(range(10))
    parts = [shard(items, i, 3) for i in range(3)]
    assert sum(parts, []) == items and [len(p) for p in parts] == [3, 3, 4]
    assert shard(items, 0, 1) == items
    with pytest.raises(ConfigError):
        shard(items, 3, 3)


def test_video_item_is_frozen():
    item = VideoItem("v", "a", 0, None, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.path = "x"
