"""Spatial preprocessing of the reference (SPEC A.5-A.8), bit-exact, plus a fast approximate variant.

Per frame (upstream ``Scale(112)`` + ``CenterCrop(112)``):

1. resize the shorter side to 112 with PIL ``Image.BILINEAR`` (antialiased on
   downscale); the longer side becomes ``int(112 * long / short)``; a frame
   whose shorter side is already 112 is left as is. 320x240 -> 149x112;
2. crop 112x112 at ``x1 = int(round((W - 112) / 2))``, ``y1 = int(round((H - 112) / 2))``
   (round half to even): 149x112 -> x1 = 18.

Per batch: float32 on the 0..255 scale minus the per-channel mean, computed as
``np.float32(x) - np.float32(mean)`` (SPEC A.7); layout (N, C, T, H, W).

Why the exact resize of a landscape frame is split in two PIL calls: Pillow's
resampler (``libImaging/Resample.c``) runs a horizontal pass into an 8-bit
intermediate image and then a vertical pass, each pass's integer coefficients
depending only on its own axis; each output column of the vertical pass reads
only the same column of the intermediate. So ``resize((W2, H))``, a crop of the
112 kept columns, then ``resize((112, H2))`` gives the bytes of the full resize
cropped, while the vertical pass handles 112 instead of 149 columns (measured on
one core with the fixture's 320x240 frames: ~2,980 vs ~2,830 frames/s for the
reference's literal sequence, about 5%; the horizontal pass dominates). This is
checked, not assumed: the tests compare it with the reference's single resize +
crop on random frames, and a sweep of ~1,300
landscape geometries (every width 241..699 at height 240, three aspect ratios for
every height 113..399) found no difference. Portrait frames (narrower than
high) use the reference's single call: there Pillow 13 gave different bytes for
the split on some sizes (113x300), for a reason not established here. (Cropping
inside one call with ``resize(box=...)`` is never exact: the float box moves the
filter centres by rounding errors.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..constants import CLIP_SHAPE, MEAN_RGB_F32, SAMPLE_SIZE
from ..errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from ._testtime import Geometry


def scaled_size(width: int, height: int, size: int = SAMPLE_SIZE) -> tuple[int, int] | None:
    """Size after upstream ``Scale(size)``, or None when the frame is left unchanged."""
    if (width <= height and width == size) or (height <= width and height == size):
        return None
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_origin(width: int, height: int, size: int = SAMPLE_SIZE) -> tuple[int, int]:
    """Top-left corner of upstream ``CenterCrop(size)`` on a ``width`` x ``height`` image."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def _as_image(frame: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame if frame.mode == "RGB" else frame.convert("RGB")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ConfigError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    # frombuffer shares the array's memory: no copy before the resize reads it
    return Image.frombuffer("RGB", (w, h), frame, "raw", "RGB", 0, 1)


def _exact(frame: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """The compiled kernel when numba is installed, else Pillow: the same bytes either way."""
    jit = jit_kernel()
    if jit is not None:
        out: np.ndarray = jit.resize_crop(np.asarray(frame), size=size)
        return out
    return _exact_pillow(frame, size)


def _exact_pillow(frame: np.ndarray | Image.Image, size: int) -> np.ndarray:
    img = _as_image(frame)
    w, h = img.size
    target = scaled_size(w, h, size)
    if target is None:
        x1, y1 = crop_origin(w, h, size)
        return np.asarray(img)[y1:y1 + size, x1:x1 + size]
    w2, h2 = target
    x1, y1 = crop_origin(w2, h2, size)
    if w > h:  # landscape: horizontal pass, keep the crop's columns, vertical pass (see module doc)
        img = img.resize((w2, h), Image.Resampling.BILINEAR)
        return np.asarray(img.crop((x1, 0, x1 + size, h)).resize((size, h2), Image.Resampling.BILINEAR))
    return np.asarray(img.resize((w2, h2), Image.Resampling.BILINEAR))[y1:y1 + size, x1:x1 + size]


def _naive(frame: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """The reference's literal sequence (kept for tests and benchmarks)."""
    img = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    w, h = img.size
    target = scaled_size(w, h, size)
    if target is not None:
        img = img.resize(target, Image.Resampling.BILINEAR)
        w, h = target
    x1, y1 = crop_origin(w, h, size)
    return np.asarray(img.crop((x1, y1, x1 + size, y1 + size)))


def _fast(frame: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """OpenCV, close to but NOT bit-identical with Pillow's antialiased bilinear.

    An integer-factor area reduction (a box filter: the antialiasing) followed
    by a plain bilinear resize to the target. OpenCV's area mode at a
    non-integer factor (320x240 -> 149x112) takes its slow general path, ~3x
    the time of these two steps for a similar distance to the exact bytes
    (mean |diff| ~0.6 vs ~0.5 grey levels on UCF-like frames).
    """
    arr = fast_scaled(frame, size)
    h, w = arr.shape[:2]
    x1, y1 = crop_origin(w, h, size)
    return arr[y1:y1 + size, x1:x1 + size]


def fast_scaled(frame: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """The whole frame after :func:`_fast`'s resize (shorter side to ``size``), before the crop."""
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError("resize='fast' needs OpenCV: pip install 'e3d_stream[fast]'") from exc
    arr = np.asarray(frame)
    h, w = arr.shape[:2]
    target = scaled_size(w, h, size)
    if target is not None:
        factor = min(w, h) // size
        if factor >= 2:
            arr = cv2.resize(arr, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
        arr = cv2.resize(arr, target, interpolation=cv2.INTER_LINEAR)
    return arr


#: name -> (function, bit-exact with the reference?); "exact" and "fast" are the ``--resize`` choices,
#: "pillow" (exact through Pillow alone) and "naive" (the reference's literal sequence) serve tests and benchmarks.
RESIZERS: dict[str, tuple[Callable[[np.ndarray | Image.Image, int], np.ndarray], bool]] = {
    "exact": (_exact, True),
    "pillow": (_exact_pillow, True),
    "naive": (_naive, True),
    "fast": (_fast, False),
}
#: the ``--resize`` choices
PUBLIC_RESIZERS = ("exact", "fast")

_JIT: Any = None   # the kernel module once loaded; False when numba is missing or disabled


def jit_kernel() -> Any:
    """The compiled exact kernel module (:mod:`._resample_jit`), or None without numba.

    Imported on first use, so ``import e3d_stream`` never pays for numba. Set
    ``E3D_EXACT_KERNEL=pillow`` to force Pillow (for comparisons).
    """
    global _JIT
    if _JIT is None:
        _JIT = False
        if os.environ.get("E3D_EXACT_KERNEL", "auto") != "pillow":
            try:
                from . import _resample_jit
            except ImportError:
                pass
            else:
                if _resample_jit.available():
                    _JIT = _resample_jit
    return _JIT or None


def resize_kernel(resize: str) -> str:
    """What computes ``resize`` in this environment (for result.json): a kernel name."""
    check_resize(resize)
    if resize == "exact":
        jit = jit_kernel()
        return jit.KERNEL_NAME if jit is not None else "pillow-bilinear (split passes)"
    return {"pillow": "pillow-bilinear (split passes)", "naive": "pillow-bilinear (reference sequence)",
            "fast": "opencv area + bilinear (approximate)"}[resize]


def warm_up_worker(*, resize: str = "exact", **_producer_options: Any) -> None:
    """A decode worker's start-up: load the exact kernel before its first video (see :func:`warm_up`)."""
    warm_up(resize)


def warm_up(resize: str) -> float:
    """Compile or load the exact kernel before worker processes start; seconds spent (0 when not used).

    numba caches the machine code on disk (``cache=True``): after this call in
    the parent, each spawned worker loads it in a fraction of a second instead
    of compiling for seconds.
    """
    jit = jit_kernel() if resize == "exact" else None
    return jit.warm_up() if jit is not None else 0.0


def check_resize(name: str) -> None:
    """ConfigError unless ``name`` is a key of :data:`RESIZERS`."""
    if name not in RESIZERS:
        raise ConfigError(f"unknown resize {name!r}; choose one of {sorted(RESIZERS)}")


def preprocess_planar(rgb: np.ndarray | Image.Image, *, size: int = SAMPLE_SIZE, resize: str = "exact",
                      out: np.ndarray | None = None, geometry: Geometry | None = None) -> np.ndarray:
    """Like :func:`preprocess_frame`, but channel-planar (3, size, size): the layout of a clip's frame.

    With the compiled exact kernel the planes are written directly (no
    interleave, no transposing copy when stacking); otherwise the (H, W, 3)
    result is transposed into ``out``. A non-default ``geometry`` (upstream's
    ``--scale_in_test`` / ``--crop_position_in_test``) runs Pillow's literal sequence.
    """
    if out is None:
        out = np.empty((3, size, size), np.uint8)
    if geometry is not None and not geometry.is_default:
        if resize != "exact":
            raise ConfigError("scale_in_test / crop_position_in_test need resize='exact'")
        out[...] = geometry.apply(rgb, size).transpose(2, 0, 1)
        return out
    jit = jit_kernel() if resize == "exact" else None
    if jit is not None:
        jit.resize_crop_into(np.asarray(rgb), out)
        return out
    out[...] = preprocess_frame(rgb, size=size, resize=resize).transpose(2, 0, 1)
    return out


def preprocess_frame(rgb: np.ndarray | Image.Image, *, size: int = SAMPLE_SIZE, resize: str = "exact") -> np.ndarray:
    """Resize (shorter side to ``size``) and centre-crop one RGB frame -> (size, size, 3) uint8.

    ``rgb`` is an (H, W, 3) uint8 array or an RGB ``PIL.Image``. The result
    may be a view of a temporary buffer: copy it if it must outlive the next call.
    """
    check_resize(resize)
    return RESIZERS[resize][0](rgb, size)


def stack_clip(frames: Sequence[np.ndarray], *, out: np.ndarray | None = None, planar: bool = False) -> np.ndarray:
    """Stack ``T`` preprocessed frames into one (3, T, H, W) uint8 clip (C, T, H, W).

    Frames are (H, W, 3), or (3, H, W) with ``planar=True`` (from :func:`preprocess_planar`:
    then each frame is three plain plane copies).
    """
    t = len(frames)
    h, w = frames[0].shape[1:] if planar else frames[0].shape[:2]
    if out is None:
        out = np.empty((3, t, h, w), np.uint8)
    elif out.shape != (3, t, h, w) or out.dtype != np.uint8:
        raise ConfigError(f"out must be uint8 {(3, t, h, w)}, got {out.dtype} {out.shape}")
    if planar:
        for i, frame in enumerate(frames):
            out[:, i] = frame
        return out
    view = out.transpose(1, 2, 3, 0)  # (T, H, W, C) view of the CTHW buffer
    for i, frame in enumerate(frames):
        view[i] = frame
    return out


_MEAN = MEAN_RGB_F32.reshape(1, 3, 1, 1, 1)


def normalize_into(out: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """``out[:] = float32(clips) - float32(mean)`` per RGB channel, without temporaries.

    ``out``: float32 (n, 3, T, H, W); ``clips``: uint8 of the same shape. The
    subtraction is one float32 operation per element (the uint8 value is exactly
    representable), the same as the reference's ``tensor.sub_(mean)``.
    """
    if out.dtype != np.float32 or clips.dtype != np.uint8 or out.shape != clips.shape or out.ndim != 5:
        raise ConfigError(f"normalize_into needs float32 out and uint8 clips of one (n, 3, T, H, W) shape; "
                          f"got {out.dtype}{out.shape} and {clips.dtype}{clips.shape}")
    if out.shape[1] != 3:
        raise ConfigError(f"expected 3 channels in axis 1, got {out.shape[1]}")
    np.subtract(clips, _MEAN, out=out, dtype=np.float32)
    return out


def normalize_clip(clip: np.ndarray) -> np.ndarray:
    """One uint8 clip (3, T, H, W) -> float32 (1, 3, T, H, W) model input (allocates)."""
    clip = clip[None] if clip.ndim == 4 else clip
    return normalize_into(np.empty(clip.shape, np.float32), clip)


__all__ = ["CLIP_SHAPE", "PUBLIC_RESIZERS", "RESIZERS", "check_resize", "crop_origin", "jit_kernel",
           "normalize_clip", "normalize_into", "preprocess_frame", "preprocess_planar", "resize_kernel",
           "scaled_size", "stack_clip", "warm_up"]
