"""Frames/s on one core of each way to turn a video into model-ready clips.

Paths (all yield uint8 clips (3, 16, 112, 112) of the seed clip plan):

* ``decode_only``  PyAV decode + the CLI's frame-rate sync, no RGB conversion (the limit);
* ``naive``        what a user would write: PyAV -> ``to_ndarray('rgb24')`` -> ``Image.fromarray``
                   -> ``resize`` -> ``crop`` -> ``np.asarray`` -> stack + transpose (bit-exact);
* ``direct``       :func:`e3d_stream.video._clips.iter_video_clips` ``source='direct'`` (bit-exact);
* ``jpeg_compat``  ``source='jpeg-compat'`` (in-memory JPEG round trip like the ffmpeg CLI);
* ``rawframes``    ``source='rawframes'`` over JPEG folders the ffmpeg CLI wrote (skipped without it);
* ``fast``         ``resize='fast'`` (OpenCV area; NOT bit-exact: its score agreement is measured).

Before timing, ``direct`` must equal ``naive`` bit for bit. A second table
times candidate exact resize variants on the same decoded frames and checks
each against the reference's literal resize (what each idea gains or costs).
The score agreement of ``fast`` runs MobileNetV2-3D (random weights, ONNX
Runtime, one thread) on every clip of both modes.

    taskset -c 0 python benchmarks/decode_speed.py            # ~2 min
    python benchmarks/decode_speed.py --quick                 # seconds
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, bench_model, default_out, time_call, ucf_like, verdict, write_json

from e3d_stream.constants import SAMPLE_SIZE
from e3d_stream.video._clips import iter_video_clips
from e3d_stream.video._decode import VideoFrames
from e3d_stream.video._sampling import iter_windows
from e3d_stream.video._transforms import crop_origin, scaled_size

# --------------------------------------------------------------------------- the paths

def naive_clips(path):
    """The literal reference sequence per frame, written the obvious way."""
    from PIL import Image

    def frames():
        for frame in VideoFrames(path, output="frame"):
            rgb = frame.to_ndarray(format="rgb24")
            img = Image.fromarray(rgb)
            target = scaled_size(*img.size)
            if target is not None:
                img = img.resize(target, Image.BILINEAR)
            x1, y1 = crop_origin(*img.size)
            yield np.asarray(img.crop((x1, y1, x1 + SAMPLE_SIZE, y1 + SAMPLE_SIZE)))

    for window in iter_windows(frames(), policy="seed"):
        yield np.ascontiguousarray(np.stack(window).transpose(3, 0, 1, 2))


def decode_only(path):
    n = 0
    for _ in VideoFrames(path, output="frame"):
        n += 1
    return n


def _clips(target, **kw):
    return list(iter_video_clips(target, **kw))


PATHS = {
    "decode_only": lambda v, raw: decode_only(v),
    "naive": lambda v, raw: list(naive_clips(v)),
    "direct": lambda v, raw: _clips(v, source="direct"),
    "jpeg_compat": lambda v, raw: _clips(v, source="jpeg-compat"),
    "rawframes": lambda v, raw: _clips(raw, source="rawframes"),
    "fast": lambda v, raw: _clips(v, source="direct", resize="fast"),
}


# --------------------------------------------------------------------------- exact resize variants

def _variants():
    """name -> (fn(av.VideoFrame) -> (112,112,3) uint8, what it tries)."""
    from PIL import Image

    from e3d_stream.video._transforms import RESIZERS

    exact = RESIZERS["exact"][0]

    def naive(f):
        img = Image.fromarray(f.to_ndarray(format="rgb24"))
        img = img.resize(scaled_size(*img.size), Image.BILINEAR)
        x1, y1 = crop_origin(*img.size)
        return np.asarray(img.crop((x1, y1, x1 + 112, y1 + 112)))

    def library(f):
        return exact(f.to_ndarray(format="rgb24"), SAMPLE_SIZE)

    def rgbx(f):  # swscale writes 4-byte pixels: PIL's RGB layout, so no 3->4 byte unpack
        arr = f.to_ndarray(format="rgba")
        h, w = arr.shape[:2]
        img = Image.frombytes("RGB", (w, h), arr, "raw", "RGBX")
        return exact(img, SAMPLE_SIZE)

    def planes(f):  # one 8-bit image per channel (zero-copy frombuffer of 'L' planes)
        arr = np.ascontiguousarray(f.to_ndarray(format="rgb24").transpose(2, 0, 1))
        h, w = arr.shape[1:]
        (w2, h2), x1 = scaled_size(w, h), crop_origin(*scaled_size(w, h))[0]
        out = []
        for c in range(3):
            img = Image.frombuffer("L", (w, h), arr[c], "raw", "L", 0, 1).resize((w2, h), Image.BILINEAR)
            out.append(np.asarray(img.crop((x1, 0, x1 + 112, h)).resize((112, h2), Image.BILINEAR)))
        return np.stack(out, axis=2)

    def box_crop(f):  # horizontal pass only over the crop's columns via resize(box=...): NOT exact
        img = Image.fromarray(f.to_ndarray(format="rgb24"))
        w, h = img.size
        (w2, h2), x1 = scaled_size(w, h), crop_origin(*scaled_size(w, h))[0]
        s = w / w2
        img = img.resize((112, h), Image.BILINEAR, box=(x1 * s, 0, (x1 + 112) * s, h))
        return np.asarray(img.resize((112, h2), Image.BILINEAR))

    return {"naive_literal": (naive, "reference sequence: full resize to 149x112, then crop"),
            "library_exact": (library, "split pass: horizontal resize, crop 112 columns, vertical resize"),
            "rgbx_from_swscale": (rgbx, "swscale to 4-byte pixels + raw RGBX unpack, then split pass"),
            "per_channel_L": (planes, "split pass on three 8-bit planes instead of one RGB image"),
            "box_crop_hpass": (box_crop, "horizontal pass limited to the crop's columns with resize(box=)")}


def rgbx_sweep(widths=range(240, 722, 2)) -> dict:
    """Is swscale's yuv420p -> rgba equal to -> rgb24 in R, G, B? Random and smooth frames, 240 high."""
    import av

    rng = np.random.default_rng(1)
    differ = []
    for w in widths:
        for smooth in (False, True):
            img = rng.integers(0, 256, (240, w, 3), np.uint8)
            if smooth:
                img = (np.cumsum(img, 1) // (np.arange(w)[None, :, None] + 1)).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            if not np.array_equal(f.to_ndarray(format="rgba")[..., :3], f.to_ndarray(format="rgb24")):
                differ.append(w)
                break
    return {"widths_checked": len(widths), "widths_that_differ": len(differ), "examples": differ[:10],
            "bit_exact_in_general": not differ}


def resize_variants(videos, *, repeats: int) -> dict:
    frames = [f for v in videos for f in VideoFrames(v, output="frame")]
    table = _variants()
    ref = [table["naive_literal"][0](f) for f in frames]
    out = {}
    for name, (fn, idea) in table.items():
        timing, res = time_call(lambda fn=fn: [fn(f) for f in frames], warmup=1, repeats=repeats)
        same = sum(np.array_equal(a, b) for a, b in zip(res, ref))
        out[name] = {"idea": idea, "us_per_frame": 1e6 * timing.median / len(frames),
                     "frames_identical_to_reference": f"{same}/{len(frames)}", "bit_exact": same == len(frames)}
    base = out["naive_literal"]["us_per_frame"]
    for row in out.values():
        row["speedup_vs_naive_literal"] = base / row["us_per_frame"]
    return out


# --------------------------------------------------------------------------- score agreement of "fast"

def fast_agreement(videos, model: Path) -> dict:
    from e3d_stream.scoring._metrics import softmax
    from e3d_stream.sessions import open_session
    from e3d_stream.video._transforms import normalize_clip

    exact_scores, fast_scores, pix, logits = [], [], [], {"exact": [], "fast": []}
    with open_session(str(model), threads=1) as sess:
        for v in videos:
            ce, cf = _clips(v), _clips(v, resize="fast")
            pix.extend(np.abs(a.astype(np.int16) - b).mean() for a, b in zip(ce, cf))
            for name, clips, dest in (("exact", ce, exact_scores), ("fast", cf, fast_scores)):
                out = np.concatenate([sess.run(normalize_clip(c)) for c in clips])
                logits[name].append(out)
                dest.append(softmax(out).mean(axis=0))
    e, f = np.array(exact_scores), np.array(fast_scores)
    le, lf = np.concatenate(logits["exact"]), np.concatenate(logits["fast"])
    # random weights give near-uniform softmax scores, so score diffs alone say little: compare the
    # logit change with how much logits differ between clips
    spread = float(le.std(axis=0).mean())
    return {"videos": len(videos), "top1_agreement": float(np.mean(e.argmax(1) == f.argmax(1))),
            "clip_top1_agreement": float(np.mean(le.argmax(1) == lf.argmax(1))),
            "mean_abs_score_diff": float(np.abs(e - f).mean()), "max_abs_score_diff": float(np.abs(e - f).max()),
            "mean_abs_logit_diff": float(np.abs(le - lf).mean()), "between_clip_logit_std": spread,
            "mean_abs_pixel_diff": float(np.mean(pix)),
            "model": str(model), "threads": 1}


# --------------------------------------------------------------------------- main

def write_rawframes(videos, dest: Path) -> Path | None:
    """JPEG folders like upstream video_jpg_ucf101_hmdb51.py (None when the ffmpeg CLI is missing)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    for v in videos:
        out = dest / Path(v).stem
        if not (out / "image_00001.jpg").exists():
            out.mkdir(exist_ok=True)
            subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(v), "-vf", "scale=-1:240",
                            str(out / "image_%05d.jpg")], check=True)
            n = len(list(out.glob("image_*.jpg")))
            (out / "n_frames").write_text(str(n))
    return dest


def main(argv=None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=4, help="videos timed per path")
    p.add_argument("--agreement-videos", type=int, default=8, help="videos scored for the fast-mode agreement")
    p.add_argument("--model", type=Path, default=None,
                   help="an .onnx scored for the fast-mode agreement (default: the calibrated random MobileNetV2-3D; "
                        "a trained model gives the figure that matters)")
    p.add_argument("--cpu", type=int, default=0, help="pin this process to this core (-1: do not pin)")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.agreement_videos, args.repeats, args.warmup = 1, 1, 1, 0
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seconds = (1.0, 1.5) if args.quick else (4.0, 7.0)
    data = ucf_like(args.workdir, max(args.videos, args.agreement_videos), seed=args.seed, seconds=seconds)
    videos = [str(v.path) for v in data.videos[: args.videos]]
    raw_root = write_rawframes(videos, data.root / "rawframes_flat")
    n_frames = sum(sum(1 for _ in VideoFrames(v, output="frame")) for v in videos)

    # agreement first: the bit-exact paths must give identical clips
    for v in videos:
        naive, direct = list(naive_clips(v)), _clips(v)
        if len(naive) != len(direct) or not all(np.array_equal(a, b) for a, b in zip(naive, direct)):
            raise SystemExit(f"direct and naive clips differ for {v}: refusing to time")
    checks = {"direct_equals_naive": True}
    if raw_root is not None:
        same = total = 0
        for v in videos:
            a, b = _clips(v, source="jpeg-compat"), _clips(raw_root / Path(v).stem, source="rawframes")
            total += len(b)
            same += sum(np.array_equal(x, y) for x, y in zip(a, b))
        checks["jpeg_compat_clips_identical_to_rawframes"] = f"{same}/{total}"

    paths = {}
    for name, fn in PATHS.items():
        if name == "rawframes" and raw_root is None:
            paths[name] = {"skipped": "the ffmpeg CLI is not installed (apt-get install ffmpeg)"}
            print(f"{name:12s} skipped: no ffmpeg CLI")
            continue
        timing, _ = time_call(lambda fn=fn: [fn(v, raw_root / Path(v).stem if raw_root else None) for v in videos],
                              warmup=args.warmup, repeats=args.repeats)
        paths[name] = {"frames_per_s": n_frames / timing.median, **timing.to_dict()}
        print(f"{name:12s} {paths[name]['frames_per_s']:8.0f} frames/s")
    fps = {k: v["frames_per_s"] for k, v in paths.items() if "frames_per_s" in v}
    ratios = {f"{k}_vs_naive": fps[k] / fps["naive"] for k in fps if k != "naive"}
    targets = {"direct_exact_ge_1.5x_naive": {"ratio": ratios["direct_vs_naive"],
                                              "verdict": verdict(ratios["direct_vs_naive"] >= 1.5)},
               "fast_ge_3x_naive": {"ratio": ratios["fast_vs_naive"],
                                    "verdict": verdict(ratios["fast_vs_naive"] >= 3.0)}}
    variants = resize_variants(videos[:1], repeats=args.repeats)
    variants["rgbx_from_swscale"]["width_sweep"] = sweep = rgbx_sweep(range(240, 262, 2) if args.quick else
                                                                         range(240, 722, 2))
    if not sweep["bit_exact_in_general"]:
        variants["rgbx_from_swscale"]["bit_exact"] = False
        variants["rgbx_from_swscale"]["idea"] += (f" -- REJECTED: exact on these frames, but swscale's rgba differs "
                                                  f"from rgb24 at {sweep['widths_that_differ']} of "
                                                  f"{sweep['widths_checked']} widths")
    agreement = fast_agreement([str(v.path) for v in data.videos[: args.agreement_videos]],
                               args.model or bench_model(args.workdir, seed=args.seed, quick=args.quick))
    for name, t in targets.items():
        print(f"{name}: {t['ratio']:.2f}x  {t['verdict']}")
    print("fast vs exact:", {k: agreement[k] for k in ("top1_agreement", "clip_top1_agreement", "mean_abs_score_diff",
                                                       "mean_abs_logit_diff", "between_clip_logit_std",
                                                       "mean_abs_pixel_diff")})
    for name, row in variants.items():
        print(f"  resize variant {name:18s} {row['us_per_frame']:6.0f} us/frame  x{row['speedup_vs_naive_literal']:.2f}"
              f"  exact={row['bit_exact']}")
    out = write_json(default_out(args, "decode_speed"), {
        "one_core": args.cpu >= 0, "videos": len(videos), "frames": n_frames, "checks": checks,
        "paths": paths, "ratios": ratios, "targets": targets, "resize_variants": variants,
        "fast_agreement": agreement})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
