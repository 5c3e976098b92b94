"""Shared helpers of the benchmark scripts: arguments, timing, JSON, synthetic videos, peak RSS.

Benchmarks are scripts, not tests (DESIGN 4.11): each one checks that the
configurations it compares agree on their outputs, then times them with a
warm-up, repeats and the median, and writes JSON (and a PNG where a plot
helps) under ``benchmarks/results/``. This machine is small and shared, so
figures are quoted as ratios measured within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: UCF-101 has 101 classes; the benchmark annotation lists as many labels so the
#: model and the scores have the reference's shape.
N_CLASSES = 101


# --------------------------------------------------------------------------- arguments

def base_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/<name>.json)")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("E3D_BENCH_DIR", "/tmp/e3d_bench")),
                   help="generated videos, models and scratch files (reused between runs)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per point (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated videos")
    p.add_argument("--quick", "--smoke", dest="quick", action="store_true",
                   help="tiny inputs and grid, seconds not minutes (keeps the script from rotting; figures are noise)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNG")
    return p


# --------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class Timing:
    """Seconds of the timed repetitions of one call (the warm-ups are not in ``runs``)."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def to_dict(self) -> dict:
        return {"median_s": self.median, "min_s": min(self.runs), "runs_s": list(self.runs)}


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> tuple[Timing, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; return the timing and the last result."""
    result = None
    for _ in range(max(warmup, 0)):
        result = fn()
    runs = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return Timing(tuple(runs)), result


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- output

def _loadavg() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


#: the load average when the benchmark started (this module is imported first thing)
_LOAD_AT_START = _loadavg()


def environment() -> dict:
    """What decides the numbers: machine, load (when the benchmark started and now), library versions."""
    import av
    import numpy as np
    import PIL

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_at_start": _LOAD_AT_START, "loadavg_at_end": _loadavg(),
            "numpy": np.__version__, "av": av.__version__,
            "ffmpeg_in_pyav": getattr(av, "ffmpeg_version_info", "?"), "pillow": PIL.__version__,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` (plus the environment) as indented JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"environment": environment(), **payload}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def default_out(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else benchmarks/results/<name>.json; a --quick run writes to the workdir instead
    (its figures are noise and must not replace a real result)."""
    if args.out is not None:
        return args.out
    return Path(args.workdir) / f"{name}_quick.json" if args.quick else RESULTS / f"{name}.json"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --------------------------------------------------------------------------- synthetic videos

@dataclass(frozen=True)
class BenchData:
    """A generated UCF-like video set: pass ``video_root`` and ``annotation_path`` to eval."""

    root: Path
    video_root: Path
    annotation_path: Path
    videos: tuple  # e3d_stream.video._demo_data.DemoVideo, in annotation order
    n_frames: int


def ucf_like(workdir: Path, n_videos: int, *, seed: int = 0, seconds: tuple[float, float] = (4.0, 7.0),
             size: tuple[int, int] = (320, 240)) -> BenchData:
    """``n_videos`` UCF-101-like validation videos: 320x240 MPEG-4 AVI, 25 fps, 4-7 s, textured moving content.

    Built on :func:`e3d_stream.video._demo_data.make_demo_dataset` (shapes moving on a
    noisy textured background). The annotation lists the first ``n_videos``
    validation videos, round-robin over the demo classes, and 101 labels (the
    demo classes first, then placeholders) so models have UCF-101's output size.
    Cached under ``workdir`` by its parameters.
    """
    from e3d_stream.video._demo_data import DEMO_CLASSES, make_demo_dataset

    fps = 25
    frames = (int(seconds[0] * fps), int(seconds[1] * fps))
    per_class = math.ceil(n_videos / len(DEMO_CLASSES))
    name = f"ucf_like_s{seed}_{per_class}x{len(DEMO_CLASSES)}_{frames[0]}-{frames[1]}_{size[0]}x{size[1]}"
    root = Path(workdir) / name
    marker = root / "complete.json"
    ds = None
    if not marker.exists():
        if root.exists():
            shutil.rmtree(root)
        ds = make_demo_dataset(root, videos_per_class=per_class, training_videos_per_class=0, seed=seed,
                               n_frames=frames, size=size)
        marker.write_text(json.dumps([[str(v.path), v.video_id, v.label, v.n_frames] for v in ds.videos]))
    from e3d_stream.video._demo_data import DemoVideo

    listed = [DemoVideo(vid, label, "validation", Path(p), n) for p, vid, label, n in json.loads(marker.read_text())]
    by_class = [[v for v in listed if v.label == c] for c in DEMO_CLASSES]
    chosen = [v for row in zip(*by_class) for v in row][:n_videos]  # round-robin over classes
    labels = list(DEMO_CLASSES) + [f"placeholder_{i:03d}" for i in range(N_CLASSES - len(DEMO_CLASSES))]
    annotation = {"labels": labels,
                  "database": {v.video_id: {"subset": "validation", "annotations": {"label": v.label}}
                               for v in chosen}}
    ann_path = root / f"ucf101_bench_{n_videos}.json"
    ann_path.write_text(json.dumps(annotation))
    return BenchData(root, root / "videos", ann_path, tuple(chosen), sum(v.n_frames for v in chosen))


# --------------------------------------------------------------------------- models

def mobilenet_onnx(workdir: Path, *, num_classes: int = N_CLASSES, seed: int = 0,
                   calibration_videos: Sequence[Path] = ()) -> Path:
    """The seed's MobileNetV2-3D (width 1.0) with random weights, checkpointed and exported to ONNX (cached).

    Random weights with BatchNorm's default running statistics give logits that
    hardly depend on the input (their spread between clips is ~1e-8), which
    would make any score comparison vacuous. With ``calibration_videos`` the
    BatchNorm statistics are first re-estimated on those videos' clips (one
    cumulative pass in train mode, no weight update): same cost per clip, but
    the outputs respond to the pixels like a trained network's do.
    """
    tag = f"mobilenetv2_{num_classes}_s{seed}" + (f"_bn{len(calibration_videos)}" if calibration_videos else "")
    out = Path(workdir) / f"{tag}.onnx"
    if out.exists():
        return out
    import torch

    from e3d_stream.models import build_model
    from e3d_stream.models.checkpoint import save_checkpoint
    from e3d_stream.seed._export import export_onnx

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = build_model("mobilenetv2", num_classes=num_classes)
    if calibration_videos:
        import numpy as np

        from e3d_stream.video._clips import iter_video_clips
        from e3d_stream.video._transforms import normalize_clip

        clips = np.concatenate([normalize_clip(c) for v in calibration_videos for c in iter_video_clips(str(v))])
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for i in range(0, len(clips), 8):
                model(torch.from_numpy(clips[i:i + 8]))
    model.eval()
    ckpt = save_checkpoint(model, Path(workdir) / f"{tag}.pth", arch="mobilenetv2")
    export_onnx(ckpt, out)
    return out


def bench_model(workdir: Path, *, seed: int = 0, quick: bool = False) -> Path:
    """The benchmarks' ONNX model: :func:`mobilenet_onnx` calibrated on 2 videos no benchmark scores."""
    calib = ucf_like(workdir, 2, seed=seed + 1, seconds=(1.0, 1.5) if quick else (4.0, 7.0))
    return mobilenet_onnx(workdir, seed=seed, calibration_videos=[v.path for v in calib.videos])


# --------------------------------------------------------------------------- child processes

@dataclass(frozen=True)
class ChildRun:
    """A finished child process: exit code, wall time and memory."""

    returncode: int
    wall_s: float
    max_single_rss_mb: float   # kernel ru_maxrss of the child (max over it and its waited-for descendants)
    peak_tree_rss_mb: float    # sampled (20 Hz) sum of RSS over the child's process tree
    stdout: str
    stderr: str

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("stdout")
        d["stderr_tail"] = d.pop("stderr")[-2000:]
        return d


def run_child(argv: Sequence[str], *, env: dict | None = None, cwd: Path | None = None,
              timeout: float = 3600.0) -> ChildRun:
    """Run ``argv``; measure wall time, peak RSS (kernel maxrss and sampled whole-tree sum).

    ``max_single_rss_mb`` comes from ``wait4`` (exact, but the largest single
    process, not a sum); ``peak_tree_rss_mb`` sums the tree's RSS every 50 ms
    with psutil (counts shared pages once per process, misses spikes shorter
    than the sampling period).
    """
    import psutil

    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("PYTHONPATH", str(ROOT))
    out_f, err_f = _tmpfile(), _tmpfile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=out_f, stderr=err_f, env=full_env, cwd=cwd)
    peak = [0]
    done = threading.Event()

    def sample():
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            peak[0] = max(peak[0], total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    stdout, stderr = out_f.read(), err_f.read()
    out_f.close()
    err_f.close()
    return ChildRun(proc.returncode, wall, usage.ru_maxrss / 1024.0, peak[0] / 2**20, stdout, stderr)


def _tmpfile():
    import tempfile

    return tempfile.TemporaryFile("w+")


def python_argv(*args: str) -> list[str]:
    """argv running this interpreter (the project's venv) with ``args``."""
    return [sys.executable, *args]


def tree_bytes(*paths: Path) -> int:
    """Bytes of all regular files under ``paths`` (missing paths count 0)."""
    total = 0
    for base in paths:
        base = Path(base)
        if base.is_file():
            total += base.stat().st_size
            continue
        for dirpath, _, files in os.walk(base):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
    return total


def file_count(*paths: Path) -> int:
    return sum(len(files) for base in paths for _, _, files in os.walk(base))
