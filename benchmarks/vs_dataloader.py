"""The users' own route (torch DataLoader + antialiased ``F.interpolate``) against ``e3d_stream.evaluate``.

Issue 12's comparison, on the same generated UCF-like videos and the same
model (the bundled demo model, ``e3d_stream/assets/demo_model.pth``, exported
to ONNX; 8 classes, so the annotation lists the 8 demo classes):

* ``dataloader``  what users build themselves, written here as a user would:
                  a torch ``IterableDataset`` over the annotation's videos (each
                  DataLoader worker takes every n-th video), PyAV decode to
                  rgb24, ``F.interpolate(mode="bilinear", antialias=True)`` on
                  the uint8 channels-last frame (what torchvision v2 ``Resize``
                  does; torchvision is not used), centre crop, the reference's
                  16-frame clip plan, ``DataLoader(num_workers=2, batch_size=B)``;
                  mean subtraction in the main process, ONNX Runtime there.
* ``exact``       ``e3d_stream.evaluate(resize="exact")`` (bit-exact preprocessing;
                  the compiled kernel when numba is installed).
* ``fast``        ``e3d_stream.evaluate(resize="fast")`` (OpenCV, approximate).

Every route runs in its own process (``python vs_dataloader.py --_route ...``),
so each pays its own interpreter start, imports, model load and worker start;
the parent measures that process's wall time and peak RSS. Inside, each
inference call is time-stamped after it returns; "running" clips/s =
clips after the first batch / (last stamp - first stamp): start-up excluded.
Same ONNX Runtime settings in every route (``--threads`` intra-op threads, one
inter-op thread, all graph optimisations), same batch size, same decode worker
count, same model file (``--uint8-model``: the ``--uint8_input`` export, which
subtracts the mean in its graph, for every route); each route otherwise runs as
its users get it by default: the start method (fork for the DataLoader, spawn
for e3d_stream), ONNX Runtime's spin-waiting (on, ONNX Runtime's default, in
the DataLoader route; off, e3d_stream's default for a CPU session beside its
decode workers, in eval) and eval's ``--queue_depth`` default.

Each stamp also records the CPU seconds of the route's process tree (psutil):
"running CPU ms per clip" is what a clip costs once running, which depends far
less on what else the shared machine runs than clips/s does.

Extra routes (on by default): ``*_nomodel`` (the data path alone: the DataLoader
iterated with its mean subtraction; eval with the simulated session at 0
ms/clip), ``ort_only`` (ONNX Runtime on a ready batch, as many clips) -- the two
sides of an Amdahl bound -- and the spin-waiting levers: ``dataloader_nospin``
(the users' route with ONNX Runtime's spin-waiting off, what a user can do) and
``exact_spin`` / ``fast_spin`` (eval with it on, ``session_options={"spin_wait":
True}``: like for like with the users' default; spinning threads burn the cycles
the decode workers need on two cores).

Rounds: a warm-up round (untimed: page cache, numba cache; its results are the
agreement check: every route must give the same clips per video, else nothing
is timed), then ``--rounds`` rounds with the routes in a rotated order. Per
round the ratios to the DataLoader of that same round are taken (paired), and
their median is reported; absolute figures drift with the shared machine's load.
Agreement: per-video top-1 agreement and mean / max |score diff| of each route
against ``exact`` (scores = per-clip softmax averaged per video).

    .venv/bin/python benchmarks/vs_dataloader.py                     # ~12-15 min (40 videos, 7 rounds)
    .venv/bin/python benchmarks/vs_dataloader.py --no-bounds --no-levers   # the three main routes only
    .venv/bin/python benchmarks/vs_dataloader.py --quick             # < 60 s
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Only light imports at module level: e3d_stream's spawned decode workers import this file
# again (as __mp_main__), and a decode worker must not import torch.
from common import (
    ROOT,
    base_parser,
    default_out,
    median_of,
    python_argv,
    run_child,
    ucf_like,
    verdict,
    write_json,
)

ROUTES = ("dataloader", "exact", "fast")
#: extra routes (``--bounds``): the same data paths with no model (decode capacity: the DataLoader
#: iterated with the mean subtraction, eval with the simulated session at 0 ms/clip), and the model
#: alone (ONNX Runtime on a ready batch, as many clips): the two sides of the Amdahl bound
BOUND_ROUTES = ("dataloader_nomodel", "exact_nomodel", "fast_nomodel", "ort_only")
#: extra routes (``--levers``): every main route with ONNX Runtime's spin-waiting the other way round
#: from its default (``session.*.allow_spinning``): the DataLoader with it off, eval with it on (eval's
#: CPU sessions turn it off by default: on 2 cores shared with 2 decode workers, spinning threads burn
#: the cycles the workers need)
LEVER_ROUTES = ("dataloader_nospin", "exact_spin", "fast_spin")
#: the reference's per-channel mean (RGB, 0..255 scale)
MEAN = (114.7748, 107.7354, 99.4750)
SIZE, DURATION = 112, 16
TARGETS = {"exact": 1.1, "fast": 1.3}


# --------------------------------------------------------------------------- time stamps

_TREE: list = []


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process and its live descendants (decode workers), now."""
    import psutil

    if not _TREE:
        _TREE.append(psutil.Process())
    me = _TREE[0]
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def stamp(n_clips: int) -> tuple:
    """(wall clock, clips in the batch, CPU seconds of the process tree) after a batch's inference returned."""
    return time.perf_counter(), n_clips, tree_cpu_s()


# --------------------------------------------------------------------------- the users' route

def user_route(videos, model: str | None, *, batch: int, workers: int, threads: int, stamps: list,
               spin: bool = True):
    """The DataLoader route, as a user writes it. ``videos``: [(index, path)]; returns (scores, clips per video).

    ``model=None``: no inference (decode capacity; the scores are then empty).

    (Classes are defined inside this function only so that importing this
    benchmark never imports torch; a user would put them at module level.)
    """
    import av
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    def preprocess(rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, 112, 112) uint8: shorter side to 112, antialiased bilinear, centre crop."""
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W), channels-last memory
        h, w = rgb.shape[:2]
        nh, nw = (SIZE, int(SIZE * w / h)) if h <= w else (int(SIZE * h / w), SIZE)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = int(round((nh - SIZE) / 2.0)), int(round((nw - SIZE) / 2.0))
        return x[0, :, top:top + SIZE, left:left + SIZE]

    class VideoClips(IterableDataset):
        """Clips of 16 frames of each video (the reference plan: windows from frame 1, short tail cycled)."""

        def __init__(self, items):
            self.items = items

        def __iter__(self):
            info = get_worker_info()
            mine = self.items if info is None else self.items[info.id::info.num_workers]
            for index, path in mine:
                with av.open(path) as container:
                    frames = [preprocess(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
                n = len(frames)
                for start in range(0, n - 1, DURATION):
                    window = frames[start:start + DURATION]
                    window = [window[i % len(window)] for i in range(DURATION)]
                    yield torch.stack(window, dim=1), index  # (3, 16, 112, 112) uint8

    sess = ort_session(model, threads, spin) if model else None
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1, 1)
    loader = DataLoader(VideoClips(list(videos)), batch_size=batch, num_workers=workers)
    per_video: dict[int, list] = {}
    counts: dict[int, int] = {}
    raw = sess is not None and sess.get_inputs()[0].type == "tensor(uint8)"  # a --uint8_input export
    for clips, index in loader:
        x = clips if raw else clips.float().sub_(mean)
        if sess is None:
            stamps.append(stamp(len(index)))
            for i in index.tolist():
                counts[i] = counts.get(i, 0) + 1
            continue
        logits = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        stamps.append(stamp(len(index)))
        probs = torch.softmax(torch.from_numpy(logits), dim=1)
        for i, p in zip(index.tolist(), probs):
            per_video.setdefault(i, []).append(p)
            counts[i] = counts.get(i, 0) + 1
    scores = {i: torch.stack(ps).mean(0).numpy() for i, ps in per_video.items()}
    return scores, counts


def ort_session(model: str, threads: int, spin: bool = True):
    """ONNX Runtime as e3d_stream's OrtSession sets it up: ``threads`` intra-op, 1 inter-op, all optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- e3d_stream's route

def e3d_route(spec: dict, resize: str, stamps: list, *, model: bool = True, spin: bool | None = None,
              deep: bool = False):
    """``e3d_stream.evaluate`` with an ONNX Runtime session whose calls are time-stamped.

    ``model=False``: the simulated session at 0 ms/clip (decode capacity); ``spin``: the session's
    ``spin_wait`` (None: e3d_stream's default, off on CPU); ``deep``: ``queue_depth=spec["deep_queue"]``
    instead of eval's default.
    """
    from e3d_stream import EvalConfig, evaluate
    from e3d_stream.sessions import open_session

    labels = spec["labels"]
    depth = {"queue_depth": spec["deep_queue"]} if deep else {}
    if model:
        cfg = EvalConfig.create(video_path=spec["video_root"], annotation_path=spec["annotation"],
                                model=spec["model"], resize=resize, workers=spec["workers"],
                                threads=spec["threads"], batch_size=spec["batch"], **depth)
        opened = open_session(spec["model"], threads=spec["threads"],
                              **({} if spin is None else {"spin_wait": spin}))
    else:
        cfg = EvalConfig.create(video_path=spec["video_root"], annotation_path=spec["annotation"],
                                backend="simulated", resize=resize, workers=spec["workers"],
                                batch_size=spec["batch"], **depth)
        opened = open_session(None, backend="simulated", num_classes=len(labels), ms_per_clip=0.0)
    with opened as sess:
        execute = sess.execute

        def stamped(staged, n_valid):
            out = execute(staged, n_valid)
            stamps.append(stamp(n_valid))
            return out

        sess.execute = stamped  # instance attribute: the DoubleBuffer's device thread calls this
        report = evaluate(cfg, session=sess)
    index = {vid: i for i, vid in enumerate(spec["video_ids"])}
    scores, counts = {}, {}
    for vid, r in report.results.items():
        vec = np.zeros(len(labels), np.float64)
        vec[list(r.topk_indices)] = r.topk_scores  # top-k covers every class (k = min(10, classes))
        if model:
            scores[index[vid]] = vec
        counts[index[vid]] = r.n_clips
    return scores, counts, {"kernel": report.preprocess.get("kernel"), "failures": len(report.failures),
                            "top1": report.top1}


def ort_only(spec: dict, stamps: list):
    """The model alone: ONNX Runtime on one ready batch (float32, or uint8 for a --uint8_input model), as many clips."""
    sess = ort_session(spec["model"], spec["threads"])
    rng = np.random.default_rng(0)
    if sess.get_inputs()[0].type == "tensor(uint8)":
        x = rng.integers(0, 256, (spec["batch"], 3, DURATION, SIZE, SIZE), dtype=np.uint8)
    else:
        x = (rng.standard_normal((spec["batch"], 3, DURATION, SIZE, SIZE)) * 50).astype(np.float32)
    name = sess.get_inputs()[0].name
    left = spec["n_clips"]
    while left > 0:
        n = min(left, spec["batch"])
        sess.run(None, {name: x[:n]})
        stamps.append(stamp(n))
        left -= n
    return {}, {}


def child(route: str, spec_path: Path, result_path: Path) -> int:
    """One route in this process; writes stamps, scores and CPU times to ``result_path``."""
    t_start = time.perf_counter()
    spec = json.loads(spec_path.read_text())
    stamps: list = []
    extra = {}
    base, _, variant = route.partition("_")
    tokens = set(variant.split("-"))
    model, deep = "nomodel" not in tokens, "deep" in tokens
    # spin-waiting: None = the route's own default (ORT's "on" for the DataLoader, e3d_stream's "off" for eval)
    spin = False if "nospin" in tokens else (True if "spin" in tokens else None)
    if route == "ort_only":
        scores, counts = ort_only(spec, stamps)
    elif base == "dataloader":
        videos = list(enumerate(spec["video_paths"]))
        scores, counts = user_route(videos, spec["model"] if model else None, batch=spec["batch"],
                                    workers=spec["workers"], threads=spec["threads"], stamps=stamps,
                                    spin=spin is not False)
    else:
        scores, counts, extra = e3d_route(spec, base, stamps, model=model, spin=spin, deep=deep)
    t_end = time.perf_counter()
    cpu = os.times()
    result = {"route": route, "stamps_s": [t - t_start for t, _, _ in stamps],
              "stamp_clips": [n for _, n, _ in stamps], "stamp_cpu_s": [c for _, _, c in stamps],
              "in_process_s": t_end - t_start,
              "cpu_s": {"self": cpu.user + cpu.system, "children": cpu.children_user + cpu.children_system},
              "scores": {str(i): list(map(float, v)) for i, v in scores.items()},
              "clips_per_video": {str(i): n for i, n in counts.items()}, **extra}
    result_path.write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- parent

def running_rate(res: dict) -> dict:
    """Clips/s and CPU ms per clip after the first batch (start-up excluded), clips, time to the first batch."""
    t, n, c = res["stamps_s"], res["stamp_clips"], res["stamp_cpu_s"]
    clips = sum(n)
    span = t[-1] - t[0] if len(t) > 1 else float("nan")
    rate = (clips - n[0]) / span if len(t) > 1 and span > 0 else float("nan")
    cpu = 1e3 * (c[-1] - c[0]) / (clips - n[0]) if len(t) > 1 and clips > n[0] else float("nan")
    return {"running_clips_per_s": rate, "running_cpu_ms_per_clip": cpu, "clips": clips, "first_batch_s": t[0],
            "batches": len(t)}


def run_route(route: str, spec_path: Path, work: Path) -> dict:
    result_path = work / f"result_{route}.json"
    result_path.unlink(missing_ok=True)
    run = run_child(python_argv(__file__, "--_route", route, str(spec_path), str(result_path)),
                    env={"PYTHONPATH": str(ROOT)})
    if run.returncode != 0:
        raise SystemExit(f"route {route} failed:\n{run.stderr[-3000:]}")
    res = json.loads(result_path.read_text())
    row = {**running_rate(res), "wall_s": run.wall_s, "max_single_rss_mb": run.max_single_rss_mb,
           "peak_tree_rss_mb": run.peak_tree_rss_mb, "cpu_s": res["cpu_s"]}
    row["cpu_s_per_clip"] = (res["cpu_s"]["self"] + res["cpu_s"]["children"]) / max(row["clips"], 1)
    row["wall_clips_per_s"] = row["clips"] / run.wall_s
    if "kernel" in res:
        row["kernel"] = res["kernel"]
    return {"row": row, "scores": res["scores"], "clips_per_video": res["clips_per_video"]}


def agreement(a: dict, b: dict) -> dict:
    """Per-video top-1 agreement and |score diff| of scores ``b`` against reference scores ``a``."""
    keys = sorted(a, key=int)
    if set(a) != set(b):
        return {"same_videos": False}
    sa, sb = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    d = np.abs(sa - sb)
    return {"same_videos": True, "videos": len(keys), "top1_agreement": float(np.mean(sa.argmax(1) == sb.argmax(1))),
            "mean_abs_score_diff": float(d.mean()), "max_abs_score_diff": float(d.max())}


def demo_onnx(workdir: Path, *, uint8_input: bool = False) -> Path:
    """The bundled demo model exported to ONNX (cached; re-exported when the checkpoint changes).

    ``uint8_input``: ``e3d-stream export --uint8_input`` (raw uint8 clips in, the mean subtracted in the graph).
    """
    assets = ROOT / "e3d_stream" / "assets"
    meta = json.loads((assets / "demo_model.json").read_text())
    out = Path(workdir) / f"demo_model_{meta['sha256'][:12]}{'_u8' if uint8_input else ''}.onnx"
    if not out.exists():
        import importlib.util

        from e3d_stream.seed import export_onnx

        tmp = out.with_suffix(".tmp.onnx")
        export_onnx(assets / "demo_model.pth", tmp, arch=meta["arch"], width_mult=meta["options"]["width_mult"],
                    simplify=importlib.util.find_spec("onnxsim") is not None, uint8_input=uint8_input)
        os.replace(tmp, out)
    return out


def demo_annotation(data, path: Path) -> tuple[Path, list[str]]:
    """The generated videos' annotation with the demo model's 8 labels (ucf_like's lists 101)."""
    meta = json.loads((ROOT / "e3d_stream" / "assets" / "demo_model.json").read_text())
    labels = list(meta["classes"])
    doc = {"labels": labels, "database": {v.video_id: {"subset": "validation", "annotations": {"label": v.label}}
                                          for v in data.videos}}
    path.write_text(json.dumps(doc))
    return path, labels


def plot(rounds: list[dict], path: Path) -> None:
    """Per-round paired ratios against the users' DataLoader (dots) and their medians (bars)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2))
    FigureCanvasAgg(fig)
    cols = [("exact", "eval exact"), ("fast", "eval fast"), ("exact_spin", "exact, ORT\nspin (both)"),
            ("fast_spin", "fast, ORT\nspin (both)"), ("exact_vs_dataloader_nospin", "exact, ORT\nno spin (both)"),
            ("fast_vs_dataloader_nospin", "fast, ORT\nno spin (both)")]
    cols = [(k, label) for k, label in cols if k in rounds[0]["ratios"]]
    panels = (("running_ratio", "running clips/s: route / DataLoader"),
              ("cpu_ratio", "CPU per clip once running: DataLoader / route"),
              ("wall_speedup", "whole-process wall: DataLoader / route"))
    for k, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        for j, (col, _) in enumerate(cols):
            vals = [rd["ratios"][col][key] for rd in rounds]
            ax.scatter([j] * len(vals), vals, alpha=0.6, s=14)
            med = median_of(vals)
            ax.hlines(med, j - 0.25, j + 0.25, colors="k")
            ax.annotate(f"{med:.2f}", (j + 0.27, med), fontsize=7, va="center")
            base = col.split("_")[0]
            if key in ("running_ratio", "cpu_ratio"):
                ax.hlines(TARGETS[base], j - 0.35, j + 0.35, colors="r", linestyles="--", lw=0.8)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(cols)), [label for _, label in cols], fontsize=7)
        ax.set_xlim(-0.6, len(cols) - 0.2)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("paired ratio per round (red: issue 12 targets)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def paired(res: dict, route: str, ref: str) -> dict:
    """Ratios of ``route`` to ``ref`` within one round."""
    a, b = res[route]["row"], res[ref]["row"]
    return {"running_ratio": a["running_clips_per_s"] / b["running_clips_per_s"],
            "wall_speedup": b["wall_s"] / a["wall_s"],
            "cpu_ratio": b["running_cpu_ms_per_clip"] / a["running_cpu_ms_per_clip"]}


def round_ratios(res: dict) -> dict:
    """Every paired comparison one round allows (keys: ``<route>`` vs ``<its DataLoader>``)."""
    out = {}
    for route in res:
        base, _, variant = route.partition("_")
        if base in ("exact", "fast") and variant in ("", "nomodel", "spin", "deep", "deep-nomodel"):
            # "spin": eval with spinning on, against the DataLoader's default (on): like for like
            ref_variant = variant.replace("deep-", "").replace("deep", "").replace("spin", "")
            ref = "dataloader" + (f"_{ref_variant}" if ref_variant else "")
            if ref in res:
                out[route] = paired(res, route, ref)
    for route in ("exact", "fast"):  # both without spinning: eval's default against the users' lever
        if route in res and "dataloader_nospin" in res:
            out[f"{route}_vs_dataloader_nospin"] = paired(res, route, "dataloader_nospin")
    if "ort_only" in res:  # Amdahl: one clip costs 1/model rate + 1/decode capacity of the two cores
        ort = res["ort_only"]["row"]["running_clips_per_s"]
        for base in ("dataloader", "exact", "fast"):
            if f"{base}_nomodel" in res:
                cap = res[f"{base}_nomodel"]["row"]["running_clips_per_s"]
                out.setdefault("bound", {})[base] = 1.0 / (1.0 / ort + 1.0 / cap)
        for base in ("exact", "fast"):
            if base in out.get("bound", {}) and "dataloader" in out["bound"]:
                out.setdefault("bound_ratio", {})[base] = out["bound"][base] / out["bound"]["dataloader"]
    return out


def _eval_default(name: str):
    """eval's default for pool option ``name`` (what the ``exact`` and ``fast`` routes run with)."""
    from e3d_stream.run._config import PoolOptions

    return getattr(PoolOptions(), name)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_route"]:
        return child(argv[1], Path(argv[2]), Path(argv[3]))
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (each runs every route once)")
    p.add_argument("--batch", type=int, default=16, help="clips per batch (DataLoader batch_size = eval batch_size)")
    p.add_argument("--workers", type=int, default=2, help="decode workers (DataLoader num_workers = eval workers)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (every route)")
    p.add_argument("--routes", default=",".join(ROUTES), help="main routes, from " + ",".join(ROUTES))
    p.add_argument("--no-bounds", dest="bounds", action="store_false",
                   help="skip the no-model and model-only routes (" + ", ".join(BOUND_ROUTES) + ")")
    p.add_argument("--no-levers", dest="levers", action="store_false",
                   help="skip the spin-waiting routes (" + ", ".join(LEVER_ROUTES) + ")")
    p.add_argument("--uint8-model", action="store_true",
                   help="every route runs the --uint8_input export (mean subtracted in the graph; the DataLoader "
                        "feeds its uint8 batches as they are)")
    p.add_argument("--deep-queue", type=int, default=0,
                   help="also run exact_deep and exact_deep-nomodel: eval with --queue_depth N (decode backlog "
                        "per worker = N / workers), a lever; 0: off")
    args = p.parse_args(argv)
    routes = [r for r in args.routes.split(",") if r]
    if "dataloader" not in routes or "exact" not in routes or not set(routes) <= set(ROUTES):
        raise SystemExit(f"--routes must include dataloader and exact, from {ROUTES}")
    if args.quick:
        args.videos, args.rounds, args.warmup, args.batch, args.bounds, args.levers = 4, 1, 0, 4, False, False
    extra = [r for r in (BOUND_ROUTES if args.bounds else ()) + (LEVER_ROUTES if args.levers else ())
             if r == "ort_only" or r.partition("_")[0] in routes]
    if args.deep_queue:
        extra += ["exact_deep"] + (["exact_deep-nomodel"] if "dataloader_nomodel" in extra else [])
    seconds = (1.0, 1.5) if args.quick else (4.0, 7.0)
    data = ucf_like(args.workdir, args.videos, seed=args.seed, seconds=seconds)
    model = demo_onnx(args.workdir, uint8_input=args.uint8_model)
    work = Path(tempfile.mkdtemp(prefix="vs_dataloader_", dir=args.workdir))
    ann, labels = demo_annotation(data, work / "annotation.json")
    from e3d_stream.video._sampling import n_clips

    planned = sum(n_clips(v.n_frames) for v in data.videos)
    spec = {"video_root": str(data.video_root), "annotation": str(ann), "model": str(model), "labels": labels,
            "video_ids": [v.video_id for v in data.videos], "video_paths": [str(v.path) for v in data.videos],
            "batch": args.batch, "workers": args.workers, "threads": args.threads, "n_clips": planned,
            "deep_queue": args.deep_queue}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    every = routes + extra
    print(f"{len(data.videos)} videos, {data.n_frames} frames, {planned} clips; model {model.name}; "
          f"batch {args.batch}, {args.workers} workers, ORT {args.threads} threads; routes {every}", flush=True)

    def one_round(order):
        return {route: run_route(route, spec_path, work) for route in order}

    # warm-up round (untimed) = the agreement check; with --warmup 0 the first timed round checks
    checked = None
    for _ in range(max(args.warmup, 0)):
        checked = one_round(every)
        print("warm-up round done", flush=True)
    rounds, raw = [], []
    for r in range(args.rounds):
        k = r % len(every)
        order = every[k:] + every[:k]
        res = one_round(order)
        raw.append(res)
        if checked is None:
            checked = res
        ratios = round_ratios(res)
        rounds.append({"order": order, "routes": {name: res[name]["row"] for name in every}, "ratios": ratios})
        print(f"round {r + 1}/{args.rounds}: "
              + "; ".join(f"{name} {res[name]['row']['running_clips_per_s']:.1f}/s "
                          f"{res[name]['row']['running_cpu_ms_per_clip']:.1f}ms-cpu {res[name]['row']['wall_s']:.1f}s"
                          for name in every)
              + " | " + "; ".join(f"{name} {v['running_ratio']:.2f}x run {v['cpu_ratio']:.2f}x cpu "
                                  f"{v['wall_speedup']:.2f}x wall"
                                  for name, v in ratios.items() if "running_ratio" in v), flush=True)
    # agreement: identical clip plans (else nothing above means anything), then scores vs exact
    counts = {route: checked[route]["clips_per_video"] for route in every if route != "ort_only"}
    if any(c != counts["exact"] for c in counts.values()) or sum(counts["exact"].values()) != planned:
        bad = {route: sum(c.values()) for route, c in counts.items()}
        raise SystemExit(f"routes disagree on clips per video ({bad}, planned {planned}): "
                         f"the timings compare different work")
    ref = checked["exact"]["scores"]
    agree = {route: agreement(ref, checked[route]["scores"]) for route in every
             if route != "exact" and checked[route]["scores"]}
    agree["exact_between_rounds"] = agreement(ref, raw[-1]["exact"]["scores"])
    levers = {}
    for key in rounds[0]["ratios"]:
        if key.endswith("_vs_dataloader_nospin"):
            levers[key] = {f"median_{k}": median_of([rd["ratios"][key][k] for rd in rounds])
                           for k in ("running_ratio", "cpu_ratio", "wall_speedup")}
            levers[key]["cpu_ratio_per_round"] = [rd["ratios"][key]["cpu_ratio"] for rd in rounds]
    summary = {}
    for route in every:
        rows = [rd["routes"][route] for rd in rounds]
        summary[route] = {f"median_{k}": median_of([row[k] for row in rows])
                          for k in ("running_clips_per_s", "running_cpu_ms_per_clip", "wall_s", "wall_clips_per_s",
                                    "first_batch_s", "cpu_s_per_clip", "max_single_rss_mb", "peak_tree_rss_mb")}
        if route in rounds[0]["ratios"]:
            for key in ("running_ratio", "wall_speedup", "cpu_ratio"):
                summary[route][f"median_{key}"] = median_of([rd["ratios"][route][key] for rd in rounds])
                summary[route][f"{key}_per_round"] = [rd["ratios"][route][key] for rd in rounds]
        if "kernel" in rows[-1]:
            summary[route]["kernel"] = rows[-1]["kernel"]
    bound = None
    if "bound" in rounds[0]["ratios"]:
        bound = {"definition": "1 / (1 / model-only clips/s + 1 / no-model clips/s) per route and round: the "
                               "running rate if model and data path shared the two cores with no loss",
                 "median_clips_per_s": {b: median_of([rd["ratios"]["bound"][b] for rd in rounds])
                                        for b in rounds[0]["ratios"]["bound"]},
                 "median_ratio_to_dataloader": {b: median_of([rd["ratios"]["bound_ratio"][b] for rd in rounds])
                                                for b in rounds[0]["ratios"].get("bound_ratio", {})}}
        cap = {b: summary[f"{b}_nomodel"]["median_running_clips_per_s"] for b in ("dataloader", "exact", "fast")
               if f"{b}_nomodel" in summary}
        ort = summary["ort_only"]["median_running_clips_per_s"]
        bound["model_only_clips_per_s"] = ort
        bound["decode_capacity_clips_per_s"] = cap
        # with free preprocessing the best a route can do is the model alone: the ceiling of any ratio
        bound["ceiling_ratio_if_data_path_were_free"] = median_of(
            [rd["routes"]["ort_only"]["running_clips_per_s"] / rd["routes"]["dataloader"]["running_clips_per_s"]
             for rd in rounds])
    targets = {f"eval_{route}_running_ge_{t}x_dataloader": {
        "paired_median_ratio": summary[route]["median_running_ratio"],
        "verdict": verdict(summary[route]["median_running_ratio"] >= t),
        "per_round": summary[route]["running_ratio_per_round"],
        "paired_median_cpu_ratio": summary[route]["median_cpu_ratio"],
        "paired_median_wall_speedup": summary[route]["median_wall_speedup"],
        "agreement_vs_exact": agree.get(route, {"top1_agreement": 1.0, "mean_abs_score_diff": 0.0,
                                                "max_abs_score_diff": 0.0}),
        "dataloader_agreement_vs_exact": agree["dataloader"]}
        for route, t in TARGETS.items() if route in routes}
    for name, t in targets.items():
        print(f"{name}: {t['paired_median_ratio']:.2f}x  {t['verdict']}  (CPU per clip: "
              f"{t['paired_median_cpu_ratio']:.2f}x less; wall: {t['paired_median_wall_speedup']:.2f}x)")
    for route in summary:
        if route not in ROUTES and "median_running_ratio" in summary[route]:
            sm = summary[route]
            print(f"{route} vs its DataLoader: {sm['median_running_ratio']:.2f}x running, "
                  f"{sm['median_cpu_ratio']:.2f}x less CPU per clip")
    print("running CPU ms per clip:", {k: round(v["median_running_cpu_ms_per_clip"], 2) for k, v in summary.items()})
    for key, v in levers.items():
        print(f"{key} (both without spin-waiting): {v['median_running_ratio']:.2f}x running, "
              f"{v['median_cpu_ratio']:.2f}x less CPU per clip")
    if bound:
        print("bound:", json.dumps(bound))
    print("agreement vs exact:", json.dumps(agree))
    payload = {"videos": len(data.videos), "frames": data.n_frames, "clips": planned,
               "model": {"path": str(model), "checkpoint": "e3d_stream/assets/demo_model.pth", "classes": len(labels)},
               "settings": {"batch": args.batch, "workers": args.workers, "ort_threads": args.threads,
                            "rounds": args.rounds, "warmup_rounds": args.warmup, "routes": every,
                            "deep_queue": args.deep_queue, "uint8_model": args.uint8_model,
                            "queue_depth": _eval_default("queue_depth"),
                            "start_method": {"dataloader": "fork (torch default on Linux)",
                                             "exact": "spawn (eval default)", "fast": "spawn (eval default)"},
                            "ort_spin_wait": {"dataloader": "on (ONNX Runtime's default)",
                                              "exact": "off (e3d_stream's default on CPU)",
                                              "fast": "off (e3d_stream's default on CPU)"}},
               "definitions": {"running_clips_per_s": "clips after the first batch / (last - first inference "
                                                      "return), in the route's process",
                               "wall_s": "the route's whole process: interpreter, imports, model load, workers",
                               "cpu_s_per_clip": "user+sys CPU of the route's process and its joined workers "
                                                 "per clip, start-up included",
                               "running_cpu_ms_per_clip": "user+sys CPU of the route's process tree between the "
                                                          "first and the last batch, per clip after the first "
                                                          "batch: what a clip costs once running, whatever else "
                                                          "the shared machine runs",
                               "cpu_ratio": "DataLoader running CPU per clip / route's, same round (> 1: the route "
                                            "needs less CPU per clip; with every route keeping both cores busy, "
                                            "the throughput ratio a quiet machine would show)",
                               "running_ratio": "route / its DataLoader counterpart, same round",
                               "wall_speedup": "DataLoader wall / route wall, same round"},
               "summary": summary, "targets": targets, "levers_vs_users_default": levers, "bound": bound,
               "agreement": agree, "rounds": rounds}
    out = write_json(default_out(args, "vs_dataloader"), payload)
    if args.plot:
        plot(rounds, out.with_suffix(".png"))
    print(f"wrote {out}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
