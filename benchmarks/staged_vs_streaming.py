"""The reference's staged route against one streaming ``eval``, on the same videos, model and backend.

Staged (each stage a separate process, as in the seed's workflow):

1. ``extract``     ``ffmpeg -i V -vf scale=-1:240 <label>/<id>/image_%05d.jpg`` per video + an
                   ``n_frames`` file (upstream utils/video_jpg_ucf101_hmdb51.py, n_frames_ucf101_hmdb51.py);
2. ``preprocess``  ``e3d-stream preprocess --source rawframes`` -> seed-layout ``k.bin`` files;
3. ``infer``       every ``k.bin`` through the session -> ``k_0.bin`` outputs (what ais_bench does);
4. ``postprocess`` ``e3d-stream postprocess`` -> accuracy + val.json.

Streaming: ``e3d-stream eval --overwrite`` with ``--source direct`` and ``--source jpeg-compat``.
The three routes run in ``--repeats`` rounds (order rotated); each round's staged wall
time is divided by that round's eval wall time and the median of these paired ratios
is reported (``wall_ratios_per_round`` lists them).

Recorded per stage: wall time, bytes written (data files; the report files of
both routes are a few KB and listed apart), peak RSS (kernel maxrss of the
largest process, and a sampled sum over the process tree). Scores: per-video
top-1 agreement and max |score diff| over the top-10 lists of the staged
val.json (rawframes) and each streaming val.json. Backends: ``simulated`` at
the seed's 310P speed (0.77 ms/clip) and ``onnxruntime`` on CPU (MobileNetV2-3D,
random weights). Needs the ffmpeg CLI; says so (with how to install it) and exits 2 without it.

    apt-get update && apt-get install -y ffmpeg          # Debian/Ubuntu: the ffmpeg CLI
    python benchmarks/staged_vs_streaming.py             # ~6-10 min (3 rounds)
    python benchmarks/staged_vs_streaming.py --quick
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    N_CLASSES,
    base_parser,
    bench_model,
    default_out,
    median_of,
    python_argv,
    run_child,
    tree_bytes,
    ucf_like,
    verdict,
    write_json,
)

NO_FFMPEG = ("the ffmpeg CLI is not installed: the staged route needs it (Debian/Ubuntu: apt-get update && "
             "apt-get install -y ffmpeg; conda: conda install -c conda-forge ffmpeg; macOS: brew install ffmpeg)")


# --------------------------------------------------------------------------- stage 3 (child process)

def infer_bins(bins: Path, outputs: Path, backend: str, model: str | None, batch: int, threads: int) -> None:
    """ais_bench's job: each ``k.bin`` (float32 (B, 3, 16, 112, 112)) -> ``k_0.bin`` logits."""
    from e3d_stream.sessions import open_session

    outputs.mkdir(parents=True, exist_ok=True)
    # the .bin files hold float32 clips minus the mean: the simulated device takes them as such
    options = {"num_classes": N_CLASSES, "input_dtype": "float32"} if backend == "simulated" else {}
    with open_session(model, backend=backend, threads=threads if backend != "simulated" else None, **options) as s:
        k = 0
        while (bins / f"{k}.bin").exists():
            x = np.fromfile(bins / f"{k}.bin", dtype=np.float32).reshape(batch, 3, 16, 112, 112)
            s.run(x).astype(np.float32).tofile(outputs / f"{k}_0.bin")
            k += 1


# --------------------------------------------------------------------------- routes

def _stage(name, run, data_paths=(), report_paths=()):
    if run.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{run.stderr[-3000:]}")
    return {"wall_s": run.wall_s, "bytes_written": tree_bytes(*data_paths), "report_bytes": tree_bytes(*report_paths),
            "max_single_rss_mb": run.max_single_rss_mb, "peak_tree_rss_mb": run.peak_tree_rss_mb}


def staged(data, work: Path, *, backend, model, batch, threads, workers) -> tuple[dict, Path]:
    """The four stages as separate processes; returns per-stage figures and the staged val.json."""
    ffmpeg = shutil.which("ffmpeg")
    raw, bins, outs = work / "jpg", work / "bins", work / "outputs"
    info, acc, val = work / "bins.info", work / "acc.json", work / "val_staged.json"
    stages = {}
    # 1. extract: one ffmpeg per video, sequentially (the upstream script's loop)
    t0 = time.perf_counter()
    rss_single = rss_tree = 0.0
    for v in data.videos:
        dest = raw / v.label / v.video_id
        dest.mkdir(parents=True, exist_ok=True)
        run = run_child([ffmpeg, "-loglevel", "error", "-i", str(v.path), "-vf", "scale=-1:240",
                         str(dest / "image_%05d.jpg")])
        if run.returncode != 0:
            raise SystemExit(f"ffmpeg failed on {v.path}:\n{run.stderr[-2000:]}")
        (dest / "n_frames").write_text(str(len(list(dest.glob("image_*.jpg")))))
        rss_single, rss_tree = max(rss_single, run.max_single_rss_mb), max(rss_tree, run.peak_tree_rss_mb)
    stages["extract"] = {"wall_s": time.perf_counter() - t0, "bytes_written": tree_bytes(raw), "report_bytes": 0,
                         "max_single_rss_mb": rss_single, "peak_tree_rss_mb": rss_tree,
                         "jpeg_files": sum(1 for _ in raw.rglob("*.jpg"))}
    # 2. preprocess to seed-layout bins from the rawframes
    run = run_child(python_argv("-m", "e3d_stream", "preprocess", "--video_path", str(raw), "--annotation_path",
                                str(data.annotation_path), "--output_path", str(bins), "--info_path", str(info),
                                "--inference_batch_size", str(batch), "--source", "rawframes",
                                "--workers", str(workers), "--no_progress"))
    stages["preprocess"] = _stage("preprocess", run, [bins, info])
    # 3. inference over the bins
    run = run_child(python_argv(__file__, "--_infer", str(bins), str(outs), backend, str(model or ""), str(batch),
                                str(threads)))
    stages["infer"] = _stage("infer", run, [outs])
    # 4. postprocess
    run = run_child(python_argv("-m", "e3d_stream", "postprocess", "--result_path", str(outs), "--info_path", str(info),
                                "--annotation_path", str(data.annotation_path), "--acc_file", str(acc),
                                "--val_json", str(val)))
    stages["postprocess"] = _stage("postprocess", run, report_paths=[acc, val])
    total = {"wall_s": sum(s["wall_s"] for s in stages.values()),
             "bytes_written": sum(s["bytes_written"] for s in stages.values()),
             "max_single_rss_mb": max(s["max_single_rss_mb"] for s in stages.values()),
             "peak_tree_rss_mb": max(s["peak_tree_rss_mb"] for s in stages.values())}
    return {"stages": stages, "total": total}, val


def streaming(data, work: Path, source: str, *, backend, model, batch, threads, workers,
              repeats: int = 1) -> tuple[dict, Path]:
    """``e3d-stream eval`` as a subprocess, ``repeats`` times (the median run is reported)."""
    out, scratch = work / f"eval_{source}", work / f"tmp_{source}"
    scratch.mkdir(parents=True, exist_ok=True)
    argv = ["-m", "e3d_stream", "eval", "--video_path", str(data.video_root), "--annotation_path",
            str(data.annotation_path), "--source", source, "--batch_size", str(batch), "--workers", str(workers),
            "--output", str(out), "--overwrite", "--no_progress"]
    argv += ["--backend", "simulated"] if backend == "simulated" else ["--model", str(model), "--threads", str(threads)]
    before = tree_bytes(data.root)
    runs = []
    for _ in range(max(repeats, 1)):
        run = run_child(python_argv(*argv), env={"TMPDIR": str(scratch)})
        if run.returncode != 0:
            raise SystemExit(f"eval failed:\n{run.stderr[-3000:]}")
        runs.append(run)
    run = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]  # the median run
    reports = [out / "result.json", out / "val.json"]
    written = tree_bytes(out, scratch) - tree_bytes(*reports) + (tree_bytes(data.root) - before)
    summary = {"wall_s": run.wall_s, "runs_wall_s": [r.wall_s for r in runs], "bytes_written": written,
               "report_bytes": tree_bytes(*reports),
               "max_single_rss_mb": run.max_single_rss_mb, "peak_tree_rss_mb": run.peak_tree_rss_mb,
               "files_in_output": sorted(p.name for p in out.iterdir()),
               "files_in_tmpdir": sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*") if p.is_file())}
    return summary, out / "val.json"


def compare_scores(a: Path, b: Path) -> dict:
    ra, rb = json.loads(a.read_text())["results"], json.loads(b.read_text())["results"]
    if set(ra) != set(rb):
        return {"same_videos": False}
    agree, diff = 0, 0.0
    for vid in ra:
        agree += ra[vid][0]["label"] == rb[vid][0]["label"]
        sb = {e["label"]: e["score"] for e in rb[vid]}
        diff = max([diff] + [abs(e["score"] - sb[e["label"]]) for e in ra[vid] if e["label"] in sb])
    return {"same_videos": True, "videos": len(ra), "top1_agreement": agree / len(ra), "max_abs_score_diff": diff}


def compare(data, work: Path, *, backend, model, batch, threads, workers, stream_workers, repeats) -> dict:
    """``repeats`` rounds of: the staged route, eval --source direct, eval --source jpeg-compat (order rotated).

    Each round's staged total wall time is divided by the same round's eval wall time (paired);
    the median of those ratios is reported, with the figures of the median round of each route.
    """
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    kw = dict(backend=backend, model=model, batch=batch, threads=threads)
    steps = ["staged", "direct", "jpeg-compat"]
    rounds = []
    for r in range(max(repeats, 1)):
        rw = work / f"round{r}"
        rw.mkdir()
        k = r % len(steps)
        got = {}
        for step in steps[k:] + steps[:k]:
            if step == "staged":
                got[step] = staged(data, rw, workers=workers, **kw)
            else:
                got[step] = streaming(data, rw, step, workers=stream_workers, repeats=1, **kw)
        st, st_val = got["staged"]
        row = {"order": steps[k:] + steps[:k], "staged": st, "streaming": {}}
        for source in ("direct", "jpeg-compat"):
            sr, val = got[source]
            sr["scores_vs_staged"] = compare_scores(st_val, val)
            sr["wall_ratio_staged_over_streaming"] = st["total"]["wall_s"] / sr["wall_s"]
            row["streaming"][source] = sr
        rounds.append(row)
        print(f"[{backend}] round {r + 1}/{repeats}: staged " + ", ".join(f"{n} {v['wall_s']:.1f}s" for n, v in
                                                                        st["stages"].items())
              + f" = {st['total']['wall_s']:.1f}s, {st['total']['bytes_written'] / 2**20:.1f} MiB; "
              + "; ".join(f"eval --source {src} {v['wall_s']:.1f}s ({v['wall_ratio_staged_over_streaming']:.2f}x)"
                          for src, v in row["streaming"].items()), flush=True)
        shutil.rmtree(rw / "jpg", ignore_errors=True)
        shutil.rmtree(rw / "bins", ignore_errors=True)
    by_staged = sorted(rounds, key=lambda rd: rd["staged"]["total"]["wall_s"])
    result = {"backend": backend, "batch": batch, "threads": threads, "rounds": len(rounds),
              "staged": dict(by_staged[len(by_staged) // 2]["staged"],
                             runs_total_wall_s=[rd["staged"]["total"]["wall_s"] for rd in rounds]),
              "streaming": {}}
    for source in ("direct", "jpeg-compat"):
        runs = [rd["streaming"][source] for rd in rounds]
        med = dict(sorted(runs, key=lambda x: x["wall_s"])[len(runs) // 2])
        ratios = [x["wall_ratio_staged_over_streaming"] for x in runs]
        med["runs_wall_s"] = [x["wall_s"] for x in runs]
        med["wall_ratios_per_round"] = ratios
        med["wall_ratio_staged_over_streaming"] = median_of(ratios)  # paired per round, then the median
        med["scores_vs_staged"] = runs[0]["scores_vs_staged"]
        med["scores_identical_every_round"] = all(x["scores_vs_staged"] == runs[0]["scores_vs_staged"] for x in runs)
        result["streaming"][source] = med
        print(f"[{backend}] eval --source {source}: median paired ratio {med['wall_ratio_staged_over_streaming']:.2f}x "
              f"faster, {med['bytes_written']} bytes written, scores {med['scores_vs_staged']}", flush=True)
    return result


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_infer":
        bins, outs, backend, model, batch, threads = sys.argv[2:8]
        infer_bins(Path(bins), Path(outs), backend, model or None, int(batch), int(threads))
        return 0
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--ort-videos", type=int, default=8)
    p.add_argument("--batch", type=int, default=16, help="clips per .bin / per eval batch (simulated)")
    p.add_argument("--ort-batch", type=int, default=4, help="clips per .bin / per eval batch (onnxruntime)")
    p.add_argument("--ort-threads", type=int, default=2, help="ONNX Runtime intra-op threads (both routes)")
    p.add_argument("--workers", type=int, default=2, help="decode workers (preprocess and eval)")
    p.add_argument("--ort-stream-workers", type=int, default=1,
                   help="eval decode workers with onnxruntime (the model, not decoding, is the limit)")
    p.add_argument("--backends", default="simulated,onnxruntime")
    p.set_defaults(repeats=3)
    args = p.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print(NO_FFMPEG, file=sys.stderr)
        return 2
    if args.quick:
        args.videos, args.ort_videos, args.batch, args.ort_batch, args.repeats = 2, 1, 4, 2, 1
    seconds = (1.0, 1.5) if args.quick else (4.0, 7.0)
    scratch = Path(tempfile.mkdtemp(prefix="staged_", dir=args.workdir if args.workdir.exists() else None))
    results = {}
    try:
        for backend in args.backends.split(","):
            if backend == "simulated":
                data = ucf_like(args.workdir, args.videos, seed=args.seed, seconds=seconds)
                results[backend] = compare(data, scratch / backend, backend=backend, model=None, batch=args.batch,
                                           threads=1, workers=args.workers, stream_workers=args.workers,
                                           repeats=args.repeats)
            elif backend == "onnxruntime":
                data = ucf_like(args.workdir, args.ort_videos, seed=args.seed, seconds=seconds)
                model = bench_model(args.workdir, seed=args.seed, quick=args.quick)
                results[backend] = compare(data, scratch / backend, backend=backend, model=model,
                                           batch=args.ort_batch, threads=args.ort_threads, workers=args.workers,
                                           stream_workers=args.ort_stream_workers, repeats=args.repeats)
            else:
                raise SystemExit(f"unknown backend {backend!r}; choose from simulated, onnxruntime")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    targets = {}
    if "simulated" in results:
        d = results["simulated"]["streaming"]["direct"]
        targets["simulated_wall_ratio_ge_3x"] = {"ratio": d["wall_ratio_staged_over_streaming"],
                                                 "verdict": verdict(d["wall_ratio_staged_over_streaming"] >= 3)}
        targets["simulated_streaming_writes_0_bytes"] = {
            "bytes": d["bytes_written"], "staged_bytes": results["simulated"]["staged"]["total"]["bytes_written"],
            "verdict": verdict(d["bytes_written"] == 0)}
    if "onnxruntime" in results:
        d = results["onnxruntime"]["streaming"]["direct"]
        targets["onnxruntime_streaming_faster"] = {"ratio": d["wall_ratio_staged_over_streaming"],
                                                   "verdict": verdict(d["wall_ratio_staged_over_streaming"] > 1)}
    for name, t in targets.items():
        print(f"{name}: {t}")
    out = write_json(default_out(args, "staged_vs_streaming"), {"results": results, "targets": targets})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
