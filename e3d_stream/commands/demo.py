"""``e3d-stream demo``: the whole pipeline on built-in data, no download."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

HELP = "generate a synthetic UCF-101-shaped set and evaluate the bundled model"
DESCRIPTION = (
    "Generate a small UCF-101-shaped dataset of synthetic action videos (PyAV-encoded MPEG-4 "
    "AVIs and a ucf101_01.json-style annotation), then evaluate the MobileNetV2-3D that ships "
    "with the package (e3d_stream/assets/demo_model.pth, upstream checkpoint format, trained by "
    "scripts/train_demo_model.py on videos of other seeds) through the full streaming pipeline."
)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: The seed of the demo's evaluation videos; training used others (see demo_model.json).
DEMO_SEED = 7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_dir", default=None, help="write the videos here and keep them (default: a temp dir)")
    parser.add_argument("--output", default=None, help="folder for result.json and val.json")
    parser.add_argument("--report", default=None,
                        help="folder for report.html and its plots (default: OUTPUT/report, or ./e3d_demo_report)")
    parser.add_argument("--videos_per_class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="seed of the generated videos")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="torch runs the .pth; onnxruntime exports it to ONNX first")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queue_depth", type=int, default=64)
    parser.add_argument("--source", choices=("direct", "jpeg-compat"), default="direct")
    parser.add_argument("--no_progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..run._config import EvalConfig
    from ..run._evaluate import evaluate
    from ..video._demo_data import make_demo_dataset

    meta = json.loads((ASSETS / "demo_model.json").read_text())
    report_dir = args.report or str(Path(args.output) / "report" if args.output else Path("e3d_demo_report"))
    model = ASSETS / "demo_model.pth"
    arch = {"arch": meta["arch"], **{k: v for k, v in meta["options"].items() if k != "num_classes"}}

    def config(video_root: Path, annotation: Path, model: Path, arch: dict[str, object]) -> EvalConfig:
        return EvalConfig.create(video_path=str(video_root), annotation_path=str(annotation),
                                 model=str(model), backend=args.backend, batch_size=args.batch_size,
                                 workers=args.workers, queue_depth=args.queue_depth, source=args.source,
                                 output=args.output, report=report_dir, overwrite=True, arch_options=arch, threads=1,
                                 progress=not args.no_progress and sys.stderr.isatty())

    with tempfile.TemporaryDirectory(prefix="e3d_demo_") as tmp:
        root = Path(args.data_dir or tmp)
        # the options are checked before any video is written: a typo costs no generation
        config(root / "videos", root / "ucf101_01.json", model, arch)
        t0 = time.perf_counter()
        data = make_demo_dataset(root, videos_per_class=args.videos_per_class, training_videos_per_class=0,
                                 seed=args.seed)
        print(f"generated {data.n_videos} synthetic videos of {len(data.labels)} classes in "
              f"{time.perf_counter() - t0:.1f} s under {root}")
        if args.backend == "onnxruntime":
            from ..seed._export import export_onnx

            onnx_path = Path(tmp) / "demo_model.onnx"
            result = export_onnx(model, onnx_path, **arch)
            print(f"exported {onnx_path.name}: onnxruntime vs torch max abs diff {result.max_abs_diff:.2e}")
            model, arch = onnx_path, {}
        cfg = config(data.video_root, data.annotation_path, model, arch)
        report = evaluate(cfg)
    print(report.summary())
    seeds = meta["training"]["train_seeds"]
    print(f"demo model: {meta['arch']} width {meta['options'].get('width_mult', 1.0)}, "
          f"{len(meta['classes'])} classes, {meta['size_bytes'] / 1e6:.2f} MB; evaluated on videos of seed "
          f"{args.seed} (trained on seeds {seeds[0]}-{seeds[-1]}, validated on {meta['training']['val_seed']})")
    return 0
