"""Throughput of ``evaluate`` against queue depth, decode workers and batch size.

Per point (one :func:`e3d_stream.evaluate` call, median of ``--repeats``):
end-to-end clips/s, device busy fraction (time inside the session / wall),
time the consumer waited on an empty queue (decode-bound) and producers on a
full one (device-bound), peak queue fill. Backends:

* ``simulated`` at fixed per-clip latencies (``--ms``: the seed's 310P 0.77 ms,
  decode-bound here, and a slower device so the device bounds the run);
* ``onnxruntime`` on CPU (MobileNetV2-3D, random weights, 1 intra-op thread),
  on a smaller grid (``--ort-*``) because it is slow on two cores.

The target "end-to-end >= 0.95 x min(device rate, decode capacity)" is checked
per simulated point: device rate = 1000 / ms_per_clip, decode capacity = a run
with ``ms_per_clip=0`` at the same workers, batch and depth, run just before the point. Also measured:
peak RSS of an eval subprocess for 10 vs 100 videos, and eval end-to-end
against ONNX Runtime's compute-only clips/s (``session.run`` on a ready batch,
same threads and batch). Every point must give the same per-video top-1 as the
first one (order and batching do not change scores) before it counts.

    python benchmarks/queue_depth.py              # ~6-10 min on 2 busy cores (--videos, grid flags to scale)
    python benchmarks/queue_depth.py --quick      # seconds
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    base_parser,
    bench_model,
    default_out,
    median_of,
    python_argv,
    run_child,
    ucf_like,
    verdict,
    write_json,
)

from e3d_stream import evaluate
from e3d_stream.run._config import EvalConfig


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def run_point(cfg: EvalConfig, repeats: int, reference: dict | None) -> tuple[dict, dict]:
    """Median figures of ``repeats`` evaluations; per-video top-1 must match ``reference``."""
    rows, top1 = [], None
    for _ in range(repeats):
        rep = evaluate(cfg)
        top1 = {vid: r.top1 for vid, r in rep.results.items()}
        if reference is not None and top1 != reference:
            raise SystemExit(f"scores changed with {cfg}: refusing to report timings")
        t, tp = rep.timings, rep.throughput
        rows.append({"clips": rep.n_clips, "wall_s": t["wall"], "end_to_end_clips_per_s": tp["end_to_end_clips_per_s"],
                     "device_busy_fraction": tp["device_busy_fraction"],
                     "compute_clips_per_s": tp["compute_clips_per_s"],
                     "consumer_waited_on_empty_queue_s": t["consumer_waited_for_batches"],
                     "producers_waited_on_full_queue_s": t["producers_waited_for_rows"],
                     "decode_worker_busy_s": t["decode_worker_busy"], "peak_queue_fill": tp["peak_ring_buffers_used"]})
    med = {k: median_of([r[k] for r in rows]) for k in rows[0]}
    return med, top1


def grid(base: EvalConfig, depths, workers, batches, repeats, label, reference=None, extra=None):
    points = []
    for w, b, d in itertools.product(workers, batches, depths):
        cfg = base.replace(workers=w, batch_size=b, queue_depth=d)
        med, top1 = run_point(cfg, repeats, reference)
        reference = reference or top1
        point = {"backend": label, "workers": w, "batch": b, "depth": d, **(extra or {}), **med}
        points.append(point)
        print(f"{label:22s} w={w} b={b:2d} d={d:2d}  {med['end_to_end_clips_per_s']:7.1f} clips/s  "
              f"busy {med['device_busy_fraction']:.2f}  empty-wait {med['consumer_waited_on_empty_queue_s']:.2f}s  "
              f"full-wait {med['producers_waited_on_full_queue_s']:.2f}s", flush=True)
    return points, reference


def ort_compute_only(model: Path, batch: int, threads: int, repeats: int) -> float:
    """Clips/s of ``session.run`` alone on a ready float32 batch."""
    from e3d_stream.sessions import open_session

    x = np.random.default_rng(0).standard_normal((batch, 3, 16, 112, 112)).astype(np.float32)
    with open_session(str(model), threads=threads) as sess:
        sess.run(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(x)
            times.append(time.perf_counter() - t0)
    return batch / median_of(times)


def rss_check(args, n_small: int, n_large: int) -> dict:
    """Peak RSS of ``e3d-stream eval`` (simulated 310P) in a subprocess for two video counts."""
    out = {}
    for n in (n_small, n_large):
        data = ucf_like(args.workdir, n, seed=args.seed, seconds=(1.0, 2.0) if args.quick else (4.0, 7.0))
        run = run_child(python_argv("-m", "e3d_stream", "eval", "--video_path", str(data.video_root),
                                    "--annotation_path", str(data.annotation_path), "--backend", "simulated",
                                    "--workers", "2", "--batch_size", "16", "--queue_depth", "8", "--no_progress"))
        if run.returncode != 0:
            raise SystemExit(f"eval failed:\n{run.stderr[-2000:]}")
        out[n] = run.to_dict()
        print(f"rss: {n:4d} videos  eval process max {run.max_single_rss_mb:.0f} MB  "
              f"tree peak (sampled sum) {run.peak_tree_rss_mb:.0f} MB  wall {run.wall_s:.1f}s", flush=True)
    a, b = out[n_small], out[n_large]
    grow_single = b["max_single_rss_mb"] / a["max_single_rss_mb"] - 1
    grow_tree = b["peak_tree_rss_mb"] / a["peak_tree_rss_mb"] - 1
    return {"runs": out, "growth_eval_process": grow_single, "growth_process_tree": grow_tree,
            "verdict": verdict(abs(grow_single) <= 0.10 and abs(grow_tree) <= 0.10),
            "note": "eval process = kernel ru_maxrss of the eval process (the largest of its tree); "
                    "process tree = sampled sum of RSS over eval + decode workers"}


def plot(points, path: Path) -> None:
    """Top row: end-to-end clips/s against depth per backend. Bottom: e2e / min(device, decode capacity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = sorted({p["backend"] for p in points})
    fig, axes = plt.subplots(2, len(backends), figsize=(5 * len(backends), 7.5), squeeze=False)
    for col, backend in enumerate(backends):
        sel = [p for p in points if p["backend"] == backend]
        for w, b in sorted({(p["workers"], p["batch"]) for p in sel}):
            line = [p for p in sel if p["workers"] == w and p["batch"] == b]
            depths = [p["depth"] for p in line]
            axes[0][col].plot(depths, [p["end_to_end_clips_per_s"] for p in line], marker="o",
                              label=f"workers {w}, batch {b}")
            key = "ratio_to_bound" if "ratio_to_bound" in line[0] else "ratio_to_compute_only"
            if key in line[0]:
                axes[1][col].plot(depths, [p[key] for p in line], marker="o", label=f"workers {w}, batch {b}")
        axes[0][col].set_title(backend)
        axes[0][col].set_ylabel("end-to-end clips/s")
        bound = "/ ORT compute-only" if backend.startswith("onnx") else "/ min(device rate, decode capacity)"
        axes[1][col].set_ylabel(f"end-to-end {bound}", fontsize=8)
        axes[1][col].axhline(0.8 if backend.startswith("onnx") else 0.95, color="k", lw=0.8, ls="--")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("queue depth (clip slots)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--depths", type=_ints, default=(1, 2, 4, 8, 16, 32))
    p.add_argument("--workers", type=_ints, default=(1, 2))
    p.add_argument("--batches", type=_ints, default=(1, 4, 16))
    p.add_argument("--ms", type=_floats, default=(0.77, 25.0), help="simulated ms per clip (one grid each)")
    p.add_argument("--ort-depths", type=_ints, default=(1, 4, 16))
    p.add_argument("--ort-workers", type=_ints, default=(1, 2))
    p.add_argument("--ort-batches", type=_ints, default=(4,))
    p.add_argument("--ort-videos", type=int, default=4)
    p.add_argument("--ort-threads", type=int, default=1)
    p.add_argument("--no-ort", dest="ort", action="store_false")
    p.add_argument("--rss-videos", type=_ints, default=(10, 100), help="video counts of the RSS check")
    p.add_argument("--no-rss", dest="rss", action="store_false")
    p.add_argument("--start-method", default="fork", choices=("spawn", "forkserver", "fork"),
                   help="fork keeps worker start-up (~1 s with spawn) out of short runs")
    p.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of an earlier JSON result")
    p.set_defaults(repeats=1)
    args = p.parse_args(argv)
    if args.replot is not None:
        plot(json.loads(args.replot.read_text())["points"], args.replot.with_suffix(".png"))
        return 0
    if args.quick:
        args.videos, args.depths, args.workers, args.batches, args.ms = 1, (1, 8), (1,), (4,), (0.77,)
        args.ort_depths, args.ort_workers, args.ort_batches, args.ort_videos = (4,), (1,), (2,), 1
        args.rss_videos = (1, 2)
    seconds = (1.0, 1.5) if args.quick else (4.0, 7.0)
    data = ucf_like(args.workdir, args.videos, seed=args.seed, seconds=seconds)
    base = EvalConfig.create(video_path=str(data.video_root), annotation_path=str(data.annotation_path),
                             backend="simulated", start_method=args.start_method)
    points, targets, capacity = [], [], {}
    reference = None
    for _ in range(args.warmup):  # first run pays imports and page-cache misses
        _, reference = run_point(base.replace(workers=max(args.workers), session_options={"ms_per_clip": 0.0}), 1,
                                 reference)
    for ms in args.ms:
        for w, b, d in itertools.product(args.workers, args.batches, args.depths):
            # decode capacity right before the point, same workers/batch/depth, no device time: the
            # machine is shared, so a bound measured minutes earlier would not be comparable
            cfg = base.replace(workers=w, batch_size=b, queue_depth=d)
            cap, reference = run_point(cfg.replace(session_options={"ms_per_clip": 0.0}), args.repeats, reference)
            med, reference = run_point(cfg.replace(session_options={"ms_per_clip": ms}), args.repeats, reference)
            capacity[(w, b, d)] = cap["end_to_end_clips_per_s"]
            bound = min(1000.0 / ms, capacity[(w, b, d)])
            ratio = med["end_to_end_clips_per_s"] / bound
            pt = {"backend": f"simulated {ms} ms/clip", "ms_per_clip": ms, "workers": w, "batch": b, "depth": d,
                  **med, "device_rate": 1000.0 / ms, "decode_capacity": capacity[(w, b, d)],
                  "ratio_to_bound": ratio, "verdict": verdict(ratio >= 0.95)}
            points.append(pt)
            targets.append(pt)
            print(f"simulated {ms:5.2f} ms w={w} b={b:2d} d={d:2d}  {med['end_to_end_clips_per_s']:7.1f} clips/s "
                  f"(decode capacity {cap['end_to_end_clips_per_s']:6.1f}, device {1000.0 / ms:7.1f}) "
                  f"ratio {ratio:.2f} {pt['verdict']}  busy {med['device_busy_fraction']:.2f}  "
                  f"empty-wait {med['consumer_waited_on_empty_queue_s']:.2f}s  "
                  f"full-wait {med['producers_waited_on_full_queue_s']:.2f}s", flush=True)
    ort = {}
    if args.ort:
        model = bench_model(args.workdir, seed=args.seed, quick=args.quick)
        odata = ucf_like(args.workdir, args.ort_videos, seed=args.seed, seconds=seconds)
        obase = EvalConfig.create(video_path=str(odata.video_root), annotation_path=str(odata.annotation_path),
                           model=str(model), threads=args.ort_threads, start_method=args.start_method)
        pts, _ = grid(obase, args.ort_depths, args.ort_workers, args.ort_batches, args.repeats,
                      f"onnxruntime cpu {args.ort_threads} thread", None)
        for b in args.ort_batches:
            alone = ort_compute_only(model, b, args.ort_threads, 3 if args.quick else 5)
            for pt in pts:
                if pt["batch"] == b:
                    ratio = pt["end_to_end_clips_per_s"] / alone
                    pt.update(ort_compute_only_clips_per_s=alone, ratio_to_compute_only=ratio,
                              verdict_0_8=verdict(ratio >= 0.8))
        best = max(pts, key=lambda q: q["end_to_end_clips_per_s"])
        ort = {"points": pts, "best": best,
               "target_e2e_ge_0.8x_compute_only": {"ratio": best["ratio_to_compute_only"],
                                                   "verdict": best["verdict_0_8"]}}
        print(f"ORT: best end-to-end / compute-only = {best['ratio_to_compute_only']:.2f}  {best['verdict_0_8']}")
        points += pts
    rss = rss_check(args, *args.rss_videos) if args.rss else {}
    passed = sum(t["verdict"] == "PASS" for t in targets)
    best_by = {}
    for t in targets:
        key = (t["ms_per_clip"], t["workers"], t["batch"])
        best_by[key] = max(best_by.get(key, 0.0), t["ratio_to_bound"])
    print(f"simulated target (e2e >= 0.95 x min(device, decode)): {passed}/{len(targets)} points pass; "
          f"best depth per (ms, workers, batch): " + ", ".join(f"{k}: {v:.2f}" for k, v in best_by.items()))
    if rss:
        print(f"RSS 10 vs 100 videos: eval process {rss['growth_eval_process']:+.1%}, "
              f"tree {rss['growth_process_tree']:+.1%}  {rss['verdict']}")
    out = default_out(args, "queue_depth")
    png = out.with_suffix(".png")
    if args.plot:
        plot(points, png)
    write_json(out, {"videos": args.videos, "start_method": args.start_method,
                     "decode_capacity": {f"workers={w},batch={b},depth={d}": c for (w, b, d), c in capacity.items()},
                     "points": points,
                     "simulated_target": {"passed": passed, "points": len(targets),
                                          "best_ratio_per_ms_workers_batch": {str(k): v for k, v in best_by.items()}},
                     "onnxruntime": ort, "rss": rss, "plot": str(png) if args.plot else None})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
