#!/usr/bin/env python
"""Train the small model bundled for ``e3d-stream demo`` on synthetic action videos.

Steps, all seeded so a rerun gives the same model:

1. write a validation set once and a *fresh* training set for every epoch with
   :func:`e3d_stream.video._demo_data.make_demo_dataset` (training subsets of seeds
   ``train_seed + epoch``, the validation subset of ``val_seed``; the demo
   evaluates yet another seed's validation subset, so nothing is tested on
   training videos). Fresh videos matter: with one fixed set the model learnt
   each video's backdrop (train top-1 1.0, validation 0.31) instead of the
   motions. The next epoch's set is generated in a worker process while the
   current one trains;
2. turn every video into clips exactly as evaluation does (decode, reference
   resize + centre crop, 16-frame windows of the seed's clip plan), kept as
   uint8 and mean-subtracted per batch;
3. train an upstream architecture from :mod:`e3d_stream.models` from scratch;
4. re-estimate the BatchNorm running statistics over the training clips (an
   exact average instead of the momentum trail), so ``model.eval()`` is sane;
5. score the validation videos the way evaluation does (softmax per clip,
   float32 mean per video, top-1) and write the checkpoint in the upstream
   dict format (``module.`` keys) plus a JSON file with its metadata.

Usage::

    .venv/bin/python scripts/train_demo_model.py                # writes e3d_stream/assets/
    .venv/bin/python scripts/train_demo_model.py --out-dir /tmp/m --epochs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e3d_stream.constants import MEAN_RGB_F32  # noqa: E402
from e3d_stream.video._demo_data import DEMO_CLASSES, make_demo_dataset  # noqa: E402

ARCH_CHOICES = ("mobilenetv2", "shufflenetv2")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=ROOT / "e3d_stream" / "assets",
                   help="where demo_model.pth and demo_model.json are written")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="generate the videos under this folder (default: a temp dir)")
    p.add_argument("--arch", choices=ARCH_CHOICES, default="mobilenetv2")
    p.add_argument("--width-mult", type=float, default=0.25)
    p.add_argument("--train-videos-per-class", type=int, default=24)
    p.add_argument("--val-videos-per-class", type=int, default=10)
    p.add_argument("--train-seed", type=int, default=1000, help="seed of the training videos")
    p.add_argument("--val-seed", type=int, default=2000, help="seed of the validation videos")
    p.add_argument("--torch-seed", type=int, default=0, help="seed of weight init, dropout and batch order")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


# --- clips ----------------------------------------------------------------------------

def video_clips(path: Path) -> np.ndarray:
    """(n_clips, 3, 16, 112, 112) uint8 clips of one video, exactly as evaluation builds them."""
    from e3d_stream.video._clips import iter_video_clips

    return np.stack([np.asarray(c) for c in iter_video_clips(path, source="direct")])


def fresh_training_clips(root: str, seed: int, videos_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate a new training subset with ``seed`` and return its (clips, labels).

    Run in a worker process while the previous epoch trains: every epoch sees
    videos it has never seen, so the model cannot memorise backgrounds and has
    to learn the motions.
    """
    with tempfile.TemporaryDirectory(prefix="epoch_", dir=root) as tmp:
        ds = make_demo_dataset(tmp, videos_per_class=0, training_videos_per_class=videos_per_class, seed=seed)
        clips, labels, _ = load_clips(ds, "training")
    return clips, labels


def load_clips(dataset, subset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All clips of a subset: (clips uint8, clip labels, clip -> video index)."""
    clips, labels, owner = [], [], []
    for vi, video in enumerate(dataset.subset(subset)):
        c = video_clips(video.path)
        clips.append(c)
        labels += [DEMO_CLASSES.index(video.label)] * len(c)
        owner += [vi] * len(c)
    return np.concatenate(clips), np.asarray(labels, np.int64), np.asarray(owner, np.int64)


def to_input(batch_u8: np.ndarray):
    """uint8 clips -> float32 model input minus the reference mean, in channels-last-3d memory."""
    import torch

    x = batch_u8.astype(np.float32) - MEAN_RGB_F32.reshape(1, 3, 1, 1, 1)
    return torch.from_numpy(x).contiguous(memory_format=torch.channels_last_3d)


# --- training ---------------------------------------------------------------------------

def train(model, epoch_data, steps_per_epoch: int, args, log) -> None:
    """AdamW with a one-cycle schedule; ``epoch_data(e)`` gives epoch e's (clips, labels)."""
    import torch

    gen = np.random.default_rng(args.torch_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(args.epochs):
        clips, labels = epoch_data(epoch)
        model.train()
        order = gen.permutation(len(clips))
        t0, total, correct, loss_sum = time.time(), 0, 0, 0.0
        for s in range(steps_per_epoch):
            idx = np.sort(order[(s * args.batch_size) % len(order):][:args.batch_size])
            x, y = to_input(clips[idx]), torch.from_numpy(labels[idx])
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y).sum())
            total += len(idx)
        log(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / total:.3f} clip acc {correct / total:.3f} "
            f"({time.time() - t0:.0f} s)")


def recalibrate_bn(model, clips, batch_size: int) -> None:
    """Replace BN running stats by their exact average over all training clips (momentum=None)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for s in range(0, len(clips), batch_size):
            model(to_input(clips[s:s + batch_size]))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def score_videos(model, clips, owner, n_videos: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(per-video scores, per-clip softmax) as evaluation computes them: float32 mean of the clips' softmax."""
    import torch

    model.eval()
    probs = []
    with torch.no_grad():
        for s in range(0, len(clips), batch_size):
            probs.append(torch.softmax(model(to_input(clips[s:s + batch_size])), 1).numpy().astype(np.float32))
    probs = np.concatenate(probs)
    return np.stack([probs[owner == v].mean(0, dtype=np.float32) for v in range(n_videos)]), probs


def video_top1(model, clips, labels, owner) -> tuple[float, float]:
    """(video-level top-1, clip-level top-1)."""
    n_videos = int(owner.max()) + 1
    scores, probs = score_videos(model, clips, owner, n_videos)
    video_labels = np.array([labels[owner == v][0] for v in range(n_videos)])
    return float((scores.argmax(1) == video_labels).mean()), float((probs.argmax(1) == labels).mean())


# --- main -------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from e3d_stream.models import build_model, save_checkpoint

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.torch_seed)
    log = lambda msg: print(msg, flush=True)
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="e3d_demo_train_") as tmp:
        data = args.data_dir or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        val_set = make_demo_dataset(data / "val", videos_per_class=args.val_videos_per_class,
                                    training_videos_per_class=0, seed=args.val_seed)
        va_clips, va_labels, va_owner = load_clips(val_set, "validation")
        train_seeds = [args.train_seed + e for e in range(args.epochs)]
        current = fresh_training_clips(str(data), train_seeds[0], args.train_videos_per_class)
        log(f"data: {len(current[0])} training clips per epoch (~{args.train_videos_per_class * len(DEMO_CLASSES)} "
            f"new videos), {len(va_clips)} validation clips / {val_set.n_videos} videos "
            f"({time.time() - t_start:.0f} s)")
        steps_per_epoch = int(np.ceil(len(current[0]) / args.batch_size))

        options = {"width_mult": args.width_mult, "sample_size": 112, "sample_duration": 16}
        model = build_model(args.arch, num_classes=len(DEMO_CLASSES), **options)
        model = model.to(memory_format=torch.channels_last_3d)
        # The next epoch's videos are generated in another process while this one trains.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {}

            def epoch_data(e):
                nonlocal current
                if e > 0:
                    current = pending.pop(e).result()
                if e + 1 < args.epochs:
                    pending[e + 1] = pool.submit(fresh_training_clips, str(data), train_seeds[e + 1],
                                                 args.train_videos_per_class)
                return current

            t_train = time.time()
            train(model, epoch_data, steps_per_epoch, args, log)
    tr_clips, tr_labels = current
    tr_owner = np.arange(len(tr_clips))  # the last epoch's set, scored per clip (owner = clip)
    recalibrate_bn(model, tr_clips, args.batch_size)
    train_seconds = time.time() - t_train
    _, train_clip = video_top1(model, tr_clips, tr_labels, tr_owner)
    val_video, val_clip = video_top1(model, va_clips, va_labels, va_owner)
    log(f"last training set clip top-1 {train_clip:.4f}; "
        f"validation video top-1 {val_video:.4f} (clip {val_clip:.4f}); training {train_seconds:.0f} s")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    pth = args.out_dir / "demo_model.pth"
    save_checkpoint(model.to(memory_format=torch.contiguous_format), pth, arch=args.arch, epoch=args.epochs,
                    best_prec1=val_video)
    meta = {
        "arch": args.arch,
        "options": {**options, "num_classes": len(DEMO_CLASSES)},
        "classes": list(DEMO_CLASSES),
        "training": {"script": "scripts/train_demo_model.py", "argv": sys.argv[1:] if argv is None else list(argv),
                     "train_seeds": train_seeds, "val_seed": args.val_seed, "torch_seed": args.torch_seed,
                     "train_videos_per_epoch": args.train_videos_per_class * len(DEMO_CLASSES),
                     "val_videos": val_set.n_videos, "val_clips": int(len(va_clips)),
                     "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                     "seconds": round(train_seconds, 1), "threads": args.threads,
                     "torch": torch.__version__, "python": platform.python_version()},
        "accuracy": {"last_epoch_train_clip_top1": train_clip,
                     "val_video_top1": val_video, "val_clip_top1": val_clip},
        "sha256": hashlib.sha256(pth.read_bytes()).hexdigest(),
        "size_bytes": pth.stat().st_size,
    }
    (args.out_dir / "demo_model.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"wrote {pth} ({meta['size_bytes']} bytes) and demo_model.json in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
