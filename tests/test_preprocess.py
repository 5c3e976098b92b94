"""``e3d-stream preprocess``: seed-layout bins equal to the reference's, from rawframes and from videos."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from media import make_annotation, make_numbered_video, read_frame_number

from e3d_stream.cli import main
from e3d_stream.seed._dump import dump_bins


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_preprocess(fixtures_dir: Path, tmp: Path, root: str, *extra: str) -> tuple[Path, Path]:
    out, info = tmp / "bins", tmp / "ucf101.info"
    rc = main(["preprocess", "--video_path", str(fixtures_dir / root), "--annotation_path",
               str(fixtures_dir / "annotation.json"), "--output_path", str(out), "--info_path", str(info),
               "--no_progress", *extra])
    assert rc == 0
    return out, info


def test_rawframes_bs1_bins_and_info_equal_the_reference(fixtures_dir, ref_clips, tmp_path):
    out, info = run_preprocess(fixtures_dir, tmp_path, "rawframes", "--inference_batch_size", "1")
    assert info.read_bytes() == (fixtures_dir / "reference" / "ucf101_bs1.info").read_bytes()
    clips = ref_clips["clips"]
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(f"{k}.bin" for k in range(len(clips)))
    for k, clip in enumerate(clips):
        assert sha(out / f"{k}.bin") == clip["sha256"]["jpeg"], f"bin {k}"


def test_rawframes_bs4_drop_equals_the_reference_bs4(fixtures_dir, ref_clips, tmp_path):
    out, info = run_preprocess(fixtures_dir, tmp_path, "rawframes", "--inference_batch_size", "4",
                               "--tail", "drop", "--workers", "1")
    assert info.read_bytes() == (fixtures_dir / "reference" / "ucf101_bs4.info").read_bytes()
    bins = ref_clips["bs4"]["jpeg"]
    assert len(list(out.glob("*.bin"))) == len(bins)
    for b in bins:
        assert sha(out / f"{b['bin']}.bin") == b["sha256"]


def test_rawframes_bs4_pad_keeps_the_tail(fixtures_dir, ref_clips, tmp_path):
    out, info = run_preprocess(fixtures_dir, tmp_path, "rawframes", "--inference_batch_size", "4")
    lines = info.read_text().splitlines()
    assert len(lines) == 5 and lines[-1].split() == [c["video_id"] for c in ref_clips["clips"][16:]]
    last = np.fromfile(out / "4.bin", np.float32).reshape(4, -1)
    for row, k in zip(last, (16, 17, 18)):
        assert hashlib.sha256(row.tobytes()).hexdigest() == ref_clips["clips"][k]["sha256"]["jpeg"]
    assert np.array_equal(last[3], last[2])  # padded with a copy of the last real clip


def test_direct_decode_bins_equal_png_bitexact(fixtures_dir, ref_clips, tmp_path):
    out, info = run_preprocess(fixtures_dir, tmp_path, "videos", "--inference_batch_size", "1", "--workers", "2")
    assert info.read_bytes() == (fixtures_dir / "reference" / "ucf101_bs1.info").read_bytes()
    for k, clip in enumerate(ref_clips["clips"]):
        assert sha(out / f"{k}.bin") == clip["sha256"]["png_bitexact"], f"bin {k}"
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["source"] == "direct" and report["failures"] == []


def _dataset(tmp: Path) -> tuple[Path, Path, list[tuple[str, int]]]:
    """Numbered videos (frame i shows i) plus a missing, an empty and a non-video entry."""
    root = tmp / "videos"
    lengths = [("v_A_g01_c01", 40), ("v_B_g01_c01", 17), ("v_A_g02_c01", 33), ("v_B_g02_c01", 7)]
    for vid, n in lengths:
        label = vid.split("_")[1]
        make_numbered_video(root / label / f"{vid}.avi", n, codec="ffv1", seed=n)
    (root / "A" / "v_A_g03_c01.avi").write_bytes(b"")
    (root / "B" / "v_B_g03_c01.avi").write_bytes(b"this is not a video at all" * 100)
    entries = [(vid, vid.split("_")[1], "validation") for vid, _ in lengths]
    entries += [("v_A_g03_c01", "A", "validation"), ("v_B_g03_c01", "B", "validation"),
                ("v_A_g09_c09", "A", "validation"), ("v_B_g04_c01", "B", "training")]
    ann = make_annotation(tmp / "ann.json", ["A", "B"], entries)
    return root, ann, lengths


def test_bins_follow_dataset_order_with_frame_numbers_for_1_and_2_workers(tmp_path):
    root, ann, lengths = _dataset(tmp_path)
    reports = {w: dump_bins(root, ann, tmp_path / f"bins{w}", tmp_path / f"info{w}", batch_size=1,
                            workers=w, queue_depth=3) for w in (1, 2)}
    workers = 2
    report = reports[2]
    expected = []
    for vid, n in lengths:
        for start in range(1, n, 16):
            window = list(range(start, min(n, start + 15) + 1))
            frames = [window[i % len(window)] for i in range(16)]
            expected.append((vid, [f - 1 for f in frames]))   # 1-based frame f shows number f-1
    lines = (tmp_path / f"info{workers}").read_text().splitlines()
    assert [ln.strip() for ln in lines] == [vid for vid, _ in expected]
    mean = np.asarray([114.7748, 107.7354, 99.4750], np.float32).reshape(3, 1, 1, 1)
    for k, (vid, numbers) in enumerate(expected):
        clip = np.fromfile(tmp_path / f"bins{workers}" / f"{k}.bin", np.float32).reshape(3, 16, 112, 112)
        pixels = np.clip(np.rint(clip + mean), 0, 255).astype(np.uint8)
        assert [read_frame_number(pixels[:, t]) for t in range(16)] == numbers, (k, vid)
    reasons = {f.video_id: f.reason for f in report.failures}
    assert reasons == {"v_A_g03_c01": "empty", "v_B_g03_c01": "not_a_video", "v_A_g09_c09": "missing"}
    assert (tmp_path / "info1").read_bytes() == (tmp_path / "info2").read_bytes()
    for k in range(len(expected)):
        assert sha(tmp_path / "bins1" / f"{k}.bin") == sha(tmp_path / "bins2" / f"{k}.bin")
    assert reports[1].failures == reports[2].failures
