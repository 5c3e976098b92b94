"""The demo's synthetic dataset and the bundled demo model."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from e3d_stream.errors import ConfigError
from e3d_stream.video._demo_data import CODECS, DEMO_CLASSES, make_demo_dataset

ASSETS = Path(__file__).resolve().parents[1] / "e3d_stream" / "assets"
SMALL = dict(videos_per_class=1, training_videos_per_class=1, n_frames=(17, 24))


def decode(path: Path) -> np.ndarray:
    """All frames of a file as (n, H, W, 3) uint8, decoded independently of the package."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def file_digests(ds) -> dict[str, str]:
    return {v.video_id: hashlib.sha256(v.path.read_bytes()).hexdigest() for v in ds.videos}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo_a"), seed=5, **SMALL)


def test_classes_are_ucf101_names_in_classind_order(fixtures_dir):
    ucf101 = json.loads((fixtures_dir / "annotation.json").read_text())["labels"]
    assert 6 <= len(DEMO_CLASSES) <= 10
    assert set(DEMO_CLASSES) <= set(ucf101)
    # classInd order restricted to the demo classes
    assert list(DEMO_CLASSES) == [name for name in ucf101 if name in DEMO_CLASSES]


def test_annotation_is_valid_and_files_decode_with_the_asked_frame_count(small):
    ann = json.loads(small.annotation_path.read_text())
    assert ann["labels"] == list(DEMO_CLASSES) == list(small.labels)
    db = ann["database"]
    assert len(db) == small.n_videos == 2 * len(DEMO_CLASSES)
    subsets = [entry["subset"] for entry in db.values()]
    # upstream ucf101_json.py order: every training entry, then every validation entry, class by class
    assert subsets == ["training"] * len(DEMO_CLASSES) + ["validation"] * len(DEMO_CLASSES)
    assert [e["annotations"]["label"] for e in db.values()] == list(DEMO_CLASSES) * 2
    for video_id, entry in db.items():
        label = entry["annotations"]["label"]
        m = re.fullmatch(rf"v_{label}_g(\d\d)_c(\d\d)", video_id)
        assert m, video_id
        assert (int(m.group(1)) <= 7) == (entry["subset"] == "validation")  # UCF split-1 style groups
        path = small.video_root / label / f"{video_id}.avi"
        assert path.is_file()
        frames = decode(path)
        record = next(v for v in small.videos if v.video_id == video_id)
        assert record.path == path and record.label == label and record.subset == entry["subset"]
        assert 17 <= record.n_frames <= 24
        assert frames.shape == (record.n_frames, 240, 320, 3)
        assert frames.std() > 10  # textured content, not a flat frame


def test_same_seed_same_bytes_and_other_seed_other_videos(small, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=5, **SMALL)
    assert file_digests(again) == file_digests(small)
    assert json.loads(again.annotation_path.read_text()) == json.loads(small.annotation_path.read_text())

    other = make_demo_dataset(tmp_path / "other", seed=6, **SMALL)
    a, b = file_digests(small), file_digests(other)
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)
    first = small.subset("validation")[0]
    second = other.subset("validation")[0]
    fa, fb = decode(first.path), decode(second.path)
    n = min(len(fa), len(fb))
    assert np.abs(fa[:n].astype(int) - fb[:n].astype(int)).mean() > 10


def test_training_and_validation_videos_differ_for_one_seed(small):
    train = small.subset("training")[0]
    val = small.subset("validation")[0]
    assert train.label == val.label
    fa, fb = decode(train.path), decode(val.path)
    n = min(len(fa), len(fb))
    assert np.abs(fa[:n].astype(int) - fb[:n].astype(int)).mean() > 10


def test_a_frame_alone_does_not_tell_the_class(small):
    """Backdrop and shape colours are drawn per video, not per class.

    Two videos of one class differ in mean colour about as much as videos of
    different classes do, so a first frame's colour carries no class signal.
    """
    means = {(v.subset, v.label): decode(v.path)[0].reshape(-1, 3).mean(0) for v in small.videos}
    within = np.mean([np.linalg.norm(means["training", c] - means["validation", c]) for c in DEMO_CLASSES])
    between = np.mean([np.linalg.norm(means["training", a] - means["validation", b])
                       for a in DEMO_CLASSES for b in DEMO_CLASSES if a != b])
    assert within > 20 and within > 0.5 * between


@pytest.mark.parametrize("kwargs, word", [
    (dict(codec="h265"), "codec"),
    (dict(n_frames=(30, 20)), "n_frames"),
    (dict(size=(321, 240)), "size"),
    (dict(videos_per_class=0, training_videos_per_class=0), "nothing"),
    (dict(videos_per_class=-1), "videos_per_class"),
])
def test_bad_options_are_rejected_up_front(tmp_path, kwargs, word):
    with pytest.raises(ConfigError, match=word) as info:
        make_demo_dataset(tmp_path, **kwargs)
    if word == "codec":
        assert all(name in str(info.value) for name in CODECS)
    assert not any(tmp_path.iterdir())


def test_bundled_model_recognises_fresh_videos(tmp_path):
    """The shipped checkpoint scores >= 0.9 video top-1 on videos of a seed never used in training."""
    torch = pytest.importorskip("torch")
    from e3d_stream.constants import MEAN_RGB_F32
    from e3d_stream.models import build_model
    from e3d_stream.video._clips import iter_video_clips

    torch.set_num_threads(1)
    meta = json.loads((ASSETS / "demo_model.json").read_text())
    pth = ASSETS / "demo_model.pth"
    assert hashlib.sha256(pth.read_bytes()).hexdigest() == meta["sha256"]
    assert pth.stat().st_size < 4_000_000
    assert meta["classes"] == list(DEMO_CLASSES)
    seed = 77
    assert seed not in meta["training"]["train_seeds"] and seed != meta["training"]["val_seed"]

    ckpt = torch.load(pth, map_location="cpu", weights_only=False)
    assert ckpt["arch"] == meta["arch"] and set(ckpt) >= {"epoch", "state_dict", "optimizer", "best_prec1"}
    assert all(k.startswith("module.") for k in ckpt["state_dict"])
    options = dict(meta["options"])
    model = build_model(meta["arch"], **options)
    model.load_state_dict({k[len("module."):]: v for k, v in ckpt["state_dict"].items()}, strict=True)
    model.eval()

    ds = make_demo_dataset(tmp_path, videos_per_class=3, training_videos_per_class=0, seed=seed)
    hits = 0
    with torch.no_grad():
        for video in ds.subset("validation"):
            clips = np.stack([np.asarray(c) for c in iter_video_clips(video.path, source="direct")])
            x = torch.from_numpy(clips.astype(np.float32) - MEAN_RGB_F32.reshape(1, 3, 1, 1, 1))
            score = torch.softmax(model(x), 1).numpy().mean(0, dtype=np.float32)
            hits += int(np.argmax(score)) == DEMO_CLASSES.index(video.label)
    assert hits / len(ds.subset("validation")) >= 0.9
