"""Per-frame time of the exact resize + centre crop: Pillow vs the numba kernel, on one core.

Frames are 320x240 RGB (UCF-101's size): random noise, and frames decoded with
PyAV from a synthetic MPEG-4 clip (textured background, moving shapes, codec
artefacts: what real decoded frames look like to the resampler). Every method's
output is first checked byte for byte against the reference's literal Pillow
sequence on every frame; then each method runs over all frames ``--repeats``
times (after a warm-up pass) and the median per-frame time is reported.

    taskset -c 0 .venv/bin/python benchmarks/resample_jit_speed.py [--frames 64] [--repeats 15]

Methods:
  pillow_naive   Image.fromarray -> resize((149, 112), BILINEAR) -> crop -> np.asarray (the reference)
  pillow_split   the project's ``_exact`` (horizontal pass, crop columns, vertical pass), when importable
  jit_hwc        ``_resample_jit.resize_crop`` -> (112, 112, 3)
  jit_into_clip  ``_resample_jit.resize_crop_into(frame, clip[:, t])`` into a (3, T, 112, 112) clip buffer
plus the kernel's two compiled steps timed apart (frame block transpose; passes),
and the JIT warm-up time of a fresh process with an empty and then a filled
numba cache (``--no-warmup-timing`` skips those two subprocesses, ~10 s).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread (set before numpy / numba are imported)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "resample_jit_speed.json"
MODULE = ROOT / "e3d_stream" / "video" / "_resample_jit.py"
SIZE = 112


def load_kernel():
    """``e3d_stream.video._resample_jit``, or the file itself while the package lacks ``video/__init__``."""
    try:
        from e3d_stream.video import _resample_jit
        return _resample_jit
    except ImportError as exc:
        if "numba" in str(exc):
            raise
        spec = importlib.util.spec_from_file_location("e3d_stream_video_resample_jit", MODULE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def load_split():
    """The project's exact split resize (``_exact``), from the old or the restructured location."""
    for name in ("e3d_stream.transforms", "e3d_stream.video._transforms"):
        try:
            module = __import__(name, fromlist=["_exact"])
            return module._exact, name
        except (ImportError, AttributeError):
            continue
    return None, None


def pillow_naive(frame: np.ndarray) -> np.ndarray:
    """The reference's literal sequence: full resize, then the centre crop."""
    img = Image.fromarray(frame)
    w, h = img.size
    if w > h:
        target = (int(SIZE * w / h), SIZE)
    else:
        target = (SIZE, int(SIZE * h / w))
    if min(w, h) != SIZE:
        img = img.resize(target, Image.Resampling.BILINEAR)
        w, h = target
    x1, y1 = int(round((w - SIZE) / 2.0)), int(round((h - SIZE) / 2.0))
    return np.asarray(img.crop((x1, y1, x1 + SIZE, y1 + SIZE)))


# --------------------------------------------------------------------------- frames


def noise_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(n)]


def decoded_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` frames decoded by PyAV from a synthetic MPEG-4 clip (320x240, 25 fps)."""
    import av

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    texture = rng.normal(0, 12, (240, 320, 3)).astype(np.float32)
    base = np.stack([90 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0), 110 + 0.3 * yy, 140 - 0.2 * xx], -1) + texture
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"qscale": "4"}
        for i in range(n):
            img = base.copy()
            cx, cy = 40 + 6 * i % 240, 120 + 40 * np.sin(i / 5.0)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (230, 60, 40)
            img[int(60 + i) % 200:int(60 + i) % 200 + 30, 200:260] = (30, 200, 90)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buf.seek(0)
    with av.open(buf, mode="r") as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:n]


# --------------------------------------------------------------------------- timing


def per_frame_ms(fn, frames, repeats: int) -> dict:
    """Median (and min) over ``repeats`` passes over all frames, after one untimed pass."""
    for i, f in enumerate(frames):
        fn(f, i)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            fn(f, i)
        runs.append((time.perf_counter() - t0) / len(frames) * 1e3)
    return {"median_ms": statistics.median(runs), "min_ms": min(runs), "runs_ms": runs}


def warmup_subprocess(cache_dir: str) -> float:
    """Seconds for ``import`` + ``warm_up()`` in a fresh interpreter using ``cache_dir`` as numba's cache."""
    code = ("import time, importlib.util, sys; t0 = time.perf_counter()\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "try:\n    from e3d_stream.video import _resample_jit as rj\n"
            "except ImportError:\n"
            f"    spec = importlib.util.spec_from_file_location('rj', {str(MODULE)!r})\n"
            "    rj = importlib.util.module_from_spec(spec); spec.loader.exec_module(rj)\n"
            "rj.warm_up(); print(time.perf_counter() - t0)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return float(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=int, default=64, help="distinct frames per frame set (timed in rotation)")
    p.add_argument("--repeats", type=int, default=15, help="timed passes over the frames (median reported)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="result file")
    p.add_argument("--no-warmup-timing", dest="warmup_timing", action="store_false",
                   help="skip timing the JIT warm-up in fresh processes (cold and cached numba cache)")
    args = p.parse_args(argv)

    rj = load_kernel()
    if not rj.available():
        print("numba's JIT is disabled (NUMBA_DISABLE_JIT): nothing to measure", file=sys.stderr)
        return 2
    warm_s = rj.warm_up(((240, 320),))
    split, split_from = load_split()

    sets = {"noise": noise_frames(args.frames)}
    try:
        sets["decoded"] = decoded_frames(args.frames)
    except Exception as exc:  # PyAV missing or without the encoder: keep the noise set
        print(f"decoded frames skipped: {exc}", file=sys.stderr)

    clip = np.empty((3, 16, SIZE, SIZE), np.uint8)
    methods = {
        "pillow_naive": lambda f, i: pillow_naive(f),
        "jit_hwc": lambda f, i: rj.resize_crop(f),
        "jit_into_clip": lambda f, i: rj.resize_crop_into(f, clip[:, i % 16]),
    }
    if split is not None:
        methods["pillow_split"] = lambda f, i: split(f, SIZE)

    plan = rj._plan(240, 320, SIZE)
    htab, vtab = plan[1], plan[2]
    c0 = int(htab[0, 0]) * 3
    nb = (int(htab[-1, 0]) + int(htab[-1, 1])) * 3 - c0
    ylo, yhi = int(vtab[0, 0]), int(vtab[-1, 0]) + int(vtab[-1, 1])
    tin = np.empty((nb, (yhi - ylo + 7) // 8 * 8), np.uint8)
    planes = np.empty((3, SIZE, SIZE), np.uint8)
    steps = {
        "step1_touch_and_transpose": lambda f, i: rj._hv_start(f.reshape(240, 960), ylo, yhi, c0, tin),
        "step2_passes_into_planes": lambda f, i: rj._hv_finish(tin, c0, ylo, htab, vtab, planes[0], planes[1],
                                                               planes[2]),
    }

    results: dict[str, dict] = {}
    for set_name, frames in sets.items():
        checks: dict[str, bool] = {}
        for f in frames:
            want = pillow_naive(f)
            checks.setdefault("jit_hwc", True)
            checks["jit_hwc"] &= bool(np.array_equal(rj.resize_crop(f), want))
            rj.resize_crop_into(f, clip[:, 0])
            checks.setdefault("jit_into_clip", True)
            checks["jit_into_clip"] &= bool(np.array_equal(clip[:, 0].transpose(1, 2, 0), want))
            if split is not None:
                checks.setdefault("pillow_split", True)
                checks["pillow_split"] &= bool(np.array_equal(split(f, SIZE), want))
        if not all(checks.values()):
            print(f"NOT BIT-EXACT on {set_name}: {checks}", file=sys.stderr)
            return 1
        timings = {name: per_frame_ms(fn, frames, args.repeats) for name, fn in methods.items()}
        timings.update({name: per_frame_ms(fn, frames, args.repeats) for name, fn in steps.items()})
        naive = timings["pillow_naive"]["median_ms"]
        for t in timings.values():
            t["speedup_vs_pillow_naive"] = naive / t["median_ms"]
        results[set_name] = {"frames": len(frames), "bit_exact_vs_pillow_naive": checks, "timings": timings}

    warmup = {"this_process_s": warm_s}
    if args.warmup_timing:
        with tempfile.TemporaryDirectory() as cache:
            warmup["fresh_process_empty_cache_s"] = warmup_subprocess(cache)
            warmup["fresh_process_filled_cache_s"] = warmup_subprocess(cache)

    import llvmlite  # type: ignore[import-untyped]
    import llvmlite.binding  # type: ignore[import-untyped]
    import numba
    import PIL
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    doc = {
        "environment": {
            "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.processor(),
            "llvm_host_cpu": llvmlite.binding.get_host_cpu_name(),
            "cpus": os.cpu_count(), "affinity": affinity, "loadavg": os.getloadavg(),
            "numpy": np.__version__, "pillow": PIL.__version__, "numba": numba.__version__,
            "llvmlite": llvmlite.__version__, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
        "kernel": rj.KERNEL_NAME, "kernel_numba_version": rj.NUMBA_VERSION, "frame_size": [320, 240],
        "output_size": SIZE, "repeats": args.repeats, "pillow_split_from": split_from,
        "jit_warmup": warmup, "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(args.json.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, args.json)

    print(f"{rj.KERNEL_NAME} (numba {rj.NUMBA_VERSION}, Pillow {PIL.__version__}); 320x240 -> 112x112; "
          f"median of {args.repeats} passes; CPU affinity {affinity}")
    order = ["pillow_naive", "pillow_split", "jit_hwc", "jit_into_clip", "step1_touch_and_transpose",
             "step2_passes_into_planes"]
    header = f"{'method':28s}" + "".join(f"{s + ' ms/frame':>20s}{'x naive':>9s}" for s in results)
    print(header)
    for name in order:
        if all(name in r["timings"] for r in results.values()):
            row = f"{name:28s}"
            for r in results.values():
                t = r["timings"][name]
                row += f"{t['median_ms']:20.4f}{t['speedup_vs_pillow_naive']:9.2f}"
            print(row)
    print("bit-exact vs Pillow on every frame: " + ", ".join(f"{s}: yes" for s in results))
    print("JIT warm-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in warmup.items()))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
