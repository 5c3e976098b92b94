"""Upstream's datasets (okankop/Efficient-3DCNNs): annotations as its utils/*_json.py write them,
videos where its datasets/*.py look for them, and one simulated evaluation each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from media import make_numbered_video, numbered_frame
from PIL import Image

from e3d_stream import evaluate, list_videos, load_annotation
from e3d_stream.errors import ConfigError
from e3d_stream.run import EvalConfig
from e3d_stream.video._decode import iter_rawframes, rawframe_count


def _ucf_json(path: Path, labels: list[str], rows: list[tuple[str, str, str]]) -> Path:
    # utils/ucf101_json.py (and the HMDB-51 one): flat database {basename: {subset, annotations.label}}
    db = {key: {"subset": sub, "annotations": {"label": label}} for key, label, sub in rows}
    path.write_text(json.dumps({"labels": labels, "database": db}))
    return path


def _kinetics_json(path: Path, labels: list[str], rows: list[tuple[str, str, str]]) -> Path:
    # utils/kinetics_json.py: key '<youtube_id>_<start:06d>_<end:06d>.mp4', database nested by subset,
    # each record with its subset, annotations.label and n_frames
    db: dict[str, dict[str, object]] = {"training": {}, "validation": {}}
    for key, label, sub in rows:
        db[sub][key] = {"subset": sub, "annotations": {"label": label}, "n_frames": 20}
    path.write_text(json.dumps({"labels": labels, "database": db}))
    return path


def _jester_frames(folder: Path, n: int) -> Path:
    # datasets/jester.py: <root>/<id>/'{:05d}.jpg'
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        Image.fromarray(numbered_frame(i - 1, 176, 100)).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


# -- listing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_ucf101_and_hmdb51_find_label_folders_videos_and_frame_folders(tmp_path, dataset):
    ann = _ucf_json(tmp_path / "a.json", ["b_cls", "a_cls"],
                    [("t1", "a_cls", "training"), ("v_b_1", "b_cls", "validation"), ("v_a_1", "a_cls", "validation"),
                     ("v_gone", "a_cls", "validation")])
    (tmp_path / "v" / "b_cls").mkdir(parents=True)
    (tmp_path / "v" / "A_CLS").mkdir()                       # label folder in another case
    (tmp_path / "v" / "b_cls" / "v_b_1.avi").write_bytes(b"x")
    (tmp_path / "v" / "A_CLS" / "v_a_1.mp4").write_bytes(b"x")
    items = list_videos(ann, tmp_path / "v", dataset=dataset)
    assert [(i.video_id, i.label_index, i.index) for i in items] == [("v_b_1", 0, 0), ("v_a_1", 1, 1),
                                                                      ("v_gone", 1, 2)]
    assert items[0].path.endswith("b_cls/v_b_1.avi") and items[1].path.endswith("A_CLS/v_a_1.mp4")
    assert items[2].missing and items[2].failure().reason == "missing"
    (tmp_path / "f" / "b_cls" / "v_b_1").mkdir(parents=True)
    frames = list_videos(ann, tmp_path / "f", dataset=dataset, source="rawframes")
    assert [i.missing for i in frames] == [False, True, True]


def test_kinetics_nested_json_file_name_keys_and_time_segments(tmp_path):
    labels = ["zumba", "abseiling"]
    ann = _kinetics_json(tmp_path / "k.json", labels, [
        ("trainid0001_000010_000020.mp4", "zumba", "training"),
        ("abcdefghijk_000004_000014.mp4", "abseiling", "validation"),
        ("lmnopqrstuv_000120_000130.mp4", "zumba", "validation"),
        ("missingvid0_000000_000010.mp4", "zumba", "validation"),
    ])
    annotation = load_annotation(ann)
    assert annotation.labels == ("zumba", "abseiling")
    assert [vid for vid, _ in annotation.subset("training")] == ["trainid0001_000010_000020.mp4"]
    root = tmp_path / "kin"
    (root / "abseiling").mkdir(parents=True)
    (root / "zumba").mkdir()
    (root / "abseiling" / "abcdefghijk_000004_000014.mp4").write_bytes(b"x")
    (root / "zumba" / "lmnopqrstuv_000120_000130.mp4").write_bytes(b"x")
    (root / "zumba" / "lmnopqrstuv_000000_000010.mp4").write_bytes(b"x")   # another segment: not this one
    items = list_videos(ann, root, dataset="kinetics")
    assert [(i.video_id, i.label_index) for i in items] == [
        ("abcdefghijk_000004_000014.mp4", 1), ("lmnopqrstuv_000120_000130.mp4", 0),
        ("missingvid0_000000_000010.mp4", 0)]
    assert items[1].path.endswith("zumba/lmnopqrstuv_000120_000130.mp4")
    assert items[2].missing and items[2].failure().reason == "missing"
    # video_jpg_kinetics.py: the frame folder is the file name without its extension
    (tmp_path / "kf" / "abseiling" / "abcdefghijk_000004_000014").mkdir(parents=True)
    frames = list_videos(ann, tmp_path / "kf", dataset="kinetics", source="rawframes")
    assert frames[0].path.endswith("abseiling/abcdefghijk_000004_000014") and frames[1].missing


def test_kinetics_bare_youtube_ids_find_their_time_segment_files(tmp_path):
    ann = _ucf_json(tmp_path / "k.json", ["a"], [("abcdefghijk", "a", "validation"), ("zzzzzzzzzzz", "a", "validation"),
                                                 ("qqq_000001_000011", "a", "validation")])
    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r" / "a" / "abcdefghijk_000004_000014.mp4").write_bytes(b"x")
    (tmp_path / "r" / "a" / "zzzzzzzzzzz_extra_000004_000014.mp4").write_bytes(b"x")  # another id
    (tmp_path / "r" / "a" / "qqq_000001_000011.avi").write_bytes(b"x")
    items = list_videos(ann, tmp_path / "r", dataset="kinetics")
    assert items[0].path.endswith("abcdefghijk_000004_000014.mp4")
    assert items[1].missing
    assert items[2].path.endswith("qqq_000001_000011.avi")


def test_jester_frame_folders_without_label_folders(tmp_path):
    labels = ["Swiping Left", "Doing other things"]
    ann = _ucf_json(tmp_path / "j.json", labels, [("1", "Swiping Left", "training"), ("34870", "Doing other things",
                                                                                          "validation"),
                                                  ("9", "Swiping Left", "validation")])
    _jester_frames(tmp_path / "20bn" / "34870", 3)
    items = list_videos(ann, tmp_path / "20bn", dataset="jester", source="rawframes")
    assert [(i.video_id, i.label_index, i.missing) for i in items] == [("34870", 1, False), ("9", 0, True)]
    assert rawframe_count(items[0].path) == 3
    frames = list(iter_rawframes(items[0].path))
    assert len(frames) == 3 and frames[0].shape == (100, 176, 3)
    with pytest.raises(ConfigError, match="rawframes"):
        list_videos(ann, tmp_path / "20bn", dataset="jester", source="video")
    with pytest.raises(ConfigError, match="frame folders"):
        EvalConfig.create(video_path="v", annotation_path="a", backend="simulated", dataset="jester")


def test_unknown_dataset_is_refused(tmp_path):
    ann = _ucf_json(tmp_path / "a.json", ["a"], [("x", "a", "validation")])
    with pytest.raises(ConfigError, match="dataset='activitynet' is not one of"):
        list_videos(ann, tmp_path, dataset="activitynet")
    with pytest.raises(ConfigError, match="dataset='activitynet' is not one of"):
        EvalConfig.create(video_path="v", annotation_path="a", backend="simulated", dataset="activitynet")


# -- end to end (simulated backend) ------------------------------------------------------------------

def _run(tmp_path: Path, root: Path, ann: Path, **kw: object):
    return evaluate(video_path=str(root), annotation_path=str(ann), backend="simulated", workers=1, batch_size=2,
                    session_options={"ms_per_clip": 0.0}, **kw)


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_evaluate_ucf101_and_hmdb51(tmp_path, dataset):
    ann = _ucf_json(tmp_path / "a.json", ["a", "b"], [("v_a", "a", "validation"), ("v_b", "b", "validation"),
                                                      ("v_none", "b", "validation")])
    for vid, label in (("v_a", "a"), ("v_b", "b")):
        make_numbered_video(tmp_path / "v" / label / f"{vid}.avi", 20, width=160, height=120)
    report = _run(tmp_path, tmp_path / "v", ann, dataset=dataset)
    assert report.n_videos == 3 and report.n_scored == 2 and report.n_clips == 4
    assert [(f.video_id, f.reason) for f in report.failures] == [("v_none", "missing")]


def test_evaluate_kinetics(tmp_path):
    ann = _kinetics_json(tmp_path / "k.json", ["b", "a"], [("abcdefghijk_000001_000011.mp4", "a", "validation"),
                                                          ("zyxwvutsrqp_000002_000012.mp4", "b", "validation"),
                                                          ("nothere0000_000000_000010.mp4", "b", "validation")])
    make_numbered_video(tmp_path / "k" / "a" / "abcdefghijk_000001_000011.mp4", 20, width=160, height=120)
    make_numbered_video(tmp_path / "k" / "b" / "zyxwvutsrqp_000002_000012.mp4", 20, width=160, height=120)
    report = _run(tmp_path, tmp_path / "k", ann, dataset="kinetics")
    assert report.n_videos == 3 and report.n_scored == 2 and report.n_clips == 4
    assert [(f.video_id, f.reason) for f in report.failures] == [("nothere0000_000000_000010.mp4", "missing")]
    assert set(report.results) == {"abcdefghijk_000001_000011.mp4", "zyxwvutsrqp_000002_000012.mp4"}


def test_evaluate_jester(tmp_path):
    ann = _ucf_json(tmp_path / "j.json", ["No gesture", "Swiping Up"], [("11", "Swiping Up", "validation"),
                                                                         ("12", "No gesture", "validation"),
                                                                         ("13", "No gesture", "validation")])
    _jester_frames(tmp_path / "20bn" / "11", 18)
    _jester_frames(tmp_path / "20bn" / "12", 16)
    report = _run(tmp_path, tmp_path / "20bn", ann, dataset="jester", source="rawframes")
    assert report.n_videos == 3 and report.n_scored == 2 and report.n_clips == 3
    assert [(f.video_id, f.reason) for f in report.failures] == [("13", "missing")]
