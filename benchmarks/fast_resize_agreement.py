"""Candidates for ``--resize fast``: speed per frame, distance to the exact bytes, and score agreement.

1. ``eval``: the bundled demo model (MobileNetV2-3D, 8 classes, trained on
   synthetic action videos) scores a freshly generated demo set twice through
   :func:`e3d_stream.evaluate`, ``resize="exact"`` and ``resize="fast"``: top-1
   agreement, accuracy of both, mean / max |score diff| (the figures this
   script always reported; top-level keys of the JSON).
2. ``candidates``: each way to resize + centre-crop a decoded 320x240 frame,
   on frames of that demo set:

   * ``exact_kernel``      the library's exact resize (compiled numba kernel; the reference bytes)
   * ``exact_pillow``      the same bytes through Pillow (what ``exact`` costs without numba)
   * ``opencv``            today's ``fast``: OpenCV integer-factor area + bilinear
   * ``torch_antialias``   torch's uint8 antialiased bilinear: ``F.interpolate(x, mode="bilinear",
                           antialias=True)`` on a (1, 3, H, W) channels-last uint8 tensor (what
                           torchvision v2 ``Resize`` runs), then the crop

   Per frame on one core (this process pinned to ``--cpu``, one torch / OpenCV
   thread; CPU time of the process, wall time beside; rounds with the order
   rotated, paired ratios to ``exact_kernel``),
   rgb24 frames already decoded; distance to the exact bytes (share of identical
   bytes, mean and max |diff|); and score agreement through the same demo model,
   clips built in-process the same way for every candidate (per-video top-1
   agreement with ``exact_kernel``, mean / max |score diff|, accuracy).
3. ``torch_in_worker``: what adopting the torch candidate would cost a decode
   worker, which today must not import torch: spawned processes that import a
   worker's modules (e3d_stream's clip producer, PyAV, OpenCV, the numba kernel
   loaded from its cache) with and without ``import torch`` (+ one interpolate
   call); seconds from ``start()`` to ready and resident memory (RSS, and USS:
   the pages only that process holds), paired per round.

    .venv/bin/python benchmarks/fast_resize_agreement.py              # ~2-3 min
    .venv/bin/python benchmarks/fast_resize_agreement.py --quick      # < 1 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_json  # noqa: E402

SIZE = 112


# --------------------------------------------------------------------------- candidates

def candidates() -> dict:
    """name -> frame (H, W, 3) uint8 -> (112, 112, 3) uint8."""
    import torch
    import torch.nn.functional as F

    from e3d_stream.video._transforms import RESIZERS, crop_origin, jit_kernel, scaled_size

    jit = jit_kernel()
    if jit is None:
        raise SystemExit("the compiled exact kernel is not available (numba missing or E3D_EXACT_KERNEL=pillow): "
                         "it is this comparison's reference")

    def torch_antialias(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W), channels-last memory
        w2, h2 = scaled_size(w, h)
        y = F.interpolate(x, size=(h2, w2), mode="bilinear", antialias=True, align_corners=False)
        x1, y1 = crop_origin(w2, h2)
        return y[0, :, y1:y1 + SIZE, x1:x1 + SIZE].permute(1, 2, 0).numpy()

    return {"exact_kernel": lambda rgb: jit.resize_crop(rgb),
            "exact_pillow": lambda rgb: RESIZERS["pillow"][0](rgb, SIZE),
            "opencv": lambda rgb: RESIZERS["fast"][0](rgb, SIZE),
            "torch_antialias": torch_antialias}


def distance(cands: dict, frames: list) -> dict:
    ref = [cands["exact_kernel"](f).copy() for f in frames]
    out = {}
    for name, fn in cands.items():
        same = total = 0
        abs_sum, worst = 0.0, 0
        for f, r in zip(frames, ref):
            d = np.abs(fn(f).astype(np.int16) - r)
            same += int((d == 0).sum())
            total += d.size
            abs_sum += float(d.sum())
            worst = max(worst, int(d.max()))
        out[name] = {"identical_byte_share": same / total, "mean_abs_diff": abs_sum / total, "max_abs_diff": worst}
    return out


def speed(cands: dict, frames: list, rounds: int) -> dict:
    """Per-frame CPU microseconds (wall beside), rounds with the order rotated; ratios paired with exact_kernel."""
    names = list(cands)
    for name in names:  # warm-up
        for f in frames:
            cands[name](f)
    runs = {n: [] for n in names}
    wall = {n: [] for n in names}
    for r in range(max(rounds, 1)):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = cands[name]
            w0, t0 = time.perf_counter(), time.process_time()
            for f in frames:
                fn(f)
            runs[name].append(1e6 * (time.process_time() - t0) / len(frames))
            wall[name].append(1e6 * (time.perf_counter() - w0) / len(frames))
    return {n: {"us_per_frame": statistics.median(v), "runs_us": v, "wall_us_per_frame": statistics.median(wall[n]),
                "paired_time_ratio_to_exact_kernel": statistics.median(
                    [a / b for a, b in zip(v, runs["exact_kernel"])])} for n, v in runs.items()}


def scores(cands: dict, videos: list, labels: dict, session) -> dict:
    """Per candidate: per-video mean softmax over the seed clip plan (clips built in-process, same for all)."""
    from e3d_stream.scoring import softmax
    from e3d_stream.video._decode import VideoFrames
    from e3d_stream.video._sampling import iter_windows
    from e3d_stream.video._transforms import normalize_clip

    out = {name: {} for name in cands}
    # a session takes float32 clips minus the mean, or raw uint8 clips when it subtracts the mean itself
    raw = getattr(session, "input_dtype", "float32") == "uint8"
    for v in videos:
        frames = list(VideoFrames(v))
        for name, fn in cands.items():
            pre = [fn(f).transpose(2, 0, 1).copy() for f in frames]
            clips = [np.stack(w, axis=1) for w in iter_windows(pre, policy="seed")]
            logits = np.concatenate([session.run(c[None] if raw else normalize_clip(c)) for c in clips])
            out[name][Path(v).stem] = softmax(logits).mean(axis=0)
    result = {}
    ref = out["exact_kernel"]
    for name, per_video in out.items():
        ids = sorted(per_video)
        a, b = np.array([ref[i] for i in ids]), np.array([per_video[i] for i in ids])
        d = np.abs(a - b)
        result[name] = {"videos": len(ids), "top1_agreement_with_exact": float(np.mean(a.argmax(1) == b.argmax(1))),
                        "mean_abs_score_diff": float(d.mean()), "max_abs_score_diff": float(d.max()),
                        "top1_accuracy": float(np.mean([per_video[i].argmax() == labels[i] for i in ids]))}
    return result


# --------------------------------------------------------------------------- torch in a decode worker

def _probe(with_torch: bool, queue) -> None:
    """A spawned stand-in for a decode worker: its imports, the kernel from cache, optionally torch."""
    t0 = time.perf_counter()
    import cv2  # noqa: F401  (resize="fast")

    from e3d_stream.video import _clips  # noqa: F401  (the producer: PyAV, Pillow, numpy)
    from e3d_stream.video._transforms import warm_up

    warm_up("exact")
    t1 = time.perf_counter()
    if with_torch:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(1)
        x = torch.zeros((1, 3, 240, 320), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        F.interpolate(x, size=(112, 149), mode="bilinear", antialias=True)
    t2 = time.perf_counter()
    import psutil

    mem = psutil.Process().memory_full_info()
    queue.put({"worker_imports_s": t1 - t0, "torch_s": t2 - t1, "rss_mb": mem.rss / 2**20,
               "uss_mb": mem.uss / 2**20})


def torch_in_worker(rounds: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # e3d_stream's default start method
    runs = {False: [], True: []}
    for r in range(max(rounds, 1)):
        for with_torch in ((False, True) if r % 2 == 0 else (True, False)):
            q = ctx.Queue()
            t0 = time.perf_counter()
            p = ctx.Process(target=_probe, args=(with_torch, q))
            p.start()
            row = q.get(timeout=300)
            row["start_to_ready_s"] = time.perf_counter() - t0
            p.join()
            runs[with_torch].append(row)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    keys = ("start_to_ready_s", "worker_imports_s", "torch_s", "rss_mb", "uss_mb")
    base = {k: med(runs[False], k) for k in keys}
    torch_ = {k: med(runs[True], k) for k in keys}
    paired = {k: statistics.median(b[k] - a[k] for a, b in zip(runs[False], runs[True]))
              for k in ("start_to_ready_s", "rss_mb", "uss_mb")}
    return {"rounds": rounds, "start_method": "spawn", "worker_without_torch": base, "worker_with_torch": torch_,
            "paired_extra_per_worker": {"seconds": paired["start_to_ready_s"], "rss_mb": paired["rss_mb"],
                                        "uss_mb": paired["uss_mb"]},
            "note": "worker = a spawned process importing cv2, e3d_stream.video._clips and loading the numba "
                    "kernel from its cache; 'with torch' adds import torch + one uint8 antialiased interpolate. "
                    "USS = pages only this process holds (shared library pages counted once system-wide)."}


# --------------------------------------------------------------------------- eval (exact vs fast, the old figures)

def eval_agreement(data, arch: dict, pth: Path, workers: int) -> dict:
    from e3d_stream import EvalConfig, evaluate

    reports, wall = {}, {}
    for mode in ("exact", "fast"):
        t0 = time.perf_counter()
        reports[mode] = evaluate(EvalConfig.create(
            video_path=str(data.video_root), annotation_path=str(data.annotation_path),
            model=str(pth), arch_options=arch, resize=mode, workers=workers, threads=1, batch_size=8))
        wall[mode] = time.perf_counter() - t0
    exact, fast = reports["exact"].results, reports["fast"].results
    agree = sum(exact[v].top1 == fast[v].top1 for v in exact)
    diffs = []
    for v in exact:
        a = dict(zip(exact[v].topk_indices, exact[v].topk_scores))
        b = dict(zip(fast[v].topk_indices, fast[v].topk_scores))
        diffs += [abs(a[c] - b[c]) for c in a if c in b]
    return {"videos": len(exact), "top1_agreement": agree / len(exact), "top1_agree_videos": agree,
            "top1_exact": reports["exact"].top1, "top1_fast": reports["fast"].top1,
            "mean_abs_score_diff": float(np.mean(diffs)), "max_abs_score_diff": float(np.max(diffs)),
            "wall_s": wall, "kernels": {m: r.preprocess.get("kernel") for m, r in reports.items()}}


def plot(doc: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(fig)
    names = list(doc["candidates"]["speed"])
    ax = fig.add_subplot(1, 2, 1)
    ax.barh(names, [doc["candidates"]["speed"][n]["us_per_frame"] for n in names])
    ax.set_xlabel("us per frame, one core (resize + crop)")
    ax.grid(alpha=0.3, axis="x")
    ax = fig.add_subplot(1, 2, 2)
    dist = doc["candidates"]["distance_to_exact_bytes"]
    ax.barh(names, [1 - dist[n]["identical_byte_share"] for n in names], color="tab:orange")
    for i, n in enumerate(names):
        ax.annotate(f"mean {dist[n]['mean_abs_diff']:.3f}, max {dist[n]['max_abs_diff']}", (0, i), fontsize=7,
                    va="center", xytext=(3, 0), textcoords="offset points")
    ax.set_xlabel("share of bytes differing from exact")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--videos_per_class", type=int, default=8)
    p.add_argument("--seed", type=int, default=11, help="demo-set seed (the model never saw it)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--frames-videos", type=int, default=4, help="videos whose frames are timed and compared")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per candidate (and torch-worker probes)")
    p.add_argument("--cpu", type=int, default=0, help="core for the per-frame timings (-1: do not pin)")
    p.add_argument("--quick", "--smoke", dest="quick", action="store_true", help="tiny inputs (figures are noise)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNG")
    p.add_argument("--workdir", type=Path, default=None, help="unused (the demo set is generated in a temp folder)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fast_resize_agreement.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.videos_per_class, args.frames_videos, args.rounds = 1, 1, 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    from e3d_stream.video._decode import VideoFrames
    from e3d_stream.video._demo_data import make_demo_dataset
    from e3d_stream.video._transforms import warm_up

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    warm_up("exact")
    assets = ROOT / "e3d_stream" / "assets"
    meta = json.loads((assets / "demo_model.json").read_text())
    arch = {"arch": meta["arch"], "width_mult": meta["options"]["width_mult"]}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_demo_dataset(tmp, videos_per_class=args.videos_per_class, training_videos_per_class=0,
                                 seed=args.seed, **({"n_frames": (25, 37)} if args.quick else {}))
        videos = [str(v.path) for v in data.videos]
        labels = {v.video_id: meta["classes"].index(v.label) for v in data.videos}
        doc = {"seed": args.seed, "model": "e3d_stream/assets/demo_model.pth"}
        doc.update(eval_agreement(data, arch, assets / "demo_model.pth", args.workers))
        print("eval exact vs fast:", json.dumps({k: doc[k] for k in ("videos", "top1_agreement", "top1_exact",
                                                                      "top1_fast", "mean_abs_score_diff",
                                                                      "max_abs_score_diff")}), flush=True)
        cands = candidates()
        frames = [f for v in videos[:: max(len(videos) // args.frames_videos, 1)][: args.frames_videos]
                  for f in VideoFrames(v)]
        dist = distance(cands, frames)
        if dist["exact_pillow"]["identical_byte_share"] != 1.0:
            raise SystemExit("the Pillow exact path differs from the kernel: the reference is not the reference")
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if args.cpu >= 0 and affinity is not None:
            os.sched_setaffinity(0, {args.cpu})
        try:
            spd = speed(cands, frames, args.rounds)
        finally:
            if args.cpu >= 0 and affinity is not None:
                os.sched_setaffinity(0, affinity)
        from e3d_stream.sessions import open_session

        with open_session(str(assets / "demo_model.pth"), threads=1, **arch) as session:
            agreement = scores(cands, videos, labels, session)
    doc["candidates"] = {"frames": len(frames), "frame_size": list(frames[0].shape[1::-1]), "one_core": args.cpu >= 0,
                         "speed": spd, "distance_to_exact_bytes": dist, "score_agreement": agreement}
    doc["torch_in_worker"] = torch_in_worker(2 if args.quick else args.rounds)
    doc["versions"] = {"torch": torch.__version__, "opencv": cv2.__version__}
    for name in cands:
        s, d, a = spd[name], dist[name], agreement[name]
        print(f"{name:16s} {s['us_per_frame']:7.1f} us/frame (x{s['paired_time_ratio_to_exact_kernel']:.2f} "
              f"exact kernel)  identical bytes {100 * d['identical_byte_share']:.3f}%  mean|d| "
              f"{d['mean_abs_diff']:.4f}  max|d| {d['max_abs_diff']}  top1 agree {a['top1_agreement_with_exact']:.3f}"
              f"  max score diff {a['max_abs_score_diff']:.2e}")
    print("torch in a spawned worker:", json.dumps(doc["torch_in_worker"]["paired_extra_per_worker"]))
    out = write_json(Path(args.out), doc)   # with the environment, like the other benchmarks
    if args.plot:
        plot(doc, out.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
