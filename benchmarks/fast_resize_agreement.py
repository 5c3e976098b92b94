"""Score agreement of ``--resize fast`` with the exact path, through a *trained* model.

The bundled demo model (MobileNetV2-3D, 8 classes, trained on synthetic action
videos) scores a freshly generated demo set twice, with ``resize="exact"`` and
``resize="fast"``; the script prints and saves top-1 agreement, accuracy of
both, and the mean / max absolute difference of the per-video scores.

    .venv/bin/python benchmarks/fast_resize_agreement.py [--videos_per_class 8] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e3d_stream import EvalConfig, evaluate  # noqa: E402
from e3d_stream.video._demo_data import make_demo_dataset  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos_per_class", type=int, default=8)
    p.add_argument("--seed", type=int, default=11, help="demo-set seed (the model never saw it)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fast_resize_agreement.json"))
    args = p.parse_args(argv)
    assets = ROOT / "e3d_stream" / "assets"
    meta = json.loads((assets / "demo_model.json").read_text())
    arch = {"arch": meta["arch"], "width_mult": meta["options"]["width_mult"]}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_demo_dataset(tmp, videos_per_class=args.videos_per_class, training_videos_per_class=0,
                                 seed=args.seed)
        reports, wall = {}, {}
        for mode in ("exact", "fast"):
            t0 = time.perf_counter()
            reports[mode] = evaluate(EvalConfig.create(
                video_path=str(data.video_root), annotation_path=str(data.annotation_path),
                model=str(assets / "demo_model.pth"), arch_options=arch, resize=mode, workers=args.workers,
                threads=1, batch_size=8))
            wall[mode] = time.perf_counter() - t0
    exact, fast = reports["exact"].results, reports["fast"].results
    agree = sum(exact[v].top1 == fast[v].top1 for v in exact)
    diffs = []
    for v in exact:
        a = dict(zip(exact[v].topk_indices, exact[v].topk_scores))
        b = dict(zip(fast[v].topk_indices, fast[v].topk_scores))
        diffs += [abs(a[c] - b[c]) for c in a if c in b]
    out = {
        "videos": len(exact), "seed": args.seed, "model": "e3d_stream/assets/demo_model.pth",
        "top1_agreement": agree / len(exact), "top1_agree_videos": agree,
        "top1_exact": reports["exact"].top1, "top1_fast": reports["fast"].top1,
        "mean_abs_score_diff": float(np.mean(diffs)), "max_abs_score_diff": float(np.max(diffs)),
        "wall_s": wall,
    }
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
